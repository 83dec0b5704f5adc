"""LLM turns against a server that never finishes: every turn ends within its documented
deadlines, the idle one (no *event* for ``timeout`` seconds, whatever bytes arrive) and the
whole-turn one (``turn_timeout``), with an ``LLMError`` wrapping ``PersoTimeoutError``.

The hostile servers are tiny raw-socket HTTP servers in this file: they answer ``200
text/event-stream`` and then keep the connection busy forever in one of three ways.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import perso_sync

pytestmark = pytest.mark.timeout(30)

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\n"
)
PACE = 0.05  # seconds between two writes of the hostile server


def _keep_alive_comments(conn: socket.socket, stop: threading.Event) -> None:
    while not stop.wait(PACE):
        conn.sendall(b": keep-alive\n\n")


def _drip_one_byte_at_a_time(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b'data: {"status": "success", "type": "message", "content": "')
    while not stop.wait(PACE):
        conn.sendall(b"a")  # never a closing quote, never a newline: no event ever completes


def _text_deltas_forever(conn: socket.socket, stop: threading.Event) -> None:
    while not stop.wait(PACE):
        conn.sendall(b'data: {"status": "success", "type": "message", "content": "more "}\n')


Behaviour = Callable[[socket.socket, threading.Event], None]


class HostileLlmServer:
    """Accepts connections on loopback; reads each request, answers with ``HEAD``, then runs
    ``behaviour`` until the client hangs up or the server stops."""

    def __init__(self, behaviour: Behaviour, head: bytes = HEAD) -> None:
        self._behaviour = behaviour
        self._head = head  # b"": the answer never even begins
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self.requests = 0
        self.open_connections = 0  # requests answered whose connection the client still holds
        self._count_lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # the listener closed
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._read_request(conn)
            except OSError:
                return
            with self._count_lock:
                self.requests += 1
                self.open_connections += 1
            try:
                conn.sendall(self._head)
                self._behaviour(conn, self._stop)
            except OSError:  # the client hung up: what we are waiting for
                pass
            finally:
                with self._count_lock:
                    self.open_connections -= 1

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536) or b"\r\n\r\n"
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def hostile_server(request: pytest.FixtureRequest, no_leaks: Any) -> Iterator[HostileLlmServer]:
    # no_leaks: a turn ended by a deadline must still close its connection.
    server = HostileLlmServer(request.param)
    yield server
    server.close()


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, perso_sync.LLMError) and isinstance(
        error.underlying_error, perso_sync.PersoTimeoutError
    )


@pytest.mark.parametrize(
    "hostile_server", [_keep_alive_comments, _drip_one_byte_at_a_time], indirect=True
)
def test_process_llm_ends_at_the_idle_timeout_when_no_event_ever_completes(
    hostile_server: HostileLlmServer,
) -> None:
    with (
        perso_sync.LlmProcessor(
            api_server=hostile_server.url, session_id="sid", timeout=1.0
        ) as processor,
        processor.process_llm("hello") as stream,
    ):
        chunks = list(stream)
    assert chunks[-1].type == "error", chunks
    assert _timed_out(chunks[-1].error)
    assert "idle" in str(chunks[-1].error)
    assert processor.get_history() == []


@pytest.mark.parametrize("hostile_server", [_text_deltas_forever], indirect=True)
def test_process_llm_ends_at_the_turn_timeout_when_text_keeps_coming(
    hostile_server: HostileLlmServer,
) -> None:
    with (
        perso_sync.LlmProcessor(
            api_server=hostile_server.url, session_id="sid", timeout=1.0, turn_timeout=2.0
        ) as processor,
        processor.process_llm("hello") as stream,
    ):
        chunks = list(stream)
    assert chunks[-1].type == "error", chunks
    assert _timed_out(chunks[-1].error)
    assert any(chunk.type == "message" for chunk in chunks)  # what came, came
    assert processor.get_history() == []


@pytest.mark.parametrize(
    "hostile_server",
    [_keep_alive_comments, _drip_one_byte_at_a_time, _text_deltas_forever],
    indirect=True,
)
def test_process_chat_raises_a_timeout_llm_error_and_reports_it(
    hostile_server: HostileLlmServer,
) -> None:
    reported: list[BaseException] = []
    callbacks = perso_sync.LlmProcessorCallbacks(on_error=reported.append)
    with perso_sync.LlmProcessor(
        api_server=hostile_server.url,
        session_id="sid",
        timeout=1.0,
        turn_timeout=2.0,
        callbacks=callbacks,
    ) as processor:
        with pytest.raises(perso_sync.LLMError) as raised:
            processor.process_chat("hello")
        assert _timed_out(raised.value)
        assert processor.get_history() == []


@pytest.mark.parametrize("hostile_server", [_text_deltas_forever], indirect=True)
def test_process_chat_call_timeout_bounds_the_call(hostile_server: HostileLlmServer) -> None:
    with (
        perso_sync.LlmProcessor(
            api_server=hostile_server.url, session_id="sid", timeout=None, turn_timeout=None
        ) as processor,
        pytest.raises(perso_sync.PersoTimeoutError),
    ):
        processor.process_chat("hello", timeout=1.0)
