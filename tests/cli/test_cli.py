"""The `perso` command line against the mock server: output and exit codes of every subcommand,
each with an error case (one line on stderr, no traceback, never the key)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
import requests
from rich.filesize import decimal

from mock_server import LlmScript, Rule, ToolCall
from perso_sync.audio import encode_wav, get_wav_sample_rate
from perso_sync.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main

TEMPLATE = "tmpl-webrtc-full"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(perso_mock, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PERSO_INTERACTIVE_API_KEY", perso_mock.api_key)
    monkeypatch.setenv("PERSO_API_SERVER", perso_mock.url)
    return perso_mock


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    """``perso ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, inp=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(err: str, starts_with: str) -> None:
    assert err.startswith(f"error: {starts_with}"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "test-key" not in err


def subprocess_env(perso_mock) -> dict[str, str]:
    return {
        **os.environ,
        "PERSO_INTERACTIVE_API_KEY": perso_mock.api_key,
        "PERSO_API_SERVER": perso_mock.url,
        "PYTHONUNBUFFERED": "1",
        # The tree under test, whatever the venv's install of it says.
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


# -- settings / templates / session: plain REST ------------------------------------------------


def table_rows(text: str, title: str) -> list[list[str]]:
    """The rows (cells split on runs of 2+ spaces) of the plain table under ``title``."""
    lines = text.splitlines()
    start = lines.index(title)
    header, rule = lines[start + 1], lines[start + 2]
    assert set(rule) == {"-"}, rule  # an ASCII rule under the header: plain text for a pipe
    rows = [re.split(r"\s{2,}", header.strip())]
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def test_settings_as_tables_and_as_json(env) -> None:
    code, text, _ = run("settings")
    assert code == EXIT_OK
    assert "\x1b" not in text  # not a terminal: no colour, no escape code
    assert table_rows(text, "prompts") == [
        ["prompt_id", "name"],
        *([p["prompt_id"], p["name"]] for p in env.catalog.prompts),
    ]
    assert ["gpt-4o-mini", "openai"] in table_rows(text, "llms")
    assert table_rows(text, "text normalizations")[0] == ["textnormalizationconfig_id", "name"]
    assert all(line == line.rstrip() for line in text.splitlines())  # no padding at line ends
    # --json after the command works like before it
    for argv in (("--json", "settings"), ("settings", "--json")):
        code, text, _ = run(*argv)
        assert code == EXIT_OK
        data = json.loads(text)
        assert "prompt-concierge" in {p["prompt_id"] for p in data["prompts"]}
        assert "gpt-4o-mini" in {llm["name"] for llm in data["llms"]}


def test_settings_show_names_as_they_are_and_empty_lists_as_none(env) -> None:
    # Text from the server is data: rich markup or emoji codes in it are not interpreted.
    tricky = {
        **env.catalog.prompts[0],
        "prompt_id": "p-tricky",
        "name": "[red]Tricky[/red] :smile:",
    }
    env.catalog.prompts.append(tricky)
    env.catalog.documents.clear()
    code, text, _ = run("settings")
    assert code == EXIT_OK
    assert ["p-tricky", "[red]Tricky[/red] :smile:"] in table_rows(text, "prompts")
    assert "documents\n(none)\n" in text


def test_settings_into_a_pipe_closed_early_end_quietly(perso_mock) -> None:
    # perso settings | head -1, with more output than a pipe holds: the reader goes away while
    # perso still writes. That is not an error: exit 0, nothing on stderr.
    prompt = perso_mock.catalog.prompts[0]
    perso_mock.catalog.prompts.extend(
        {**prompt, "prompt_id": f"p-{n:05}", "name": "x" * 80} for n in range(2000)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "perso_sync.cli", "settings"],
        env=subprocess_env(perso_mock),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"llms\n"
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_OK
    assert err == b""


def test_settings_with_a_wrong_key_prints_one_line(env, monkeypatch) -> None:
    monkeypatch.setenv("PERSO_INTERACTIVE_API_KEY", "not-the-key")
    code, text, err = run("settings")
    assert code == EXIT_ERROR
    assert text == ""
    assert_one_error_line(err, "ApiError (401")
    assert "not-the-key" not in err


def test_templates_as_table_and_json(env) -> None:
    code, text, _ = run("templates")
    assert code == EXIT_OK
    assert "\x1b" not in text
    lines = text.splitlines()
    lines.insert(0, "templates")
    rows = table_rows("\n".join(lines), "templates")
    assert rows[0] == ["sessiontemplate_id", "name", "model_style", "platform", "capability"]
    assert [
        TEMPLATE,
        "Concierge (WebRTC, full)",
        "chaehee-front_white_shirt-nodded_loop",  # long ids are never cut when piped
        "webrtc",
        "STF_WEBRTC,LLM,TTS,STT",
    ] in rows
    assert "tmpl-onpremise" in {row[0] for row in rows}
    code, text, _ = run("templates", "--json")
    assert TEMPLATE in {t["sessiontemplate_id"] for t in json.loads(text)}


def test_templates_without_key_names_the_variable(env, monkeypatch) -> None:
    monkeypatch.delenv("PERSO_INTERACTIVE_API_KEY")
    code, _, err = run("templates")
    assert code == EXIT_ERROR
    assert_one_error_line(err, "MissingApiKeyError")
    assert "PERSO_INTERACTIVE_API_KEY" in err


def test_session_create_from_a_template_then_info(env) -> None:
    code, text, _ = run("session", "create", "--template", TEMPLATE)
    assert code == EXIT_OK
    session_id = text.strip()
    assert session_id in env.sessions
    code, text, _ = run("session", "info", session_id)
    assert code == EXIT_OK
    assert "\x1b" not in text
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines())
    assert fields["session_id"] == session_id
    assert fields["status"] == "CREATED"
    assert fields["termination_reason"] == "-"
    assert fields["capability"] == "STF_WEBRTC,LLM,TTS,STT"
    assert fields["llm_type"] == env.sessions[session_id].params["llm_type"]
    code, text, _ = run("--json", "session", "info", session_id)
    info = json.loads(text)
    assert info["session_id"] == session_id
    assert info["status"] == "CREATED"


def test_session_create_form_a(env) -> None:
    code, text, _ = run(
        "--json",
        "session",
        "create",
        "--prompt",
        "prompt-concierge",
        "--model-style",
        "chaehee-front_white_shirt-nodded_loop",
        "--llm",
        "gpt-4o-mini",
    )
    assert code == EXIT_OK
    session_id = json.loads(text)["session_id"]
    assert env.sessions[session_id].params["llm_type"] == "gpt-4o-mini"


def test_session_create_errors(env) -> None:
    code, _, err = run(
        "session",
        "create",
        "--prompt",
        "no-such-prompt",
        "--model-style",
        "chaehee-front_white_shirt-nodded_loop",
    )
    assert code == EXIT_ERROR
    assert_one_error_line(err, "DoesNotExistError (400 does_not_exist) [prompt]: ")
    code, _, err = run("session", "create", "--prompt", "prompt-concierge")
    assert code == EXIT_ERROR
    assert_one_error_line(err, "InvalidInputError: --prompt and --model-style")
    assert len(env.sessions) == 0


def test_session_info_of_an_unknown_session(env) -> None:
    code, _, err = run("session", "info", "no-such-session")
    assert code == EXIT_ERROR
    assert_one_error_line(err, "ApiError (404 ")


def test_rest_commands_do_not_import_the_webrtc_stack(perso_mock) -> None:
    probe = (
        "import sys\n"
        "from perso_sync.cli import main\n"
        "codes = [main(['templates']), main(['settings']), main(['session', 'create'])]\n"
        "heavy = sorted(m for m in ('aiortc', 'av', 'anyio', 'httpx') if m in sys.modules)\n"
        "print('RESULT', codes, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=subprocess_env(perso_mock),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "RESULT [0, 0, 0] []"


# -- tts / stt ---------------------------------------------------------------------------------


def test_tts_then_stt_round_trip(env, tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    code, text, _ = run("--json", "tts", "Round trip works.", "-o", str(speech))
    assert code == EXIT_OK
    report = json.loads(text)
    assert report["format"] == "wav"
    assert report["bytes"] == speech.stat().st_size > 44
    code, text, _ = run("stt", str(speech), "--template", TEMPLATE)
    assert code == EXIT_OK
    assert text == "Round trip works.\n"
    resampled = tmp_path / "16k.wav"
    code, text, _ = run("tts", "Hello", "-o", str(resampled), "--resample")
    assert code == EXIT_OK
    assert text == f"wrote {resampled} ({resampled.stat().st_size} bytes wav, 16000 Hz)\n"
    assert get_wav_sample_rate(resampled.read_bytes()) == 16000


def test_tts_of_nothing_is_an_error_and_writes_nothing(env, tmp_path: Path) -> None:
    code, _, err = run("tts", "😀 🎉", "-o", str(tmp_path / "x.wav"))
    assert code == EXIT_ERROR
    assert_one_error_line(err, "InvalidInputError: nothing to say")
    assert not (tmp_path / "x.wav").exists()
    assert len(env.sessions) == 0  # refused before a session was made


def test_tts_failure_on_the_server_shows_its_status(env, tmp_path: Path) -> None:
    env.faults.fail("tts", 500)
    code, _, err = run("tts", "Hello", "-o", str(tmp_path / "x.wav"), "--template", TEMPLATE)
    assert code == EXIT_ERROR
    assert_one_error_line(err, "TTSError (500 ")


def test_stt_of_a_missing_file(env, tmp_path: Path) -> None:
    code, _, err = run("stt", str(tmp_path / "nope.wav"), "--template", TEMPLATE)
    assert code == EXIT_ERROR
    assert err.startswith("error: ")
    assert "nope.wav" in err
    assert "Traceback" not in err
    assert len(env.sessions) == 0


# -- stf / record ------------------------------------------------------------------------------


def test_stf_uploads_the_file_and_reports_its_file_ref(env, tmp_path: Path) -> None:
    wav_bytes = encode_wav(bytes(range(256)) * 64, 16000)
    wav = tmp_path / "tone.wav"
    wav.write_bytes(wav_bytes)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["stf", str(wav), "--message", "hi", "--wait", "0", "--template", TEMPLATE],
        out=out,
        err=err,
        inp=io.StringIO(),
    )
    assert code == EXIT_OK, err.getvalue()
    assert out.getvalue().startswith("file_ref ")
    file_ref = out.getvalue().split()[1]
    # Not a terminal: no bar, no escape code; the final state once (size, rate, time taken).
    assert re.fullmatch(
        r"uploading tone\.wav 16\.4/16\.4 kB [\d.]+ [kMG]?B/s \d+:\d\d:\d\d\n", err.getvalue()
    ), err.getvalue()
    (session_id,) = list(env.sessions)
    received = env.peer(session_id).files[file_ref]
    assert received.sha256 == hashlib.sha256(wav_bytes).hexdigest()
    stf = env.journal.messages(session_id=session_id, type="stf", direction="in")
    assert [m.payload["data"]["file_ref"] for m in stf] == [file_ref]


def test_stf_on_a_session_without_avatar_is_an_error(env, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    wav.write_bytes(encode_wav(b"\x00\x10" * 1600, 16000))
    code, _, err = run("stf", str(wav), "--template", "tmpl-rest-only")
    assert code == EXIT_ERROR
    assert_one_error_line(err, "STFError: processSTF requires WebRTC")


def test_record_writes_a_playable_video(env, tmp_path: Path) -> None:
    out = tmp_path / "avatar.mp4"
    code, text, err = run(
        "record", "--seconds", "1", "-o", str(out), "--say", "Hi", "--template", TEMPLATE
    )
    assert code == EXIT_OK, err
    size = out.stat().st_size
    assert text == f"wrote {out} ({size} bytes)\n"
    # The final state of the progress, once: the whole file's size and its rate over 1 s.
    assert err == f"recording avatar.mp4 1/1 s {decimal(size)} {decimal(size)}/s 0:00:01\n"
    with av.open(str(out)) as container:
        assert container.streams.video
        assert container.streams.audio
    (session_id,) = list(env.sessions)
    assert env.journal.messages(session_id=session_id, type="ttstf", direction="in")


def test_record_needs_positive_seconds(env, tmp_path: Path) -> None:
    code, _, err = run("record", "--seconds", "0", "-o", str(tmp_path / "a.mp4"))
    assert code == EXIT_ERROR
    assert_one_error_line(err, "InvalidInputError: --seconds")


# -- chat --------------------------------------------------------------------------------------


class _Terminal:
    """The output of a child process, read as it comes (no newline needed: prompts)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.text = ""
        self._chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._proc = proc
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read1(4096):
            self._chunks.put(chunk)
        self._chunks.put(b"")

    def wait_for(self, needle: str, start: int = 0, timeout: float = 20.0) -> int:
        """Wait until ``needle`` appears after ``start``; return the index just after it."""
        deadline = time.monotonic() + timeout
        while (at := self.text.find(needle, start)) < 0:
            left = deadline - time.monotonic()
            try:
                chunk = self._chunks.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"{needle!r} not shown; output so far:\n{self.text}") from None
            if not chunk:
                raise AssertionError(f"{needle!r} not shown before EOF:\n{self.text}")
            self.text += chunk.decode()
        return at + len(needle)


def test_chat_streams_shows_tools_and_states_and_obeys_ctrl_c_and_ctrl_d(perso_mock) -> None:
    story = " ".join(f"word{i}" for i in range(60))
    # Spoken for many seconds (the mock times speech by its length): a Ctrl-C sent once
    # "speaking" shows lands while the avatar speaks, however loaded the machine is.
    long_answer = "Ok, " + " ".join(f"minute{i}" for i in range(25)) + "."
    perso_mock.llm_script = LlmScript(
        rules=[
            Rule(
                pattern="again",
                tool_calls=[ToolCall(name="get_current_time")],
                follow_up=long_answer,
            ),
            Rule(pattern="time", tool_calls=[ToolCall(name="get_current_time")], follow_up="Ok."),
            Rule(pattern="story", reply=story),
        ],
        delay=0.1,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "perso_sync.cli", "chat", "--template", TEMPLATE],
        env=subprocess_env(perso_mock),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    term = _Terminal(proc)
    try:
        at = term.wait_for("you> ")
        # A turn with a client tool: the call, its result, the streamed answer, the avatar.
        proc.stdin.write(b"what time is it\n")
        proc.stdin.flush()
        at = term.wait_for("[tool call: get_current_time(", at)
        at = term.wait_for("[tool result: {", at)
        at = term.wait_for("avatar> Ok.\n", at)
        at = term.wait_for("[avatar: speaking]", at)
        at = term.wait_for("[avatar: idle]\nyou> ", at)
        # Ctrl-C while the reply streams in: the turn stops, the session goes on.
        proc.stdin.write(b"tell me a story\n")
        proc.stdin.flush()
        at = term.wait_for("avatar> word0", at)
        proc.send_signal(signal.SIGINT)
        at = term.wait_for("[interrupted]", at)
        at = term.wait_for("you> ", at)
        assert "word59" not in term.text
        # Ctrl-C while the avatar speaks: it is told to stop (clear-buffer) and goes idle.
        proc.stdin.write(b"the time again\n")
        proc.stdin.flush()
        at = term.wait_for(f"avatar> {long_answer}\n", at)
        at = term.wait_for("[avatar: speaking]", at)
        proc.send_signal(signal.SIGINT)
        at = term.wait_for("[interrupted]", at)
        at = term.wait_for("[avatar: idle]\nyou> ", at)
        # Ctrl-D ends the session and the program.
        proc.stdin.close()
        term.wait_for("closed\n", at)
        assert proc.wait(timeout=20) == EXIT_OK
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.stderr is not None
    assert proc.stderr.read() == b""
    (session_id,) = list(perso_mock.sessions)
    llm = perso_mock.journal.requests(session_id=session_id, endpoint="llm")
    assert [r.status for r in llm] == [200, 200, 499, 200, 200]  # the story was cut short
    clears = perso_mock.journal.messages(session_id=session_id, type="clear-buffer")
    assert len(clears) == 2  # one per Ctrl-C
    assert perso_mock.sessions[session_id].status == "TERMINATED"


def test_chat_without_an_avatar_streams_only(env) -> None:
    code, text, err = run("chat", "--template", "tmpl-rest-only", stdin="hi\n\nplease fail\n")
    assert code == EXIT_OK, err
    assert "(no avatar)" in text
    assert "avatar> Hello! I am the Perso mock assistant. You said: hi\n" in text
    assert "  [avatar: LLM]\n" in text  # the turn's state, on its own line
    assert "speaking" not in text  # nothing is spoken without an avatar
    assert "  [error: LLMError: LLMStreamingResponseError: The mock LLM was asked to fail.]" in text
    assert text.count("you> ") == 4  # the empty line prompts again; then Ctrl-D
    (session_id,) = list(env.sessions)
    assert env.sessions[session_id].status == "TERMINATED"


def test_chat_with_an_unknown_session(env) -> None:
    code, _, err = run("chat", "--session-id", "no-such-session")
    assert code == EXIT_ERROR
    assert_one_error_line(err, "ApiError (404 ")


# -- mock --------------------------------------------------------------------------------------


def test_mock_serves_until_terminated(perso_mock) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "perso_sync.cli", "mock", "--port", "0", "--api-key", "k-1"],
        env=subprocess_env(perso_mock),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Perso mock server on http://127.0.0.1:")
        url = line.split()[4]
        resp = requests.get(
            f"{url}/api/v1/settings/llm_type/", headers={"PersoLive-APIKey": "k-1"}, timeout=10
        )
        assert resp.status_code == 200
        assert "gpt-4o-mini" in resp.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == EXIT_OK
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_mock_with_a_bad_catalog_or_port(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "catalog.json"
    bad.write_text("{not json")
    assert main(["mock", "--catalog", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "catalog" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["mock", "--port", "not-a-number"])
    assert exc.value.code == EXIT_USAGE


# -- contracts ------------------------------------------------------------------------------------


def test_contracts_verify_the_shipped_corpus(capsys) -> None:
    code, _, _ = run("contracts", "verify", str(REPO / "contracts"))
    assert code == EXIT_OK


def test_contracts_verify_names_a_malformed_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "broken.json").write_text('{"format": "perso-contract/1", "contracts": [{}]}')
    code, _, _ = run("contracts", "verify", str(tmp_path))
    assert code == EXIT_ERROR
    assert "broken.json" in capsys.readouterr().err


def test_contracts_record_against_the_mock_writes_no_key(env, tmp_path: Path) -> None:
    out = tmp_path / "recorded"
    code, _, _ = run("--api-server", env.url, "contracts", "record", "--out", str(out))
    assert code == EXIT_OK
    files = sorted(out.glob("*.json"))
    assert files
    assert all(env.api_key.encode() not in f.read_bytes() for f in files)


def test_mock_beyond_loopback_needs_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, _err = run("mock", "--host", "0.0.0.0", "--port", "0")
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err  # the mock's own refusal
    with pytest.raises(SystemExit) as exited:  # argparse's --help exits
        run("mock", "--help")
    assert exited.value.code == 0
    assert "--allow-remote" in capsys.readouterr().out
