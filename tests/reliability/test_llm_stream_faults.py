"""The LLM stream against a misbehaving server: the turn ends in an ``ErrorChunk`` /
``LLMError`` naming what went wrong, never a hang or a raw exception, and leaks nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _wait import wait_until

import perso_sync
from mock_server import MockPersoServer

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def processor(perso_mock: MockPersoServer, no_leaks: Any) -> Iterator[perso_sync.LlmProcessor]:
    sid = perso_mock.create_session_id()
    with perso_sync.LlmProcessor(api_server=perso_mock.url, session_id=sid, timeout=5.0) as made:
        yield made


def _turn(processor: perso_sync.LlmProcessor, message: str = "hello") -> list[Any]:
    with processor.process_llm(message) as stream:
        return list(stream)


def _only_error(chunks: list[Any]) -> perso_sync.LLMError:
    errors = [c for c in chunks if c.type == "error"]
    assert len(errors) == 1, chunks
    assert chunks[-1] is errors[0]  # the error ends the turn
    assert isinstance(errors[0].error, perso_sync.LLMError)
    return errors[0].error


def test_stream_cut_mid_event(perso_mock: MockPersoServer, processor: Any) -> None:
    perso_mock.faults.sse_truncate()
    chunks = _turn(processor)
    error = _only_error(chunks)
    assert isinstance(error.underlying_error, perso_sync.LLMStreamingResponseError)
    assert [c.type for c in chunks[:-1]] == ["message"] * (len(chunks) - 1)  # what came, came
    assert processor.get_history() == []  # a failed turn keeps no history
    assert _turn(processor)[-1].type == "message"  # the next turn works


def test_connection_dropped_mid_stream(perso_mock: MockPersoServer, processor: Any) -> None:
    perso_mock.faults.drop("llm")
    error = _only_error(_turn(processor))
    assert isinstance(error.underlying_error, perso_sync.PersoConnectionError)
    assert _turn(processor)[-1].type == "message"


@pytest.mark.parametrize(
    "junk",
    ["this line is not server-sent events", "data: {not json", "data: [1, 2", "\x00\xff garbage"],
)
def test_garbage_line(perso_mock: MockPersoServer, processor: Any, junk: str) -> None:
    perso_mock.faults.sse_garbage(junk)
    error = _only_error(_turn(processor))
    assert isinstance(error.underlying_error, perso_sync.LLMStreamingResponseError)


def test_error_status_before_the_stream(perso_mock: MockPersoServer, processor: Any) -> None:
    perso_mock.faults.html("llm", 502)
    error = _only_error(_turn(processor))
    assert isinstance(error.underlying_error, perso_sync.ApiError)
    assert error.underlying_error.error_code == 502


def test_silent_server_is_a_timeout(perso_mock: MockPersoServer, no_leaks: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.delay("llm", 30)
    with perso_sync.LlmProcessor(api_server=perso_mock.url, session_id=sid, timeout=0.5) as slow:
        error = _only_error(_turn(slow))
    assert isinstance(error.underlying_error, perso_sync.PersoTimeoutError)


@pytest.fixture
def rest_only_session(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> Iterator[Callable[[], perso_sync.Session]]:
    opened: list[perso_sync.Session] = []

    def make() -> perso_sync.Session:
        sid = perso_mock.create_session_id(using_stf_webrtc=False)
        session = client.create_session(sid, width=64, height=48)
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.stop_session()


def test_process_chat_raises_llm_error_and_reports_it(
    perso_mock: MockPersoServer, rest_only_session: Any
) -> None:
    session = rest_only_session()
    reported: list[BaseException] = []
    session.set_error_handler(reported.append)
    perso_mock.faults.sse_garbage()

    with pytest.raises(perso_sync.LLMError) as raised:
        session.process_chat("hello")

    assert isinstance(raised.value.underlying_error, perso_sync.LLMStreamingResponseError)
    assert session.process_chat("hello again")  # the session is still usable
    assert not session.closed
    wait_until(lambda: reported, what="the error handler")
    assert reported == [raised.value]
