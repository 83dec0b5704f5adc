"""The example Flask app: with Flask's test client, and under gunicorn with two pre-fork workers
whose master started the perso_sync runtime before forking."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from mock_server import LlmScript
from perso_sync.audio import get_wav_sample_rate

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "examples" / "flask_app"
TEMPLATE = "tmpl-webrtc-full"


def _load_app_module():
    spec = importlib.util.spec_from_file_location("perso_flask_example", APP_DIR / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


create_app = _load_app_module().create_app


@pytest.fixture
def app_client(perso_mock):
    return create_app(api_key=perso_mock.api_key, api_server=perso_mock.url).test_client()


def _new_session(app_client) -> str:
    resp = app_client.post("/api/session", json={"templateId": TEMPLATE})
    assert resp.status_code == 200
    return resp.get_json()["sessionId"]


def test_session_route_hands_out_only_a_session_id(app_client, perso_mock) -> None:
    resp = app_client.post("/api/session", json={"templateId": TEMPLATE})
    assert resp.status_code == 200
    body = resp.get_json()
    assert list(body) == ["sessionId"]
    assert body["sessionId"] in perso_mock.sessions
    assert perso_mock.api_key not in resp.get_data(as_text=True)
    assert "X-Worker-Pid" not in resp.headers  # only when asked for (the fork test)


def test_session_route_without_template_picks_a_webrtc_one(app_client, perso_mock) -> None:
    resp = app_client.post("/api/session")
    assert resp.status_code == 200
    session = perso_mock.sessions[resp.get_json()["sessionId"]]
    assert "STF_WEBRTC" in session.capability


def test_session_route_maps_errors(app_client, perso_mock) -> None:
    resp = app_client.post("/api/session", json={"templateId": "tmpl-does-not-exist"})
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "SessionCreationError"
    perso_mock.api_key = "rotated-key"  # the server's key is refused: the server's problem
    resp = app_client.post("/api/session", json={"templateId": TEMPLATE})
    assert resp.status_code == 502
    assert resp.get_json()["error"] == "SessionCreationError"
    assert resp.get_json()["code"] == "authentication_failed"
    assert "rotated-key" not in resp.get_data(as_text=True)
    assert "test-key" not in resp.get_data(as_text=True)


def test_chat_streams_the_reply_and_keeps_the_conversation(app_client, perso_mock) -> None:
    sid = _new_session(app_client)
    resp = app_client.post("/api/chat", json={"sessionId": sid, "message": "Hello there"})
    assert resp.status_code == 200
    assert resp.is_streamed
    assert resp.mimetype == "text/plain"
    pieces = list(resp.response)  # the body as the server streamed it, piece by piece
    assert len(pieces) > 1
    assert b"".join(pieces).decode() == (
        "Hello! I am the Perso mock assistant. You said: Hello there"
    )
    resp = app_client.post("/api/chat", json={"sessionId": sid, "message": "And again"})
    assert resp.get_data(as_text=True).endswith("You said: And again")
    (second,) = perso_mock.sessions[sid].llm_requests[1:]
    history = [m["content"] for m in second["messages"] if m.get("role") == "user"]
    assert history == ["Hello there", "And again"]


def test_chat_errors_are_http_errors(app_client, perso_mock) -> None:
    resp = app_client.post("/api/chat", json={"sessionId": "x"})
    assert resp.status_code == 400
    assert "message" in resp.get_json()["detail"]
    resp = app_client.post("/api/chat", json={"sessionId": "no-such-session", "message": "Hi"})
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "LLMError"


def test_tts_returns_wav(app_client) -> None:
    sid = _new_session(app_client)
    resp = app_client.post("/api/tts", json={"sessionId": sid, "text": "Hi", "resample": True})
    assert resp.status_code == 200
    assert resp.mimetype == "audio/wav"
    assert resp.get_data()[:4] == b"RIFF"
    assert get_wav_sample_rate(resp.get_data()) == 16000
    resp = app_client.post("/api/tts", json={"sessionId": sid, "text": "   "})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "InvalidInputError"


# -- gunicorn, two pre-fork workers --------------------------------------------------------------


class _Log:
    """gunicorn's stderr, line by line, waited on with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._proc = proc
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._queue.put(line)
        self._queue.put("")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[re.Match]:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for line in self.lines if (m := re.search(pattern, line))]
            if len(found) >= count:
                return found
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"{pattern!r} x{count} not logged:\n{''.join(self.lines)}"
                ) from None
            if not line:
                raise AssertionError(f"gunicorn exited:\n{''.join(self.lines)}")
            self.lines.append(line)


def test_under_gunicorn_two_prefork_workers_after_the_master_started_the_runtime(
    perso_mock,
) -> None:
    # Replies paced out over ~0.5 s: two concurrent chats then occupy both sync workers.
    perso_mock.llm_script = LlmScript(delay=0.05)
    env = {
        **os.environ,
        "PERSO_INTERACTIVE_API_KEY": perso_mock.api_key,
        "PERSO_API_SERVER": perso_mock.url,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers=2",
            # --preload builds the app in the master; warm_up=True makes it run an LLM turn
            # there, so the runtime's loop thread and HTTP pool exist before the fork.
            "--preload",
            "--bind=127.0.0.1:0",
            "--no-control-socket",
            "--graceful-timeout=5",
            f"--chdir={APP_DIR}",
            "app:create_app(warm_up=True, worker_header=True)",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = _Log(proc)
    try:
        (listening,) = log.wait_for(r"Listening at: (http://127\.0\.0\.1:\d+)")
        base = listening.group(1)
        booted = {int(m.group(1)) for m in log.wait_for(r"Booting worker with pid: (\d+)", 2)}
        # The master ran the warm-up turn before the workers existed.
        (warm_up,) = perso_mock.journal.requests(endpoint="llm")
        assert warm_up.status == 200

        answered_by: set[int] = set()
        session = requests.Session()
        deadline = time.monotonic() + 30
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            while len(answered_by) < 2:
                assert time.monotonic() < deadline, f"only {answered_by} answered"
                sid = session.post(f"{base}/api/session", json={}, timeout=10).json()["sessionId"]

                def chat(message: str, sid: str = sid) -> requests.Response:
                    body = {"sessionId": sid, "message": message}
                    return requests.post(f"{base}/api/chat", json=body, timeout=10)

                for resp, message in zip(
                    pool.map(chat, ["first", "second"]), ["first", "second"], strict=True
                ):
                    assert resp.status_code == 200
                    assert resp.text.endswith(f"You said: {message}")
                    assert resp.headers["X-Warmed-Up-In"] == str(proc.pid)
                    answered_by.add(int(resp.headers["X-Worker-Pid"]))
        assert answered_by == booted
        assert proc.pid not in answered_by
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert proc.returncode == 0
    with pytest.raises(ProcessLookupError):  # no worker outlived the master
        os.killpg(proc.pid, 0)
