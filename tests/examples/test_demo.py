"""`make demo`'s script, run as a user runs it: its transcript, its exit code, no process left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "sync_script.py"


def _processes_in_session(session_id: int) -> list[int]:
    """Pids of live processes in the session ``session_id`` (the demo's, children included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces, so split after it.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _field(transcript: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}  +(.*)$", transcript, re.MULTILINE)
    assert match, f"no {label!r} line in the transcript:\n{transcript}"
    return match.group(1)


def test_demo_script_against_the_embedded_mock(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        # The tree under test, whatever the venv's install of it says.
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PERSO_DEMO_REAL", None)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--embedded-mock", "--keep", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session and group: anything it leaves is findable
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err

    # what was listed
    assert "gpt-4o-mini" in _field(out, "LLMs")
    assert "azure-en-US-JennyNeural" in _field(out, "voices")
    assert "Hotel concierge" in _field(out, "prompts")
    # the session
    session_id = _field(out, "session id")
    assert re.fullmatch(r"plp-[0-9a-f]+", session_id)
    assert _field(out, "connected") == "WebRTC, status IN_PROGRESS"
    # the tool call and its result, then the streamed reply that used it
    assert _field(out, "tool call") == 'get_weather({"location": "Seoul"})'
    result = json.loads(_field(out, "tool result"))
    assert result == {"location": "Seoul", "celsius": 21, "sky": "clear"}
    assert _field(out, "assistant").startswith("Here is the weather report:")
    assert '"celsius":21' in _field(out, "assistant")  # the result as JSON.stringify writes it
    # TTS: bytes and rate; the file is what the line says
    tts = re.fullmatch(r"'(.+)' -> (\d+) bytes WAV, (\d+) Hz -> tts\.wav", _field(out, "TTS"))
    assert tts, _field(out, "TTS")
    spoken, size, rate = tts.group(1), int(tts.group(2)), int(tts.group(3))
    assert rate == 16000
    assert (tmp_path / "tts.wav").stat().st_size == size > 44
    # STT gives back what was synthesized
    assert _field(out, "STT") == repr(spoken)
    # STF, then the avatar spoke while the recording ran
    assert re.fullmatch(r"file-[0-9a-f]+", _field(out, "STF file_ref"))
    states = re.findall(r"^  avatar +(.*)$", out, re.MULTILINE)
    assert "speaking" in states
    assert states[-1] == "idle"
    recording = re.fullmatch(r"(\d+) bytes -> avatar\.mp4", _field(out, "recording"))
    assert recording
    assert int(recording.group(1)) == (tmp_path / "avatar.mp4").stat().st_size > 0
    # a clean close
    assert _field(out, "closed") == "manually (200 OK)"
    assert _field(out, "final status") == "TERMINATED"
    assert out.rstrip().endswith("everything closed")

    # nothing left behind, in its process group or its session
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert _processes_in_session(proc.pid) == []
