"""The ``process_llm`` iterator reads on the caller's thread: what ends a turn from elsewhere
(abort, ``close()`` from another thread, the deadlines, garbage collection) still ends it while
the reader is blocked in a socket read or waits for a tool round, and closes its connection.

The servers are the raw-socket ones of ``test_llm_deadlines`` (they count the connections the
client still holds) or the mock for tool calls.
"""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from _reliability import main_thread_blocked_in
from _wait import wait_until
from test_llm_deadlines import PACE, HostileLlmServer

import perso_sync
from mock_server import LlmScript, MockPersoServer, Rule, ToolCall
from perso_sync import ChatTool, ErrorChunk, MessageChunk, ToolCallChunk
from perso_sync._runtime import get_runtime

pytestmark = pytest.mark.timeout(30)

FIRST = b'data: {"status": "success", "type": "message", "content": "first "}\n'


def _one_delta_then_keep_alive(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(FIRST)
    while not stop.wait(PACE):
        conn.sendall(b": keep-alive\n\n")


def _one_delta_then_silence(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(FIRST)
    _silence(conn, stop)


def _drip_one_byte_at_a_time(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b'data: {"status": "success", "type": "message", "content": "')
    while not stop.wait(PACE):
        conn.sendall(b"a")


def _silence(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(PACE)  # to look at `stop` now and then
    while not stop.is_set():
        try:
            if not conn.recv(1024):
                return  # the client hung up
        except TimeoutError:
            continue


@pytest.fixture
def server(request: pytest.FixtureRequest, no_leaks: Any) -> Iterator[HostileLlmServer]:
    hostile = HostileLlmServer(getattr(request, "param", _one_delta_then_keep_alive))
    yield hostile
    hostile.close()


@pytest.fixture
def headless_server(no_leaks: Any) -> Iterator[HostileLlmServer]:
    """Takes the request and never answers, not even the status line."""
    hostile = HostileLlmServer(_silence, head=b"")
    yield hostile
    hostile.close()


def _processor(url: str, **kwargs: Any) -> perso_sync.LlmProcessor:
    kwargs.setdefault("timeout", None)
    kwargs.setdefault("turn_timeout", None)
    return perso_sync.LlmProcessor(api_server=url, session_id="sid", **kwargs)


def _in_a_thread_once(condition: Any, action: Any) -> threading.Thread:
    def run() -> None:
        wait_until(condition, timeout=10, what="the reader to be blocked")
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_abort_from_another_thread_while_blocked_in_the_read(server: HostileLlmServer) -> None:
    signal_ = perso_sync.AbortSignal()
    with _processor(server.url) as processor, processor.process_llm("hi", abort=signal_) as stream:
        first = next(stream)
        # The server now sends keep-alives only: the next read blocks until the abort.
        aborter = _in_a_thread_once(lambda: server.requests == 1, signal_.abort)
        rest = list(stream)
        aborter.join(5)
    assert isinstance(first, MessageChunk)
    assert first.message == "first "
    assert len(rest) == 1
    final = rest[0]
    assert isinstance(final, MessageChunk)
    assert final.finish
    assert final.message == "first "
    assert processor.get_history() == []
    wait_until(lambda: server.open_connections == 0, what="the connection closed")


@pytest.mark.parametrize("server", [_one_delta_then_silence], indirect=True)
def test_abort_wakes_a_read_of_a_silent_stream_whose_connection_is_not_kept(
    server: HostileLlmServer,
) -> None:
    # "Connection: close": the pool lets go of the connection once the headers came, so the
    # socket to shut must be known from the response; nothing else would wake this read.
    signal_ = perso_sync.AbortSignal()
    with _processor(server.url) as processor, processor.process_llm("hi", abort=signal_) as stream:
        assert next(stream).type == "message"
        reading = "test_abort_wakes_a_read_of_a_silent_stream_whose_connection_is_not_kept"
        aborter = _in_a_thread_once(
            lambda: main_thread_blocked_in("readinto", reading), signal_.abort
        )
        rest = list(stream)
        aborter.join(5)
    assert [chunk.finish for chunk in rest] == [True]
    wait_until(lambda: server.open_connections == 0, what="the connection closed")


def test_close_from_another_thread_while_blocked_in_the_read(server: HostileLlmServer) -> None:
    with _processor(server.url) as processor:
        stream = processor.process_llm("hi")
        assert next(stream).type == "message"
        closer = _in_a_thread_once(lambda: server.requests == 1, stream.close)
        assert list(stream) == []  # the turn just ends, as when the stream is closed
        closer.join(5)
        assert processor.get_history() == []
    wait_until(lambda: server.open_connections == 0, what="the connection closed")


def test_an_unfinished_stream_collected_closes_its_connection(server: HostileLlmServer) -> None:
    with _processor(server.url) as processor:
        stream = processor.process_llm("hi")
        assert next(stream).type == "message"
        assert server.open_connections == 1
        del stream
        gc.collect()
        wait_until(lambda: server.open_connections == 0, what="the connection closed")


@pytest.mark.parametrize("server", [_drip_one_byte_at_a_time], indirect=True)
def test_the_idle_watch_is_looked_at_per_idle_period_not_per_byte(
    server: HostileLlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perso_sync import _llm_caller

    looks: list[float] = []
    expire = _llm_caller._TurnWatch.expire

    def counted(watch: Any, now: float) -> float | None:
        looks.append(now)
        return expire(watch, now)

    monkeypatch.setattr(_llm_caller._TurnWatch, "expire", counted)
    with _processor(server.url, timeout=1.0) as processor:
        chunks = list(processor.process_llm("hi"))
    assert isinstance(chunks[-1], ErrorChunk)
    assert "idle" in str(chunks[-1].error)
    # About 20 bytes came within the idle second; the watch was looked at when it was due.
    assert 1 <= len(looks) <= 3, looks


def test_abort_while_a_tool_runs(perso_mock: MockPersoServer, no_leaks: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.set_llm_script(
        sid,
        LlmScript(rules=[Rule(pattern="lights", reply="", tool_calls=[ToolCall(name="lights")])]),
    )
    started, release = threading.Event(), threading.Event()

    def lights(args: dict[str, Any]) -> Any:
        started.set()
        release.wait(10)  # bounded: the test releases it at the end
        return {"ok": True}

    tool = ChatTool("lights", "switch the lights", {"type": "object"}, lights)
    signal_ = perso_sync.AbortSignal()
    try:
        with perso_sync.LlmProcessor(
            api_server=perso_mock.url, session_id=sid, client_tools=[tool]
        ) as processor:
            aborter = _in_a_thread_once(started.is_set, signal_.abort)
            chunks = list(processor.process_llm("lights please", abort=signal_))
            aborter.join(5)
            assert not release.is_set()  # the turn ended while the tool still ran
            assert [type(c) for c in chunks] == [ToolCallChunk]
            assert processor.get_history() == []
            assert len(perso_mock.journal.requests(endpoint="llm", session_id=sid)) == 1
    finally:
        release.set()


def test_the_turn_timeout_ends_a_tool_round(perso_mock: MockPersoServer, no_leaks: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.set_llm_script(
        sid,
        LlmScript(rules=[Rule(pattern="lights", reply="", tool_calls=[ToolCall(name="lights")])]),
    )
    release = threading.Event()
    tool = ChatTool(
        "lights", "switch the lights", {"type": "object"}, lambda args: release.wait(10)
    )
    try:
        with perso_sync.LlmProcessor(
            api_server=perso_mock.url, session_id=sid, client_tools=[tool], turn_timeout=1.0
        ) as processor:
            chunks = list(processor.process_llm("lights please"))
        assert not release.is_set()
        error = chunks[-1]
        assert isinstance(error, ErrorChunk)
        assert isinstance(error.error.underlying_error, perso_sync.PersoTimeoutError)
        assert "turn took longer" in str(error.error)
    finally:
        release.set()


def test_the_stream_flows_while_the_runtime_loop_is_busy(
    perso_mock: MockPersoServer, no_leaks: Any
) -> None:
    # The reader never waits for the loop: a turn without tools or callbacks streams to its end
    # while the loop is held up by other work.
    sid = perso_mock.create_session_id()
    runtime = get_runtime()
    loop_busy, release = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        loop_busy.set()
        release.wait(10)  # bounded: released below

    runtime.call_soon_threadsafe(hold_the_loop)
    try:
        assert loop_busy.wait(5)
        with perso_sync.LlmProcessor(api_server=perso_mock.url, session_id=sid) as processor:
            chunks = list(processor.process_llm("hello while busy"))
        assert not release.is_set()
        final = chunks[-1]
        assert isinstance(final, MessageChunk)
        assert final.finish
        assert final.message.endswith("You said: hello while busy")
    finally:
        release.set()


def test_abort_while_waiting_for_the_response_headers(headless_server: HostileLlmServer) -> None:
    signal_ = perso_sync.AbortSignal()
    with _processor(headless_server.url) as processor:
        aborter = _in_a_thread_once(lambda: headless_server.requests == 1, signal_.abort)
        assert list(processor.process_llm("hi", abort=signal_)) == []  # no text: no chunk
        aborter.join(5)
    wait_until(lambda: headless_server.open_connections == 0, what="the connection closed")


def test_the_turn_timeout_while_waiting_for_the_response_headers(
    headless_server: HostileLlmServer,
) -> None:
    # No idle timeout, so nothing but the turn deadline bounds the wait for the status line.
    with _processor(headless_server.url, turn_timeout=1.0) as processor:
        chunks = list(processor.process_llm("hi"))
    assert len(chunks) == 1
    assert isinstance(chunks[0], ErrorChunk)
    assert "turn took longer" in str(chunks[0].error)
    wait_until(lambda: headless_server.open_connections == 0, what="the connection closed")


def test_an_abort_landing_as_a_stream_ends_spares_the_next_turn_on_its_connection(
    perso_mock: MockPersoServer, no_leaks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The end of turn A's body hands its connection back to the pool; turn B (another thread)
    # takes it and reads its own stream on it. An abort of A landing right then must not shut
    # the socket B now reads from. The pool's hand-back is where the test steps in: it starts
    # B, waits until B's request is out, then aborts A, all before A's read returns.
    import urllib3

    sid = perso_mock.create_session_id()
    perso_mock.set_llm_script(sid, LlmScript(delay=0.05))  # B's answer takes a while
    abort_a = perso_sync.AbortSignal()
    b_chunks: list[Any] = []
    b_threads: list[threading.Thread] = []
    put_conn = urllib3.HTTPConnectionPool._put_conn

    def turn_b() -> None:
        with perso_sync.LlmProcessor(api_server=perso_mock.url, session_id=sid) as processor:
            b_chunks.extend(processor.process_llm("second turn"))

    def hand_back_then_race(pool: Any, conn: Any) -> None:
        put_conn(pool, conn)
        if b_threads:
            return
        b_threads.append(threading.Thread(target=turn_b))
        b_threads[0].start()
        wait_until(lambda: len(perso_mock.journal.requests(endpoint="llm", session_id=sid)) == 2)
        abort_a.abort()

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "_put_conn", hand_back_then_race)
    with perso_sync.LlmProcessor(api_server=perso_mock.url, session_id=sid) as processor:
        list(processor.process_llm("first turn", abort=abort_a))
    assert b_threads, "turn A never handed its connection back"
    b_threads[0].join(10)
    assert not b_threads[0].is_alive()
    assert not any(isinstance(chunk, ErrorChunk) for chunk in b_chunks), b_chunks
    final = b_chunks[-1]
    assert isinstance(final, MessageChunk)
    assert final.finish
    assert final.message.endswith("You said: second turn")
