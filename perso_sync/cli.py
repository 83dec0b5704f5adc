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

Only the commands that open a live session import the WebRTC stack (aiortc); ``settings``,
``templates`` and ``session`` are plain REST calls.
"""

from __future__ import annotations

import argparse
import contextlib
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
    from perso_sync.client import PersoClient
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


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table; an empty list says ``(none)`` instead of a bare header."""
    if not rows:
        return "(none)"
    table = [list(columns)] + [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    for key, columns in _SETTINGS_COLUMNS.items():
        out.write(f"\n{key.replace('_', ' ')}\n")
        out.write(format_table(data.get(key) or [], columns) + "\n")
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
    out.write(format_table(rows, columns) + "\n")
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
    for key in ("session_id", "status", "termination_reason", "duration_sec", "created_at"):
        out.write(f"{key:<20} {_cell(info.get(key))}\n")
    for key in ("prompt", "llm_type", "tts_type", "stt_type", "model_style"):
        value = info.get(key)
        name = value.get("name") if isinstance(value, dict) else value
        out.write(f"{key:<20} {_cell(name)}\n")
    caps = ",".join(c.get("name", "") for c in info.get("capability") or [])
    out.write(f"{'capability':<20} {caps or '-'}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# session commands (these open a live session: WebRTC when the session has an avatar)


@contextlib.contextmanager
def _open_session(
    args: argparse.Namespace,
    *,
    width: int = 320,
    height: int = 240,
    client_tools: Sequence[Any] = (),
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


def _progress_bar(err: TextIO) -> Callable[[int, int | None], None]:
    def show(sent: int, total: int | None) -> None:
        if total:
            filled = 30 * sent // total
            err.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {sent}/{total} bytes")
        else:
            err.write(f"\r{sent} bytes")
        err.flush()

    return show


def cmd_stf(args: argparse.Namespace, io: Streams) -> int:
    """``perso stf FILE``: upload an audio file; the avatar lip-syncs to it."""
    out = io.out
    if args.wait < 0:
        raise InvalidInputError("--wait must be >= 0")
    path = Path(args.file)
    if not path.is_file():
        raise InvalidInputError(f"no such file: {path}")
    with _open_session(args) as session:
        # The bar goes to stderr, so stdout stays one parseable result.
        progress = None if args.json else _progress_bar(io.err)
        file_ref = session.process_stf(path, message=args.message, progress=progress)
        if progress is not None:
            io.err.write("\n")
        spoken = session.wait_until_idle(timeout=args.wait) if args.wait else False
    if args.json:
        _print_json({"file_ref": file_ref, "spoken": spoken}, out)
    else:
        out.write(f"file_ref {file_ref}\n")
    return EXIT_OK


def cmd_record(args: argparse.Namespace, io: Streams) -> int:
    """``perso record --seconds N -o FILE``: record the avatar's audio and video."""
    out = io.out
    if args.seconds <= 0:
        raise InvalidInputError("--seconds must be positive")
    output = Path(args.output)
    with (
        _open_session(
            args, width=args.width, height=args.height, receive_video=output.suffix != ".wav"
        ) as session,
        session.record(output),
    ):
        if args.say:
            session.process_ttstf(args.say)
        # A duration, not synchronisation: the recording runs on the runtime meanwhile.
        threading.Event().wait(args.seconds)
    size = output.stat().st_size
    if args.json:
        _print_json({"output": str(output), "bytes": size}, out)
    else:
        out.write(f"wrote {output} ({size} bytes)\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# chat


def _current_time(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


class _ChatScreen:
    """Writes the chat to the terminal: the streamed reply from the main thread, the avatar's
    states from the session's callback thread (one lock, so lines never interleave)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._states: frozenset[ChatState] = frozenset()

    def write(self, text: str) -> None:
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def on_states(self, states: frozenset[ChatState]) -> None:
        # The LLM state (on while process_llm streams) is the reply line itself: only what the
        # avatar does is shown here.
        from perso_sync.models import ChatState

        states = states - {ChatState.LLM}
        names = ", ".join(sorted(s.value.lower() for s in states)) or "idle"
        with self._lock:
            if states == self._states:
                return
            self._states = states
            self._out.write(f"  [avatar: {names}]\n")
            self._out.flush()
            self._idle.notify_all()

    def wait_shown_idle(self, timeout: float) -> None:
        """Wait until the idle state has been printed, so it never lands after the prompt."""
        with self._idle:
            self._idle.wait_for(lambda: not self._states, timeout=timeout)


class _ReplyLine:
    """The avatar's streamed text on ``avatar>`` lines, opened only when text arrives."""

    def __init__(self, screen: _ChatScreen) -> None:
        self._screen = screen
        self._open = False
        self._shown = ""

    def show(self, message: str) -> None:
        if not message.startswith(self._shown):
            self._shown = ""  # a new message began (after tool calls)
        new = message[len(self._shown) :]
        self._shown = message
        if new:
            if not self._open:
                self._screen.write("avatar> ")
                self._open = True
            self._screen.write(new)

    def end(self) -> None:
        # _shown is kept: message chunks accumulate over the whole turn, so after a tool call
        # only the new text is printed, on a new line.
        if self._open:
            self._screen.write("\n")
            self._open = False


def _chat_turn(session: Session, message: str, screen: _ChatScreen, speak: bool) -> None:
    """One turn: stream the reply (with tool calls), then let the avatar say it."""
    from perso_sync.llm import ErrorChunk, MessageChunk, ToolCallChunk, ToolResultChunk

    line = _ReplyLine(screen)
    finished: list[str] = []
    try:
        with session.process_llm(message) as stream:
            for chunk in stream:
                if isinstance(chunk, MessageChunk):
                    line.show(chunk.message)
                    if chunk.finish:
                        finished.append(chunk.message)
                        line.end()
                elif isinstance(chunk, ToolCallChunk):
                    line.end()
                    calls = [
                        f"{call['function']['name']}({call['function'].get('arguments') or ''})"
                        for call in chunk.tool_calls
                    ]
                    screen.write(f"  [tool call: {', '.join(calls)}]\n")
                elif isinstance(chunk, ToolResultChunk):
                    result = json.dumps(chunk.result, ensure_ascii=False, default=str)
                    screen.write(f"  [tool result: {result}]\n")
                elif isinstance(chunk, ErrorChunk):
                    line.end()
                    screen.write(f"  [error: {describe_error(chunk.error)}]\n")
                    return
    finally:
        line.end()
    reply = " ".join(text.strip() for text in finished if text.strip())
    if speak and reply:
        # The reference's pattern for a streamed turn: speak the finished text (processTTSTF).
        session.process_ttstf(reply)
        session.wait_until_idle(timeout=CHAT_SPEECH_TIMEOUT)
        screen.wait_shown_idle(_STATE_ECHO_TIMEOUT)


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
    screen = _ChatScreen(io.out)
    with _open_session(args, client_tools=tools) as session:
        speak = session.uses_webrtc
        session.subscribe_chat_states(screen.on_states)
        screen.write(
            f"session {session.session_id} ({'avatar' if speak else 'no avatar'}): "
            "type a message; Ctrl-C interrupts a reply, Ctrl-D ends\n"
        )
        while True:
            screen.write("you> ")
            try:
                line = io.inp.readline()
            except KeyboardInterrupt:
                screen.write("\n  (Ctrl-D ends the session)\n")
                continue
            if not line:
                screen.write("\n")
                break
            if not line.strip():
                continue
            try:
                _chat_turn(session, line.strip(), screen, speak)
            except KeyboardInterrupt:
                with contextlib.suppress(PersoError):
                    session.clear_buffer()  # the avatar stops too, not only the stream
                screen.write("\n  [interrupted]\n")
                screen.wait_shown_idle(_STATE_ECHO_TIMEOUT)
            except (LLMError, STTError, TTSError, ApiError) as exc:
                screen.write(f"\n  [error: {describe_error(exc)}]\n")
        screen.write(f"session {session.session_id} closed\n")
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
        err.write(f"error: {describe_error(exc)}\n")
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (perso settings | head): nothing to say
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a file the user named could not be read or written
        where = f": {exc.filename}" if exc.filename else ""
        err.write(f"error: {type(exc).__name__}: {exc.strerror or exc}{where}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("PERSO_DEBUG") == "1":
            raise
        err.write(f"error: unexpected {describe_error(exc)} (PERSO_DEBUG=1 shows the traceback)\n")
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
