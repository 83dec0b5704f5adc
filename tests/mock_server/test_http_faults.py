"""Each HTTP fault the mock can inject, per endpoint and per test."""

from __future__ import annotations

import pytest
import requests
from _http_helpers import create, first_error, get, llm, post, reply_text, sse_events

from mock_server import MockPersoServer


def test_status_with_the_standard_error_body_n_times_then_normal(
    perso_mock: MockPersoServer,
) -> None:
    fault = perso_mock.faults.fail("prompts", 500, times=2)
    for _ in range(2):
        response = get(perso_mock, "/api/v1/prompt/")
        assert response.status_code == 500
        assert response.json()["type"] == "server_error"
    assert get(perso_mock, "/api/v1/prompt/").status_code == 200
    assert fault.hits == 2
    assert not perso_mock.faults.armed


def test_custom_json_body(perso_mock: MockPersoServer) -> None:
    body = {"type": "client_error", "errors": [{"code": "x", "detail": "custom", "attr": "a"}]}
    perso_mock.faults.fail("create_session", 418, body=body)
    response = create(perso_mock)
    assert response.status_code == 418
    assert response.json() == body


def test_html_page_and_empty_body(perso_mock: MockPersoServer) -> None:
    perso_mock.faults.html("documents", 502)
    perso_mock.faults.empty("documents", 504)
    html = get(perso_mock, "/api/v1/document/")
    assert html.status_code == 502
    assert html.text.startswith("<html>")
    assert html.headers["Content-Type"].startswith("text/html")
    empty = get(perso_mock, "/api/v1/document/")
    assert empty.status_code == 504
    assert empty.content == b""


def test_rate_limit_with_retry_after(perso_mock: MockPersoServer) -> None:
    perso_mock.faults.rate_limit("llm_types", retry_after=3)
    response = get(perso_mock, "/api/v1/settings/llm_type/")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert first_error(response)["code"] == "throttled"


def test_delay_then_the_real_answer(perso_mock: MockPersoServer) -> None:
    fault = perso_mock.faults.delay("stt_types", 0.05)
    assert get(perso_mock, "/api/v1/settings/stt_type/").status_code == 200
    assert fault.hits == 1


def test_a_long_delay_is_a_server_that_never_answers(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.faults.delay("exchange", 30)
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{perso_mock.url}/api/v1/session/{session_id}/exchange/",
            json={"client_sdp": {"type": "offer", "sdp": "v=0"}},
            timeout=0.3,
        )


def test_exchange_failing(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.faults.fail("exchange", 503)
    offer = {"client_sdp": {"type": "offer", "sdp": "v=0"}}
    response = post(perso_mock, f"/api/v1/session/{session_id}/exchange/", json=offer)
    assert response.status_code == 503


@pytest.mark.parametrize("endpoint", ["session_info", "prompts"])
def test_connection_dropped_mid_response(perso_mock: MockPersoServer, endpoint: str) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.faults.drop(endpoint)
    path = "/api/v1/prompt/" if endpoint == "prompts" else f"/api/v1/session/{session_id}/"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(perso_mock, path)
    assert get(perso_mock, path).status_code == 200


def test_llm_stream_dropped_mid_way(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.faults.drop("llm")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        llm(perso_mock, session_id, [{"role": "user", "content": "hello"}])


def test_sse_truncated_inside_an_event(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.faults.sse_truncate()
    raw = llm(perso_mock, session_id, [{"role": "user", "content": "hello"}]).content
    *complete, last = raw.split(b"\n")
    assert complete
    assert last.startswith(b"data: {")
    assert not last.endswith(b"}")
    assert b'"done"' not in raw


def test_sse_with_a_garbage_line(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.faults.sse_garbage("<<garbage>>")
    lines = llm(perso_mock, session_id, [{"role": "user", "content": "hello"}]).text.split("\n")
    assert lines[1] == "<<garbage>>"
    assert "You said: hello" in reply_text(sse_events("\n".join(lines[:1] + lines[2:]).encode()))


def test_fault_limited_to_one_session(perso_mock: MockPersoServer) -> None:
    target = create(perso_mock).json()["session_id"]
    other = create(perso_mock).json()["session_id"]
    perso_mock.faults.add("tts", status=500, session_id=target, times=None)
    body = {"text": "Hi."}
    assert post(perso_mock, f"/api/v1/session/{other}/tts/", json=body).status_code == 200
    assert post(perso_mock, f"/api/v1/session/{target}/tts/", json=body).status_code == 500
    assert post(perso_mock, f"/api/v1/session/{target}/tts/", json=body).status_code == 500


def test_wildcard_fault_and_reset_clears_faults(perso_mock: MockPersoServer) -> None:
    perso_mock.faults.fail("*", 503, times=None)
    assert get(perso_mock, "/api/v1/prompt/").status_code == 503
    assert get(perso_mock, "/api/v1/document/").status_code == 503
    perso_mock.reset()
    assert get(perso_mock, "/api/v1/prompt/").status_code == 200


def test_auth_is_checked_before_faults(perso_mock: MockPersoServer) -> None:
    perso_mock.faults.fail("prompts", 500)
    assert get(perso_mock, "/api/v1/prompt/", headers={}).status_code == 401
    assert get(perso_mock, "/api/v1/prompt/").status_code == 500


def test_reset_cancels_a_request_still_waiting_on_a_delay(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.faults.delay("exchange", 30)
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{perso_mock.url}/api/v1/session/{session_id}/exchange/",
            json={"client_sdp": {"type": "offer", "sdp": "v=0"}},
            timeout=0.3,
        )
    assert perso_mock.context.inflight
    perso_mock.reset()
    assert not perso_mock.context.inflight


def test_sse_split_inside_utf8_still_carries_the_same_events(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    message = [{"role": "user", "content": "안녕하세요 여러분"}]
    whole = llm(perso_mock, session_id, message).content
    perso_mock.faults.sse_split()
    assert llm(perso_mock, session_id, message).content == whole
    assert perso_mock.faults.fired[-1][1].sse == "split"
