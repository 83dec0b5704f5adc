"""The `perso` command line in a real pseudo-terminal (what a person sees) against the mock:
colour and live displays on a terminal, none of it under ``NO_COLOR``."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from mock_server import LlmScript, Rule
from perso_sync.audio import encode_wav
from perso_sync.cli import EXIT_ERROR, EXIT_OK

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = "tmpl-webrtc-full"
ESC = "\x1b["
COLUMNS, ROWS = 120, 40
CONTROL_SEQUENCE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def visible(text: str) -> str:
    """The text without its control sequences (colours, cursor moves)."""
    return CONTROL_SEQUENCE.sub("", text)


def screen(raw: str) -> list[str]:
    """The lines left on a terminal that received ``raw``: text overwrites at the cursor, and the
    moves rich's live display uses are followed (carriage return, line feed, cursor up, erase
    line); colours are ignored. Lines are short here: no wrapping."""
    lines, row, col = [""], 0, 0
    for token in re.finditer(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+", raw):
        text, (args, command) = token.group(), token.groups()
        if text == "\r":
            col = 0
        elif text == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif command == "A":
            row = max(0, row - int(args or 1))
        elif command == "K":
            lines[row] = "" if args == "2" else lines[row][:col]
        elif command is None:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + text + line[col + len(text) :]
            col += len(text)
    return [line.rstrip() for line in lines]


class Terminal:
    """``perso ARGV`` with stdin, stdout and stderr on a pseudo-terminal of 120x40."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self._master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perso_sync.cli", *argv],
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self._text = ""
        self._changed = threading.Condition()
        self._eof = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                chunk = b""
            with self._changed:
                if not chunk:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self._text += chunk.decode(errors="replace")
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return self._text

    def wait_for(self, needle: str, start: int = 0, timeout: float = 30.0) -> int:
        """Wait until ``needle`` was written (in the visible text, after ``start``); return the
        index just after it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (at := visible(self._text).find(needle, start)) < 0:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(f"{needle!r} not shown; the terminal got:\n{self._text!r}")
                self._changed.wait(left)
            return at + len(needle)

    def type(self, keys: bytes) -> None:
        os.write(self._master, keys)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """The exit code and everything written, once the program ended."""
        code = self.proc.wait(timeout=timeout)
        with self._changed:
            self._changed.wait_for(lambda: self._eof, timeout=timeout)
            return code, self._text

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._master)


@pytest.fixture
def terminal_env(perso_mock):
    env = {
        key: value
        for key, value in os.environ.items()
        # What the test decides, not the environment it happens to run in.
        if key not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE")
    }
    env.update(
        PERSO_INTERACTIVE_API_KEY=perso_mock.api_key,
        PERSO_API_SERVER=perso_mock.url,
        TERM="xterm-256color",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    return env


def run_in_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    term = Terminal(argv, env)
    try:
        return term.finish()
    finally:
        term.close()


def test_settings_in_a_terminal_are_styled_and_plain_under_no_color(terminal_env) -> None:
    code, styled = run_in_terminal(["settings"], terminal_env)
    assert code == EXIT_OK
    assert ESC in styled  # bold titles, coloured headers
    assert "prompt-concierge" in styled
    assert "─" * 20 in styled  # the header rule, drawn with the box character
    code, plain = run_in_terminal(["settings"], {**terminal_env, "NO_COLOR": "1"})
    assert code == EXIT_OK
    assert "\x1b" not in plain
    assert "prompts\r\nprompt_id" in plain  # the terminal turns \n into \r\n
    assert "prompt-concierge" in plain


def test_an_error_in_a_terminal_is_one_styled_line(terminal_env) -> None:
    code, styled = run_in_terminal(["session", "info", "no-such-session"], terminal_env)
    assert code == EXIT_ERROR
    assert styled.count("\n") == 1
    assert f"{ESC}1;31merror:" in styled  # bold red
    assert "ApiError (404 " in styled
    assert "Traceback" not in styled
    code, plain = run_in_terminal(
        ["session", "info", "no-such-session"], {**terminal_env, "NO_COLOR": "1"}
    )
    assert code == EXIT_ERROR
    assert plain.startswith("error: ApiError (404 ")
    assert plain.count("\n") == 1


def test_stf_in_a_terminal_draws_a_live_bar(terminal_env, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    wav.write_bytes(encode_wav(b"\x00\x10" * 16000 * 4, 16000))  # 128 kB
    code, text = run_in_terminal(
        ["stf", str(wav), "--wait", "0", "--template", TEMPLATE], terminal_env
    )
    assert code == EXIT_OK
    assert "uploading tone.wav" in text
    assert "━" in text  # the bar
    assert "128.0/128.0 kB" in text
    assert "B/s" in text  # the rate
    assert "file_ref file-" in text
    code, text = run_in_terminal(
        ["stf", str(wav), "--wait", "0", "--template", TEMPLATE], {**terminal_env, "NO_COLOR": "1"}
    )
    assert code == EXIT_OK
    assert "\x1b" not in text
    assert "━" not in text
    assert "uploading tone.wav 128.0/128.0 kB" in text


def test_chat_in_a_terminal_streams_in_place_with_a_status_line(perso_mock, terminal_env) -> None:
    reply = "Hi there, nice to meet you. " + " ".join(f"word{i}" for i in range(10))
    perso_mock.llm_script = LlmScript(
        rules=[Rule(pattern="hello", reply=reply), Rule(pattern="bye", reply="Goodbye.")],
        delay=0.05,
    )
    term = Terminal(["chat", "--template", TEMPLATE], terminal_env)
    try:
        at = term.wait_for("you> ")
        term.type(b"hello\n")
        # The status line, under the reply: the LLM streams, then the avatar speaks.
        at = term.wait_for("avatar: LLM", at)
        at = term.wait_for("avatar: speaking", at)
        # Typed while the avatar speaks: not echoed into the live region, but kept for the
        # next prompt, where it shows as typed.
        term.type(b"bye\n")
        at = term.wait_for("you> bye", at)
        at = term.wait_for("you> ", at)
        term.type(b"\x04")  # Ctrl-D
        code, text = term.finish()
    finally:
        term.close()
    assert code == EXIT_OK
    assert ESC in text
    (session_id,) = list(perso_mock.sessions)
    # States were shown in place on the status line, never logged as lines; once the turn is
    # over, only the conversation is left on the screen.
    assert "[avatar:" not in visible(text)
    assert [line for line in screen(text) if line] == [
        f"session {session_id} (avatar): type a message; Ctrl-C interrupts a reply, Ctrl-D ends",
        "you> hello",
        f"avatar> {reply}",
        "you> bye",
        "avatar> Goodbye.",
        "you>",
        f"session {session_id} closed",
    ]
    assert perso_mock.journal.messages(session_id=session_id, type="ttstf", direction="in")


def test_chat_in_a_terminal_keeps_the_partial_reply_after_ctrl_c(perso_mock, terminal_env) -> None:
    story = " ".join(f"word{i}" for i in range(60))
    perso_mock.llm_script = LlmScript(rules=[Rule(pattern="story", reply=story)], delay=0.1)
    term = Terminal(["chat", "--template", TEMPLATE], terminal_env)
    try:
        at = term.wait_for("you> ")
        term.type(b"tell me a story\n")
        at = term.wait_for("avatar> word0", at)
        term.proc.send_signal(signal.SIGINT)
        at = term.wait_for("[interrupted]", at)
        at = term.wait_for("you> ", at)
        term.type(b"\x04")
        code, text = term.finish()
    finally:
        term.close()
    assert code == EXIT_OK
    # What had streamed in stays on the screen above the note; the rest never came.
    lines = [line for line in screen(text) if line]
    assert lines[1] == "you> tell me a story"
    assert re.fullmatch(r"avatar> word0( word\d+)*", lines[2]), lines
    assert "word59" not in lines[2]
    assert lines[3:5] == ["  [interrupted]", "you>"]
