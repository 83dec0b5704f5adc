"""The ``perso`` command line: everyday tasks against the Perso platform (or the mock server).

    perso settings                          every settings list, as tables
    perso templates                         the session templates
    perso session create (--template ID | --prompt ID --model-style NAME [...])
    perso session info SESSION_ID
    perso chat [--template ID | --session-id SID]      interactive chat with the avatar
    perso tts TEXT -o out.wav [--resample]
    perso stt FILE
    perso stf FILE [--message TEXT]         the avatar lip-syncs to an audio file
    perso record --seconds N -o avatar.mp4
    perso mock [--port N]                   run the mock Perso server
    perso contracts (record --out DIR | verify [--consumer] DIR)

``--json`` (before or after the command) prints machine-readable output; ``--api-server URL``
(default ``$PERSO_API_SERVER``, then the platform) picks the server. The API key comes from
``$PERSO_INTERACTIVE_API_KEY`` only, never from a flag, so it stays out of shell history and
process lists. Commands that need a live session (chat, tts, stt, stf, record) create a session
id from ``--template`` (default: the first WebRTC template), or use ``--session-id``.

Errors print one line to stderr -- ``error: <Class> (<status> <code>) [<field>]: <detail>`` --
and exit 1 (2 for bad usage, 130 after Ctrl-C); never a traceback (``PERSO_DEBUG=1`` shows it).

On a terminal the output is drawn with ``rich``: tables, a live progress bar (bytes, rate, ETA)
on stderr for ``stf`` and ``record``, and a ``chat`` view where the reply streams in place above
a status line with the avatar's state. When the output is not a terminal, or ``$NO_COLOR`` is
set, it is plain text without any escape code: tables with an ASCII rule, the final progress
once, chat states as ``[avatar: ...]`` lines. ``--json`` output is the same either way.

Only the commands that open a live session import the WebRTC stack (aiortc); ``settings``,
``templates`` and ``session`` are plain REST calls. ``rich`` is imported by this module only,
when it prints: ``import perso_sync`` never loads it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from perso_sync.errors import (
    ApiError,
    InvalidInputError,
    LLMError,
    PersoError,
    STTError,
    TTSError,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.progress import Progress, ProgressColumn
    from rich.table import Table

    from perso_sync.client import PersoClient
    from perso_sync.llm import ChatTool
    from perso_sync.models import ChatState, SessionParams
    from perso_sync.session import Session

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Streams",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Seconds ``perso chat`` waits for the avatar to finish speaking a reply before prompting again.
CHAT_SPEECH_TIMEOUT = 120.0
#: Seconds to wait for the "idle" state callback once the session reports idle (ordering only).
_STATE_ECHO_TIMEOUT = 2.0

# settings list -> the columns of its table (the JSON output has every field)
_SETTINGS_COLUMNS: dict[str, tuple[str, ...]] = {
    "llms": ("name", "service"),
    "tts_types": ("name", "service", "voice"),
    "stt_types": ("name", "service"),
    "model_styles": ("name", "model", "style", "platform_type"),
    "prompts": ("prompt_id", "name"),
    "documents": ("document_id", "title", "processed"),
    "background_images": ("backgroundimage_id", "title"),
    "mcp_servers": ("mcpserver_id", "name", "url"),
    "text_normalizations": ("textnormalizationconfig_id", "name"),
}


# ---------------------------------------------------------------------------------------------
# output helpers


class Streams(NamedTuple):
    """Where a command reads and writes (the terminal, or test buffers)."""

    out: TextIO
    err: TextIO
    inp: TextIO


def _plain(value: Any) -> Any:
    """A model (or a list of them) as JSON-able data, through the one converter."""
    from perso_sync._converter import converter

    return converter.unstructure(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


#: Width of plain output (a pipe, a file): lines are never wrapped or cut for the reader.
_PLAIN_WIDTH = 10_000


def _plain_output(stream: TextIO) -> bool:
    """True when ``stream`` gets plain text: it is not a terminal, or ``$NO_COLOR`` is set.

    Plain means no escape code at all (no colour, no bold, no cursor movement): progress is
    printed once when done, chat states as lines.
    """
    if os.environ.get("NO_COLOR"):  # no-color.org: set and not empty
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return True


def _console(stream: TextIO) -> Console:
    """A rich console on ``stream`` that never reads markup or emoji codes in the data it shows
    (a prompt named ``[bold]x`` or ``:smile:`` prints as is) and adds no highlighting."""
    console_type = _console_class()
    if not _plain_output(stream):
        return console_type(file=stream, markup=False, emoji=False, highlight=False)
    try:
        is_tty = stream.isatty()
    except (AttributeError, ValueError, OSError):
        is_tty = False
    return console_type(
        file=stream,
        force_terminal=False,
        color_system=None,
        width=None if is_tty else _PLAIN_WIDTH,  # NO_COLOR on a terminal keeps its width
        markup=False,
        emoji=False,
        highlight=False,
    )


@functools.cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class CliConsole(Console):
        def on_broken_pipe(self) -> None:
            # rich exits with status 1 here; the reader going away (perso settings | head) is
            # not an error of ours, and main() handles it the same way for every command.
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the reader closed the pipe")

    return CliConsole


def _print_block(console: Console, renderable: RenderableType) -> None:
    """Print a table (or grid); plain output drops the padding at the end of its lines."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    lines = captured.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))
    console.file.flush()


def _table(console: Console, *columns: str) -> Table:
    """A table with a header rule and no frame (ASCII when plain, so pipes and greps see text)."""
    from rich import box
    from rich.table import Column, Table

    frame = box.SIMPLE_HEAD
    if not console.is_terminal:
        frame = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)
    # Ids are copied from here: the first column never wraps, no cell is cut with an ellipsis.
    heads = [
        Column(name, no_wrap=index == 0, overflow="fold") for index, name in enumerate(columns)
    ]
    return Table(
        *heads,
        box=frame,
        show_edge=False,
        pad_edge=False,
        header_style="bold cyan",
        highlight=False,
    )


def _print_table(
    console: Console, title: str | None, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """``rows`` under ``title``; an empty list says ``(none)`` instead of a bare header."""
    from rich.text import Text

    if title is not None:
        console.print(Text(title, style="bold"))
    if not rows:
        console.print(Text("(none)", style="dim"))
        return
    table = _table(console, *columns)
    for row in rows:
        table.add_row(*(Text(_cell(row.get(column))) for column in columns))
    _print_block(console, table)


def _print_error(stream: TextIO, message: str) -> None:
    """One line on ``stream``: ``error: <message>`` (the prefix in red on a terminal)."""
    from rich.text import Text

    line = Text.assemble(("error:", "bold red"), " ", message)
    _console(stream).print(line, soft_wrap=True)  # soft_wrap: one line, whatever its length


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_error(exc: BaseException) -> str:
    """One line for a user: class, status and detail (never a traceback, never the key).

    ``ApiError (401 authentication_failed): Invalid API key.``, ``DoesNotExistError (400
    does_not_exist) [prompt]: ...``; wrappers (``LLMError``, ``STTError``, ``TTSError``) show the
    status of the ``ApiError`` they carry.
    """
    name = type(exc).__name__
    inner: BaseException | None = exc
    if isinstance(exc, (LLMError, STTError, TTSError)):
        inner = exc.underlying_error
    if isinstance(inner, ApiError):
        attr = f" [{inner.attr}]" if inner.attr else ""
        return _one_line(f"{name} ({inner.error_code} {inner.code}){attr}: {inner.detail}")
    if inner is not exc:
        return _one_line(f"{name}: {type(inner).__name__}: {inner}")
    return _one_line(f"{name}: {exc}")


def _print_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, ensure_ascii=False, default=str)
    out.write("\n")


# ---------------------------------------------------------------------------------------------
# REST commands (no session, no aiortc)


def _client(args: argparse.Namespace) -> PersoClient:
    from perso_sync.client import PersoClient

    return PersoClient(api_server=args.api_server)


def cmd_settings(args: argparse.Namespace, io: Streams) -> int:
    """``perso settings``: every settings list of the account."""
    out = io.out
    with _client(args) as client:
        data = _plain(client.get_all_settings())
    if args.json:
        _print_json(data, out)
        return EXIT_OK
    console = _console(out)
    for number, (key, columns) in enumerate(_SETTINGS_COLUMNS.items()):
        if number:
            console.print()
        _print_table(console, key.replace("_", " "), columns, data.get(key) or [])
    return EXIT_OK


def cmd_templates(args: argparse.Namespace, io: Streams) -> int:
    """``perso templates``: the session templates (Form B of session creation)."""
    out = io.out
    with _client(args) as client:
        templates = [_plain(t) for t in client.get_session_templates()]
    if args.json:
        _print_json(templates, out)
        return EXIT_OK
    rows = []
    for template in templates:
        style = template.get("model_style") or {}
        rows.append(
            {
                "sessiontemplate_id": template.get("sessiontemplate_id"),
                "name": template.get("name"),
                "model_style": style.get("name"),
                "platform": style.get("platform_type"),
                "capability": ",".join(c.get("name", "") for c in template.get("capability") or []),
            }
        )
    columns = ("sessiontemplate_id", "name", "model_style", "platform", "capability")
    _print_table(_console(out), None, columns, rows)
    return EXIT_OK


def _params_from_args(args: argparse.Namespace) -> SessionParams:
    from perso_sync.models import SessionParams

    options: dict[str, Any] = {}
    for field, value in (
        ("llm_type", args.llm),
        ("tts_type", args.tts),
        ("stt_type", args.stt),
        ("document", args.document),
        ("background_image", args.background_image),
        ("padding_left", args.padding_left),
        ("padding_top", args.padding_top),
        ("padding_height", args.padding_height),
    ):
        if value is not None:
            options[field] = value
    if args.mcp_server:
        options["mcp_servers"] = list(args.mcp_server)
    return SessionParams(
        using_stf_webrtc=not args.no_stf,
        model_style=args.model_style,
        prompt=args.prompt,
        **options,
    )


def _create_session_id(client: PersoClient, args: argparse.Namespace) -> str:
    """A session id: --session-id as is, else Form B (--template), else Form A (--prompt and
    --model-style), else Form B with the account's first WebRTC template."""
    if getattr(args, "session_id", None):
        return str(args.session_id)
    form_a = getattr(args, "prompt", None) or getattr(args, "model_style", None)
    if getattr(args, "template", None):
        if form_a:
            raise InvalidInputError("--template and --prompt/--model-style are alternatives")
        return client.create_session_id(session_template_id=args.template)
    if form_a:
        if not (args.prompt and args.model_style):
            raise InvalidInputError("--prompt and --model-style go together")
        return client.create_session_id(params=_params_from_args(args))
    for template in client.get_session_templates():
        if template.model_style.platform_type in (None, "webrtc"):
            return client.create_session_id(session_template_id=template.sessiontemplate_id)
    raise InvalidInputError(
        "this account has no WebRTC session template: pass --template ID or --session-id SID"
    )


def cmd_session_create(args: argparse.Namespace, io: Streams) -> int:
    """``perso session create``: a new session id."""
    out = io.out
    with _client(args) as client:
        session_id = _create_session_id(client, args)
    if args.json:
        _print_json({"session_id": session_id}, out)
    else:
        out.write(session_id + "\n")
    return EXIT_OK


def cmd_session_info(args: argparse.Namespace, io: Streams) -> int:
    """``perso session info SID``: a session's status and settings."""
    out = io.out
    with _client(args) as client:
        info = _plain(client.get_session_info(args.session_id))
    if args.json:
        _print_json(info, out)
        return EXIT_OK
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key in ("session_id", "status", "termination_reason", "duration_sec", "created_at"):
        grid.add_row(key, Text(_cell(info.get(key))))
    for key in ("prompt", "llm_type", "tts_type", "stt_type", "model_style"):
        value = info.get(key)
        name = value.get("name") if isinstance(value, dict) else value
        grid.add_row(key, Text(_cell(name)))
    caps = ",".join(c.get("name", "") for c in info.get("capability") or [])
    grid.add_row("capability", Text(caps or "-"))
    _print_block(_console(out), grid)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# session commands (these open a live session: WebRTC when the session has an avatar)


@contextlib.contextmanager
def _open_session(
    args: argparse.Namespace,
    *,
    width: int = 320,
    height: int = 240,
    client_tools: Sequence[ChatTool] = (),
    receive_video: bool = False,
) -> Iterator[Session]:
    # Video is decoded only when a command uses it (record): decoding is most of the CPU.
    with _client(args) as client:
        session_id = _create_session_id(client, args)
        session = client.create_session(
            session_id,
            width=width,
            height=height,
            client_tools=client_tools,
            receive_video=receive_video,
        )
        with session:
            yield session


def cmd_tts(args: argparse.Namespace, io: Streams) -> int:
    """``perso tts TEXT -o FILE``: synthesize speech to a file."""
    from perso_sync._emoji import remove_emoji
    from perso_sync.audio import get_wav_sample_rate, sniff_audio_format

    out = io.out
    output = Path(args.output)
    if not remove_emoji(args.text).strip():  # refused before a session is made for nothing
        raise InvalidInputError("nothing to say: the text is empty once emoji are removed")
    with _open_session(args) as session:
        audio = session.process_tts(
            args.text, resample=args.resample, locale=args.locale, output_format=args.format
        )
    if audio is None:
        raise InvalidInputError("nothing to say: the text is empty once emoji are removed")
    output.write_bytes(audio)
    kind = sniff_audio_format(audio)
    rate = get_wav_sample_rate(audio) if kind == "wav" else None
    if args.json:
        _print_json(
            {"output": str(output), "bytes": len(audio), "format": kind, "sample_rate": rate}, out
        )
    else:
        rate_text = f", {rate} Hz" if rate else ""
        out.write(f"wrote {output} ({len(audio)} bytes {kind}{rate_text})\n")
    return EXIT_OK


def cmd_stt(args: argparse.Namespace, io: Streams) -> int:
    """``perso stt FILE``: transcribe an audio file."""
    from perso_sync.audio import read_audio_input

    out = io.out
    audio = read_audio_input(args.file)  # a missing file fails before any session is made
    with _open_session(args) as session:
        result = session.transcribe_audio_detailed(audio, language=args.language)
    if args.json:
        _print_json(_plain(result), out)
    else:
        out.write(result.text + "\n")
    return EXIT_OK


@contextlib.contextmanager
def _progress(stream: TextIO, *columns: ProgressColumn) -> Iterator[Progress]:
    """A rich progress display on ``stream``: a live bar on a terminal; when plain, no bar and
    the final state printed once when it stops (so a log shows the size, rate and time). If the
    work fails, the display goes away and the error line says why."""
    from rich.progress import BarColumn, Progress, TextColumn

    console = _console(stream)
    live = console.is_terminal
    bar: tuple[ProgressColumn, ...] = (BarColumn(),) if live else ()
    with Progress(
        TextColumn("{task.description}"), *bar, *columns, console=console, disable=not live
    ) as progress:
        try:
            yield progress
        except BaseException:
            progress.live.transient = True
            raise
    if not live:
        _print_block(console, progress.make_tasks_table(progress.tasks))


def cmd_stf(args: argparse.Namespace, io: Streams) -> int:
    """``perso stf FILE``: upload an audio file; the avatar lip-syncs to it."""
    from rich.progress import DownloadColumn, TextColumn, TimeRemainingColumn

    out = io.out
    if args.wait < 0:
        raise InvalidInputError("--wait must be >= 0")
    path = Path(args.file)
    if not path.is_file():
        raise InvalidInputError(f"no such file: {path}")
    with _open_session(args) as session:
        if args.json:
            file_ref = session.process_stf(path, message=args.message)
        else:
            # On stderr, so stdout stays one parseable result.
            with _progress(
                io.err,
                DownloadColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(elapsed_when_finished=True),
            ) as progress:
                task = progress.add_task(
                    f"uploading {path.name}", total=path.stat().st_size, rate=_rate(0, 0)
                )
                start = time.monotonic()

                def show(sent: int, total: int | None) -> None:
                    rate = _rate(sent, time.monotonic() - start)
                    progress.update(task, completed=sent, total=total, rate=rate)

                file_ref = session.process_stf(path, message=args.message, progress=show)
        spoken = False
        if args.wait:
            if args.json:
                spoken = session.wait_until_idle(timeout=args.wait)
            else:
                # A spinner while the avatar speaks (nothing when plain: it would only vanish).
                with _console(io.err).status("the avatar is speaking the file", spinner="dots"):
                    spoken = session.wait_until_idle(timeout=args.wait)
    if args.json:
        _print_json({"file_ref": file_ref, "spoken": spoken}, out)
    else:
        out.write(f"file_ref {file_ref}\n")
    return EXIT_OK


#: Seconds between two updates of ``perso record``'s progress (the file's size and rate).
_RECORD_TICK = 0.25


def cmd_record(args: argparse.Namespace, io: Streams) -> int:
    """``perso record --seconds N -o FILE``: record the avatar's audio and video."""
    from rich.filesize import decimal
    from rich.progress import TextColumn, TimeRemainingColumn

    out = io.out
    if args.seconds <= 0:
        raise InvalidInputError("--seconds must be positive")
    output = Path(args.output)
    progress: contextlib.AbstractContextManager[Progress | None] = (
        contextlib.nullcontext(None)
        if args.json
        else _progress(
            io.err,
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TextColumn("{task.fields[size]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(elapsed_when_finished=True),
        )
    )
    with (
        _open_session(
            args, width=args.width, height=args.height, receive_video=output.suffix != ".wav"
        ) as session,
        progress as bar,
    ):
        task = None
        if bar is not None:
            task = bar.add_task(
                f"recording {output.name}", total=args.seconds, size="0 bytes", rate=_rate(0, 0)
            )

        def show(elapsed: float) -> None:
            # The size on disk: the muxer buffers, so it grows in steps, and is whole once
            # the recording stopped (the last update).
            if bar is not None and task is not None:
                written = _file_size(output)
                bar.update(
                    task, completed=elapsed, size=decimal(written), rate=_rate(written, elapsed)
                )

        with session.record(output):
            if args.say:
                session.process_ttstf(args.say)
            # A duration, not synchronisation: the recording runs on the runtime meanwhile;
            # the ticks only refresh what is shown.
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < args.seconds:
                threading.Event().wait(min(_RECORD_TICK, args.seconds - elapsed))
                show(min(time.monotonic() - start, args.seconds))
        show(args.seconds)
    size = output.stat().st_size
    if args.json:
        _print_json({"output": str(output), "bytes": size}, out)
    else:
        out.write(f"wrote {output} ({size} bytes)\n")
    return EXIT_OK


def _rate(size: int, seconds: float) -> str:
    """The average rate of a transfer so far, e.g. ``1.2 MB/s`` (``? B/s`` before any time)."""
    from rich.filesize import decimal

    return f"{decimal(int(size / seconds))}/s" if seconds > 0 else "? B/s"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # not created yet
        return 0


# ---------------------------------------------------------------------------------------------
# chat


def _current_time(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


class _ChatView:
    """How ``perso chat`` shows a conversation. The main thread writes the turn (the streamed
    reply, tool calls, notes); the session's callback thread reports the avatar's states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._states: frozenset[ChatState] = frozenset()

    def line(self, text: str, style: str = "") -> None:
        """A line of the conversation (the session banner, ...)."""
        raise NotImplementedError

    def prompt(self) -> None:
        """Invite the user to type (the cursor stays on the line)."""
        raise NotImplementedError

    def read_line(self, inp: TextIO) -> str:
        """The user's next line ("" at the end of the input)."""
        return inp.readline()

    def begin_turn(self) -> None:
        """A turn starts: the reply and the avatar's states are shown from now on."""

    def end_turn(self) -> None:
        """The turn is over (done, failed or interrupted)."""
        self.end_reply()

    def reply(self, text: str) -> None:
        """More text of the avatar's reply (appended to what is shown)."""
        raise NotImplementedError

    def end_reply(self) -> None:
        """The reply (or the part of it before a tool call) is complete."""
        raise NotImplementedError

    def note(self, text: str, style: str = "dim") -> None:
        """An indented ``[text]`` line: a tool call, its result, an error, an interruption."""
        raise NotImplementedError

    def on_states(self, states: frozenset[ChatState]) -> None:
        with self._lock:
            self._states = states
            self._show_states(states)
            self._idle.notify_all()

    def _show_states(self, states: frozenset[ChatState]) -> None:
        """Show ``states`` (called with the lock held)."""

    def wait_shown_idle(self, timeout: float) -> None:
        """Wait until the idle state has been shown, so it never lands after the prompt."""
        with self._idle:
            self._idle.wait_for(lambda: not self._states, timeout=timeout)


def _state_names(states: frozenset[ChatState]) -> str:
    """``LLM``, ``analyzing``, ``speaking``, ... (``idle`` when none)."""
    names = (s.value if s.value in ("LLM", "TTS") else s.value.lower() for s in states)
    return ", ".join(sorted(names)) or "idle"


class _PlainChatView(_ChatView):
    """Plain text, for a pipe or ``NO_COLOR``: the reply is appended as it streams in, on an
    ``avatar>`` line, and every change of the avatar's state is a ``[avatar: ...]`` line (one
    arriving while a reply line is open waits for its end: lines are never cut)."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out = out
        # guarded by _lock, like every write
        self._reply_open = False
        self._held_states: list[str] = []

    def _write(self, text: str) -> None:
        with self._lock:
            self._write_locked(text)

    def _write_locked(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def line(self, text: str, style: str = "") -> None:
        self._write(text + "\n")

    def prompt(self) -> None:
        self._write("you> ")

    def reply(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            if not self._reply_open:
                self._reply_open = True
                text = "avatar> " + text
            self._write_locked(text)

    def end_reply(self) -> None:
        with self._lock:
            if self._reply_open:
                self._reply_open = False
                self._write_locked("\n" + "".join(self._held_states))
                self._held_states.clear()

    def note(self, text: str, style: str = "dim") -> None:
        self.end_reply()
        self._write(f"  [{text}]\n")

    def _show_states(self, states: frozenset[ChatState]) -> None:
        line = f"  [avatar: {_state_names(states)}]\n"
        if self._reply_open:
            self._held_states.append(line)
        else:
            self._write_locked(line)


class _TypeAhead:
    """The terminal the user types on (if ``inp`` is one, on a POSIX system): its echo can be
    turned off and on again, and then it tells whether lines were typed while it was off."""

    def __init__(self, inp: TextIO) -> None:
        self._fd: int | None = None
        self._saved: list[Any] | None = None
        self._unechoed = False
        try:
            import termios  # noqa: F401 (POSIX only: elsewhere, nothing is done)

            fd = inp.fileno()
            if os.isatty(fd):
                self._fd = fd
        except (ImportError, AttributeError, ValueError, OSError):
            pass

    def echo(self, on: bool) -> None:
        if self._fd is None:
            return
        import termios

        try:
            if not on and self._saved is None:
                self._saved = termios.tcgetattr(self._fd)
                quiet = termios.tcgetattr(self._fd)
                quiet[3] &= ~termios.ECHO  # lflag; line editing and Ctrl-C stay as they are
                termios.tcsetattr(self._fd, termios.TCSANOW, quiet)
            elif on and self._saved is not None:
                self._unechoed = self._has_lines()
                termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
                self._saved = None
        except termios.error:
            self._fd = None  # not a terminal we may change after all

    def take_unechoed(self) -> bool:
        """True (once) when whole lines were typed while the echo was off."""
        unechoed, self._unechoed = self._unechoed, False
        return unechoed

    def _has_lines(self) -> bool:
        """True when a whole line was typed and waits (the terminal counts whole lines)."""
        if self._fd is None:
            return False
        import fcntl
        import struct
        import termios

        try:
            waiting = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        return bool(struct.unpack("i", waiting)[0])


#: Repaints per second of the chat's live region (the spinner, the streamed reply, the state).
_CHAT_FPS = 12
#: Seconds the end of a chat turn waits for the painter to print what is left.
_PAINTER_JOIN_TIMEOUT = 5.0


class _LiveChatView(_ChatView):
    """A terminal: during a turn, a live region at the bottom shows the reply as it streams in
    (rewritten in place) above one status line with the avatar's state; finished replies, tool
    calls and notes scroll above it. Between turns only the conversation stays on screen.

    During a turn one painter thread of ours does every write to the terminal: rich moves the
    cursor up over the region it drew last, so a second writer (rich's own refresh thread, or
    the main thread, which Ctrl-C can interrupt in the middle of a write) would leave a copy of
    the region behind. The main thread only hands text over."""

    def __init__(self, console: Console, inp: TextIO) -> None:
        from rich.spinner import Spinner

        super().__init__()
        self._console = console
        self._keyboard = _TypeAhead(inp)
        self._streaming = ""
        self._above: list[RenderableType] = []  # to print above the region (guarded by _lock)
        self._spinner = Spinner("dots", style="cyan")
        self._wake = threading.Event()
        self._ending = False
        self._painter: threading.Thread | None = None

    def line(self, text: str, style: str = "") -> None:
        from rich.text import Text

        self._emit(Text(text, style=style))

    def prompt(self) -> None:
        from rich.text import Text

        self._console.print(Text("you> ", style="bold green"), end="")
        self._console.file.flush()

    def read_line(self, inp: TextIO) -> str:
        typed_ahead = self._keyboard.take_unechoed()
        line = inp.readline()
        if typed_ahead and line:
            # Typed during the turn, while the terminal did not echo it: show it after the
            # prompt, as if typed now.
            self._console.print(line.rstrip("\r\n"), style="bold")
        return line

    def _emit(self, renderable: RenderableType) -> None:
        with self._lock:
            if self._painter is not None:
                self._above.append(renderable)
                self._wake.set()
                return
        self._console.print(renderable)

    def begin_turn(self) -> None:
        from rich.live import Live

        # transient: the status line goes away with the turn; what was said is printed above.
        live = Live(
            self,
            console=self._console,
            transient=True,
            auto_refresh=False,
            vertical_overflow="visible",
        )
        # Keys typed during the turn are kept for the next prompt but not echoed: the echo
        # would land inside the live region and break it.
        self._keyboard.echo(False)
        with self._lock:
            self._ending = False
            self._painter = threading.Thread(
                target=self._paint, args=(live,), name="perso-chat-view", daemon=True
            )
        self._painter.start()

    def _paint(self, live: Live) -> None:
        live.start(refresh=True)
        try:
            while True:
                self._wake.wait(1 / _CHAT_FPS)  # the spinner turns even when nothing happens
                self._wake.clear()
                with self._lock:
                    above, self._above = self._above, []
                    ending = self._ending
                for renderable in above:
                    self._console.print(renderable)
                if ending:
                    return
                live.refresh()
        finally:
            live.stop()

    def end_turn(self) -> None:
        try:
            self.end_reply()
            with self._lock:
                painter, self._ending = self._painter, True
            self._wake.set()
            if painter is not None:
                painter.join(timeout=_PAINTER_JOIN_TIMEOUT)
            with self._lock:
                self._painter = None
        finally:
            self._keyboard.echo(True)

    def reply(self, text: str) -> None:
        with self._lock:
            self._streaming += text
        self._wake.set()  # shown at once, not at the next tick

    def end_reply(self) -> None:
        with self._lock:
            text, self._streaming = self._streaming, ""
        if text:
            self._emit(self._reply_text(text))

    def note(self, text: str, style: str = "dim") -> None:
        from rich.text import Text

        self.end_reply()
        self._emit(Text(f"  [{text}]", style=style))

    def _show_states(self, states: frozenset[ChatState]) -> None:
        self._wake.set()

    @staticmethod
    def _reply_text(text: str) -> RenderableType:
        from rich.text import Text

        return Text.assemble(("avatar> ", "bold magenta"), text)

    def __rich__(self) -> RenderableType:
        """What the live region shows now (rich calls it on every repaint)."""
        from rich.console import Group
        from rich.text import Text

        with self._lock:
            streaming, states = self._streaming, self._states
        status: RenderableType
        if states:
            self._spinner.update(text=Text.assemble("avatar: ", (_state_names(states), "bold")))
            status = self._spinner
        else:
            status = Text("● avatar: idle", style="dim")
        if streaming:
            return Group(self._reply_text(streaming), status)
        return status


class _StreamedText:
    """Turns the cumulative ``message`` of streamed chunks into the part not shown yet. A message
    that does not continue the shown text (a new message after tool calls) starts afresh."""

    def __init__(self) -> None:
        self._shown = ""

    def new_part(self, message: str) -> str:
        if not message.startswith(self._shown):
            self._shown = ""
        part = message[len(self._shown) :]
        self._shown = message
        return part


def _chat_turn(session: Session, message: str, view: _ChatView, speak: bool) -> None:
    """One turn: stream the reply (with tool calls), then let the avatar say it."""
    from perso_sync.llm import ErrorChunk, MessageChunk, ToolCallChunk, ToolResultChunk

    streamed = _StreamedText()
    finished: list[str] = []
    with session.process_llm(message) as stream:
        for chunk in stream:
            if isinstance(chunk, MessageChunk):
                view.reply(streamed.new_part(chunk.message))
                if chunk.finish:
                    finished.append(chunk.message)
                    view.end_reply()
            elif isinstance(chunk, ToolCallChunk):
                calls = [
                    f"{call['function']['name']}({call['function'].get('arguments') or ''})"
                    for call in chunk.tool_calls
                ]
                view.note(f"tool call: {', '.join(calls)}")
            elif isinstance(chunk, ToolResultChunk):
                result = json.dumps(chunk.result, ensure_ascii=False, default=str)
                view.note(f"tool result: {result}")
            elif isinstance(chunk, ErrorChunk):
                view.note(f"error: {describe_error(chunk.error)}", style="bold red")
                return
    view.end_reply()
    reply = " ".join(text.strip() for text in finished if text.strip())
    if speak and reply:
        # The reference's pattern for a streamed turn: speak the finished text (processTTSTF).
        session.process_ttstf(reply)
        session.wait_until_idle(timeout=CHAT_SPEECH_TIMEOUT)


def cmd_chat(args: argparse.Namespace, io: Streams) -> int:
    """``perso chat``: type a line, see the reply stream in, hear (well, see the states of) the
    avatar saying it. Ctrl-C interrupts the turn (the stream and the avatar), Ctrl-D ends."""
    from perso_sync.llm import ChatTool

    tools = [
        ChatTool(
            name="get_current_time",
            description="The current date and time on the user's machine",
            parameters={"type": "object", "properties": {}},
            call=_current_time,
        )
    ]
    plain = _plain_output(io.out)
    view: _ChatView = _PlainChatView(io.out) if plain else _LiveChatView(_console(io.out), io.inp)
    with _open_session(args, client_tools=tools) as session:
        speak = session.uses_webrtc
        session.subscribe_chat_states(view.on_states)
        view.line(
            f"session {session.session_id} ({'avatar' if speak else 'no avatar'}): "
            "type a message; Ctrl-C interrupts a reply, Ctrl-D ends",
            style="dim",
        )
        while True:
            view.prompt()
            try:
                line = view.read_line(io.inp)
            except KeyboardInterrupt:
                view.line("")
                view.note("Ctrl-D ends the session")
                continue
            if not line:
                view.line("")
                break
            if not line.strip():
                continue
            view.begin_turn()
            try:
                _chat_turn(session, line.strip(), view, speak)
            except KeyboardInterrupt:
                # Said first: clear_buffer's idle state comes from another thread and must show
                # after it, as the consequence it is.
                view.note("interrupted", style="yellow")
                with contextlib.suppress(PersoError):
                    session.clear_buffer()  # the avatar stops too, not only the stream
            except (LLMError, STTError, TTSError, ApiError) as exc:
                view.note(f"error: {describe_error(exc)}", style="bold red")
            finally:
                # The state callback runs on another thread: let the idle state (after the
                # LLM, or the speech) be shown before the next prompt, never after it.
                view.wait_shown_idle(_STATE_ECHO_TIMEOUT)
                view.end_turn()
        view.line(f"session {session.session_id} closed", style="dim")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# mock


def cmd_mock(args: argparse.Namespace, io: Streams) -> int:
    """``perso mock``: run the mock Perso server until Ctrl-C (it prints its URL itself)."""
    try:
        from mock_server.__main__ import main as mock_main
    except ImportError as exc:  # the mock ships with the package; its extra may be missing
        raise InvalidInputError(
            f"the mock server needs the 'mock' extra (pip install 'perso_sync[mock]'): {exc}"
        ) from None
    argv = ["--host", args.host, "--port", str(args.port), "--api-key", args.api_key]
    if args.catalog:
        argv += ["--catalog", args.catalog]
    if args.allow_remote:
        argv.append("--allow-remote")
    return int(mock_main(argv) or 0)


def cmd_contracts(args: argparse.Namespace, io: Streams) -> int:
    """``perso contracts record|verify ...``: the contract tool (``python -m
    perso_sync.contracts``); ``--api-server`` of ``perso`` applies to ``record``."""
    from perso_sync.contracts.__main__ import main as contracts_main

    argv = list(args.contracts_args)
    if argv[:1] == ["record"] and "--api-server" not in argv and args.api_server:
        argv += ["--api-server", args.api_server]
    return int(contracts_main(argv))


# ---------------------------------------------------------------------------------------------
# parser


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the command is not reset by the command's own default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-server",
        default=argparse.SUPPRESS,
        help="API server URL (default: $PERSO_API_SERVER, then https://platform.perso.ai)",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


def _add_session_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--session-id", help="use this existing (not yet started) session id")
    group.add_argument(
        "--template", help="create the session id from this template (default: first WebRTC one)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``perso`` argument parser."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="perso",
        parents=[common],
        description="Perso Interactive from the command line. "
        "The API key comes from $PERSO_INTERACTIVE_API_KEY.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common], **kwargs)

    p = command("settings", "list every setting (LLMs, TTS, STT, prompts, ...)")
    p.set_defaults(func=cmd_settings)
    p = command("templates", "list the session templates")
    p.set_defaults(func=cmd_templates)

    session = command("session", "create a session id, or show a session")
    actions = session.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    p = actions.add_parser("create", help="create a session id", parents=[common])
    p.add_argument("--template", help="session template id (Form B)")
    p.add_argument("--prompt", help="prompt id (Form A, with --model-style)")
    p.add_argument("--model-style", help="model style name (Form A)")
    p.add_argument("--llm", help="LLM type name")
    p.add_argument("--tts", help="TTS type name")
    p.add_argument("--stt", help="STT type name")
    p.add_argument("--document", help="document id")
    p.add_argument("--background-image", help="background image id")
    p.add_argument("--mcp-server", action="append", help="MCP server id (repeatable)")
    p.add_argument("--padding-left", type=float)
    p.add_argument("--padding-top", type=float)
    p.add_argument("--padding-height", type=float)
    p.add_argument("--no-stf", action="store_true", help="no avatar over WebRTC (REST only)")
    p.set_defaults(func=cmd_session_create, session_id=None)
    p = actions.add_parser("info", help="show a session's status", parents=[common])
    p.add_argument("session_id")
    p.set_defaults(func=cmd_session_info)

    p = command("chat", "chat with the avatar (Ctrl-C interrupts a reply, Ctrl-D ends)")
    _add_session_source(p)
    p.set_defaults(func=cmd_chat)

    p = command("tts", "synthesize speech to a file")
    p.add_argument("text")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("--resample", action="store_true", help="16 kHz mono 16-bit WAV")
    p.add_argument("--format", choices=("wav", "mp3"), help="ask the server for this format")
    p.add_argument("--locale", help="e.g. ko, en")
    _add_session_source(p)
    p.set_defaults(func=cmd_tts)

    p = command("stt", "transcribe an audio file (WAV, or anything PyAV reads)")
    p.add_argument("file")
    p.add_argument("--language", help="e.g. ko, en (default: detected)")
    _add_session_source(p)
    p.set_defaults(func=cmd_stt)

    p = command("stf", "make the avatar lip-sync to an audio file (shows a progress bar)")
    p.add_argument("file")
    p.add_argument("--message", default="", help="the text spoken in the file, if known")
    p.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the avatar (0: do not)"
    )
    _add_session_source(p)
    p.set_defaults(func=cmd_stf)

    p = command("record", "record the avatar's audio and video to a file")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("-o", "--output", required=True, help=".mp4/.mkv (audio+video) or .wav")
    p.add_argument("--say", help="make the avatar say this while recording")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    _add_session_source(p)
    p.set_defaults(func=cmd_record)

    p = command("mock", "run the mock Perso server (until Ctrl-C)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--api-key", default="test-key", help="the key the mock accepts")
    p.add_argument("--catalog", help="a JSON catalog file replacing the seeded data")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host beyond loopback (its control API has no authentication)",
    )
    p.set_defaults(func=cmd_mock)

    p = command(
        "contracts",
        "record contracts from a server, or verify contract files "
        "(record --out DIR | verify [--consumer] DIR)",
    )
    p.add_argument("contracts_args", nargs=argparse.REMAINDER, metavar="ARGS")
    p.set_defaults(func=cmd_contracts)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    inp: TextIO | None = None,
) -> int:
    """Entry point of the ``perso`` console script; returns the exit code.

    ``out``/``err``/``inp`` default to ``sys.stdout``/``sys.stderr``/``sys.stdin``.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    inp = inp if inp is not None else sys.stdin
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.api_server = getattr(args, "api_server", None) or os.environ.get("PERSO_API_SERVER")
    try:
        command: Callable[[argparse.Namespace, Streams], int] = args.func
        return command(args, Streams(out, err, inp))
    except PersoError as exc:
        _print_error(err, describe_error(exc))
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (perso settings | head): nothing to say
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a file the user named could not be read or written
        where = f": {exc.filename}" if exc.filename else ""
        _print_error(err, f"{type(exc).__name__}: {exc.strerror or exc}{where}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("PERSO_DEBUG") == "1":
            raise
        _print_error(err, f"unexpected {describe_error(exc)} (PERSO_DEBUG=1 shows the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
