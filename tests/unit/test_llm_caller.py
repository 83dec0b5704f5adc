"""The caller-side LLM engine's pieces that need no server: the turn watch's decisions (times
passed in) and which transport serves which kind of turn."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest

import perso_sync
from perso_sync import _deadlines
from perso_sync._llm_caller import _TurnWatch


@pytest.fixture
def unwatched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, float]]:
    """The deadline thread's heap, replaced by a list: each test drives expire() itself."""
    armed: list[tuple[object, float]] = []
    monkeypatch.setattr(_deadlines, "watch", lambda entry, when: armed.append((entry, when)))
    monkeypatch.setattr(_deadlines, "forget", lambda: None)
    return armed


def test_the_idle_watch_re_arms_from_when_the_current_read_began(
    unwatched: list[tuple[object, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.monotonic", lambda: 100.0)
    watch = _TurnWatch(idle=5.0, turn_timeout=None)
    watch.start()
    assert unwatched == [(watch, 105.0)]
    watch.reading_since = 103.0  # a read began after the first one's events
    assert watch.expire(105.0) == 108.0  # not due yet: look again when it could be
    assert watch.ended is None
    watch.reading_since = None  # the user holds the chunks: no idle clock
    assert watch.expire(108.0) == 113.0
    assert watch.ended is None
    watch.reading_since = 109.0
    assert watch.expire(114.0) is None  # five seconds without an event
    assert watch.ended == "idle"


def test_the_turn_deadline_comes_first_when_it_is_earlier(
    unwatched: list[tuple[object, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.monotonic", lambda: 0.0)
    watch = _TurnWatch(idle=5.0, turn_timeout=7.0)
    watch.start()
    watch.reading_since = 4.0
    assert watch.expire(5.0) == 7.0
    assert watch.expire(7.0) is None
    assert watch.ended == "turn"


def test_no_deadline_no_entry_and_a_finished_watch_is_dropped(
    unwatched: list[tuple[object, float]],
) -> None:
    watch = _TurnWatch(idle=None, turn_timeout=None)
    watch.start()
    assert unwatched == []
    timed = _TurnWatch(idle=1.0, turn_timeout=None)
    timed.start()
    assert timed.finish()
    assert not timed.finish()  # once
    assert timed.expire(1e9) is None
    timed.cut("aborted")
    assert timed.ended is None  # nothing to cut once over


def test_a_cut_wakes_a_reader_blocked_on_the_socket_in_another_thread(
    unwatched: list[tuple[object, float]],
) -> None:
    left, right = socket.socketpair()
    with left, right:
        watch = _TurnWatch(idle=None, turn_timeout=None)
        watch.attach_socket(left)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(left.recv(10)))
        reader.start()
        watch.cut("aborted")
        reader.join(5)
        assert not reader.is_alive()
        assert got == [b""]  # woken as at the end of the stream
        assert watch.ended == "aborted"


def test_a_cut_before_the_socket_is_known_shuts_it_when_it_is(
    unwatched: list[tuple[object, float]],
) -> None:
    left, right = socket.socketpair()
    with left, right:
        watch = _TurnWatch(idle=None, turn_timeout=None)
        watch.cut("aborted")
        watch.attach_socket(left)
        assert left.recv(10) == b""


def _handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b'data: {"status": "success", "type": "message"}\n')


class _AsyncOnly(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return _handler(request)


class _SyncOnly(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return _handler(request)


def _processor(transport: Any) -> perso_sync.LlmProcessor:
    return perso_sync.LlmProcessor(
        api_server="http://llm.invalid", session_id="sid", http_transport=transport
    )


def test_an_async_only_transport_refuses_process_llm_and_serves_process_chat() -> None:
    with _processor(_AsyncOnly()) as processor:
        with pytest.raises(perso_sync.InvalidInputError, match="no sync side"):
            processor.process_llm("hi")
        assert processor.process_chat("hi", timeout=10) == ""


def test_a_sync_only_transport_serves_process_llm_and_refuses_process_chat() -> None:
    with _processor(_SyncOnly()) as processor:
        chunks = list(processor.process_llm("hi"))
        assert chunks[-1].type == "message"
        assert chunks[-1].finish
        with pytest.raises(perso_sync.InvalidInputError, match="no async side"):
            processor.process_chat("hi", timeout=10)


def test_a_transport_of_neither_kind_is_refused() -> None:
    with pytest.raises(perso_sync.InvalidInputError, match="http_transport"):
        _processor(object())
