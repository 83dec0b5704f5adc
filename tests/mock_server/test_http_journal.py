"""The journal (key redacted) and the control API over HTTP."""

from __future__ import annotations

import requests
from _http_helpers import TIMEOUT, create, get, llm, post, reply_text, sse_events

from mock_server import MockPersoServer


def test_every_request_is_journaled_with_the_key_redacted(perso_mock: MockPersoServer) -> None:
    get(perso_mock, "/api/v1/settings/modelstyle/?platform_type=webrtc")
    get(perso_mock, "/api/v1/prompt/", headers={"PersoLive-APIKey": "wrong"})
    session_id = create(perso_mock, prompt="prompt-tutor").json()["session_id"]
    styles, wrong, created = perso_mock.journal.requests()
    assert (styles.method, styles.path, styles.query) == (
        "GET",
        "/api/v1/settings/modelstyle/",
        {"platform_type": "webrtc"},
    )
    assert styles.headers["PersoLive-APIKey"] == "***"
    assert styles.status == 200
    assert wrong.headers["PersoLive-APIKey"] == "***"
    assert wrong.status == 401
    assert created.endpoint == "create_session"
    assert created.status == 201
    assert created.body["prompt"] == "prompt-tutor"
    everything = repr(perso_mock.journal.to_list())
    assert perso_mock.api_key not in everything
    assert "wrong" not in everything
    assert perso_mock.journal.last(endpoint="create_session") == created
    assert session_id


def test_the_key_is_redacted_wherever_it_appears(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    post(
        perso_mock,
        f"/api/v1/session/{session_id}/event/create/?k={perso_mock.api_key}",
        json={"event": "SESSION_LOG", "detail": f"my key is {perso_mock.api_key}"},
    )
    entry = perso_mock.journal.last(endpoint="event")
    assert entry is not None
    assert entry.query == {"k": "***"}
    assert entry.body["detail"] == "my key is ***"


def test_multipart_body_is_summarized(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    post(
        perso_mock,
        f"/api/v1/session/{session_id}/stt/",
        files={"audio": ("audio.wav", b"RIFF....", "audio/wav")},
        data={"language": "ko"},
    )
    entry = perso_mock.journal.last(endpoint="stt", session_id=session_id)
    assert entry is not None
    assert entry.body == {
        "fields": {"language": "ko"},
        "files": {"audio": {"filename": "audio.wav", "content_type": "audio/wav", "size": 8}},
    }
    assert entry.status == 400


def test_data_channel_messages_are_journaled_and_awaitable(perso_mock: MockPersoServer) -> None:
    # The WebRTC answerer reports messages through this callback.
    session_id = create(perso_mock).json()["session_id"]
    ctx = perso_mock.context
    ctx.on_datachannel_message(session_id, "message", "in", '{"type": "ttstf", "data": {}}')
    ctx.on_datachannel_message(session_id, "file", "in", b"\x00" * 10)
    found = perso_mock.journal.wait_for(kind="datachannel", type="ttstf", timeout=1)
    assert found.direction == "in"
    assert found.payload == {"type": "ttstf", "data": {}}
    assert perso_mock.journal.messages(channel="file")[0].payload == {"binary": 10}


def test_control_api_over_http(perso_mock: MockPersoServer) -> None:
    base = perso_mock.url + "/_mock"
    session_id = create(perso_mock).json()["session_id"]
    script = {
        "session_id": session_id,
        "rules": [{"pattern": "ping", "reply": "pong pong pong"}],
        "delay": 0,
    }
    assert requests.put(base + "/llm_script", json=script, timeout=TIMEOUT).ok
    events = sse_events(llm(perso_mock, session_id, [{"role": "user", "content": "ping"}]).content)
    assert reply_text(events) == "pong pong pong"
    fault = {"endpoint": "prompts", "status": 503, "times": 1}
    assert requests.post(base + "/faults", json=fault, timeout=TIMEOUT).status_code == 201
    assert get(perso_mock, "/api/v1/prompt/").status_code == 503
    journal = requests.get(base + "/journal", timeout=TIMEOUT).json()
    assert [e["endpoint"] for e in journal][-1] == "prompts"
    sessions = requests.get(base + "/sessions", timeout=TIMEOUT).json()
    assert sessions[0]["session_id"] == session_id
    catalog = {"prompts": [{"prompt_id": "only", "name": "Only", "system_prompt": "-"}]}
    assert requests.put(base + "/catalog", json=catalog, timeout=TIMEOUT).ok
    assert [p["prompt_id"] for p in get(perso_mock, "/api/v1/prompt/").json()] == ["only"]
    assert requests.post(base + "/reset", timeout=TIMEOUT).ok
    assert len(get(perso_mock, "/api/v1/prompt/").json()) == 3
    assert len(perso_mock.sessions) == 0


def test_journal_keeps_the_latest_entries_when_full() -> None:
    from mock_server.journal import Journal

    journal = Journal(max_entries=3)
    for index in range(5):
        journal.record_datachannel("s", "message", "out", {"type": "ping", "n": index})
    assert [entry.payload["n"] for entry in journal] == [2, 3, 4]
