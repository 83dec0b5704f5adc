"""The mock against hostile or careless clients (issue 16 rows 17, 18, 19, and the journal's
caps): every bad request gets the platform's standard 400 body, the control API refuses what it
could not use, and nothing a client sends can make the mock hold unbounded memory."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest
import requests
from _http_helpers import TIMEOUT, create, first_error, get, post

from mock_server import MockPersoServer
from mock_server.__main__ import main
from mock_server.journal import Journal

REPO_ROOT = Path(__file__).resolve().parents[2]


def _session(server: MockPersoServer) -> str:
    return str(create(server).json()["session_id"])


# -- row 17: a TTS text far beyond any real utterance ----------------------------------------


def test_tts_of_a_huge_text_is_a_length_error(perso_mock: MockPersoServer) -> None:
    sid = _session(perso_mock)
    response = post(perso_mock, f"/api/v1/session/{sid}/tts/", json={"text": "a" * 100_000})
    assert response.status_code == 400
    error = first_error(response)
    assert (error["code"], error["attr"]) == ("max_length", "text")
    limit = perso_mock.catalog.settings["tts_max_chars"]
    assert f"no more than {limit} characters" in error["detail"]
    # The limit is a catalog setting: a test may lower it.
    perso_mock.catalog.settings["tts_max_chars"] = 5
    assert post(perso_mock, f"/api/v1/session/{sid}/tts/", json={"text": "Hello"}).ok
    too_long = post(perso_mock, f"/api/v1/session/{sid}/tts/", json={"text": "Hello!"})
    assert first_error(too_long)["code"] == "max_length"


# -- row 18: JSON nested far deeper than any request of the API ------------------------------


@pytest.mark.parametrize("endpoint", ["tts", "llm/v2", "exchange", "event/create"])
def test_a_deeply_nested_body_is_the_standard_400(
    perso_mock: MockPersoServer, endpoint: str
) -> None:
    sid = _session(perso_mock)
    nested = '{"text": ' + "[" * 800 + "]" * 800 + "}"
    response = post(
        perso_mock,
        f"/api/v1/session/{sid}/{endpoint}/",
        data=nested,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert first_error(response)["code"] == "parse_error"
    entry = perso_mock.journal.last(session_id=sid, method="POST")
    assert entry is not None
    assert entry.status == 400


def test_a_deeply_nested_session_creation_is_the_standard_400(
    perso_mock: MockPersoServer,
) -> None:
    response = post(
        perso_mock,
        "/api/v1/session/",
        data='{"prompt": ' + "[" * 800 + "]" * 800 + "}",
        headers={"Content-Type": "application/json", "PersoLive-APIKey": perso_mock.api_key},
    )
    assert response.status_code == 400
    assert first_error(response)["code"] == "parse_error"


# -- row 19: the control API validates what it is given ---------------------------------------


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        ({"endpoint": "llm_types", "delay": "x"}, "delay"),
        ({"endpoint": "llm_types", "delay": -1}, "delay"),
        ({"endpoint": "llm_types", "status": "500"}, "status"),
        ({"endpoint": "llm_types", "status": 42}, "status"),
        ({"endpoint": "llm_types", "times": 0}, "times"),
        ({"endpoint": "llm_types", "retry_after": "soon"}, "retry_after"),
        ({"endpoint": "llm_types", "headers": {"X": 1}}, "headers"),
        ({"endpoint": "llm_types", "drop": "yes"}, "drop"),
        ({"endpoint": "no_such_endpoint", "status": 500}, "endpoint"),
    ],
)
def test_a_fault_that_could_not_fire_is_refused(
    perso_mock: MockPersoServer, fault: dict[str, object], named: str
) -> None:
    response = requests.post(perso_mock.url + "/_mock/faults", json=fault, timeout=TIMEOUT)
    assert response.status_code == 400
    assert named in first_error(response)["detail"]
    assert perso_mock.faults.armed == []
    assert get(perso_mock, "/api/v1/settings/llm_type/").status_code == 200


@pytest.mark.parametrize(
    ("script", "named"),
    [
        ({"rules": [{"pattern": "(", "reply": "x"}]}, "pattern"),
        ({"rules": [{"pattern": "hi", "times": "twice"}]}, "times"),
        ({"rules": [{"pattern": "hi", "reply": 5}]}, "reply"),
        ({"rules": [{"pattern": "hi", "tool_calls": [{"arguments": {}}]}]}, "name"),
        ({"delay": "x"}, "delay"),
        ({"framing": "smoke-signals"}, "framing"),
        ({"words_per_delta": 0}, "words_per_delta"),
    ],
)
def test_an_llm_script_that_could_not_run_is_refused(
    perso_mock: MockPersoServer, script: dict[str, object], named: str
) -> None:
    sid = _session(perso_mock)
    response = requests.put(perso_mock.url + "/_mock/llm_script", json=script, timeout=TIMEOUT)
    assert response.status_code == 400
    assert named in first_error(response)["detail"]
    answer = post(
        perso_mock,
        f"/api/v1/session/{sid}/llm/v2/",
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200  # the server-wide script was left alone


def test_binding_beyond_loopback_needs_an_explicit_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--allow-remote" in err
    assert "0.0.0.0" in err


def _read_line(stream: IO[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    return lines.get(timeout=timeout)


def test_binding_beyond_loopback_with_the_flag_warns_loudly(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "mock_server", "--host", "0.0.0.0", "--port", "0", "--allow-remote"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert process.stderr is not None
        assert process.stdout is not None
        warning = _read_line(process.stderr, timeout=20)
        assert "WARNING" in warning
        assert "0.0.0.0" in warning
        assert "control API" in warning
        assert _read_line(process.stdout, timeout=20).startswith("Perso mock server on http://")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


# -- the journal's caps -----------------------------------------------------------------------


def test_a_huge_request_body_is_journaled_truncated(perso_mock: MockPersoServer) -> None:
    sid = _session(perso_mock)
    detail = "x" * 5_000_000
    response = post(
        perso_mock,
        f"/api/v1/session/{sid}/event/create/",
        json={"event": "SESSION_LOG", "detail": detail},
    )
    assert response.status_code == 201
    entry = perso_mock.journal.last(endpoint="event")
    assert entry is not None
    limit = perso_mock.journal.max_entry_bytes
    assert entry.body["truncated"] is True
    assert entry.body["size"] > 5_000_000
    assert len(entry.body["head"]) <= limit
    assert len(json.dumps(entry.to_dict())) < 2 * limit
    # The session still recorded the whole event: only the journal's copy is capped.
    assert perso_mock.sessions[sid].events[-1]["detail"] == detail


def test_the_journal_drops_its_oldest_entries_beyond_its_total_budget() -> None:
    journal = Journal(max_entry_bytes=1_000, max_total_bytes=10_000)
    for index in range(100):
        journal.record_datachannel("s1", "message", "in", {"type": "chat", "n": index})
        journal.record_datachannel("s1", "message", "in", {"type": "big", "text": "y" * 5_000})
    kept = journal.entries()
    assert kept[-1].type == "big"  # the newest stay, their type kept when truncated
    assert kept[0].seq > 1  # the oldest went
    assert journal.stored_bytes <= 10_000
    assert sum(1 for e in kept if e.type == "chat") < 100
