"""The ``process_llm`` iterator's two readers: ``requests`` (the default transport) and httpx
(a custom ``http_transport``; here httpx's own network transport, so both go over real sockets).
Whichever reads the turn, the request on the wire and what the turn yields are the same.

The mock checks what a client sends (its journal); a tiny loopback server of this file sends
what the mock cannot (a gzip-compressed stream, a stream cut off mid-chunk) and keeps the
request bytes as they came.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import perso_sync as perso
from mock_server import MockPersoServer
from perso_sync import ErrorChunk, LlmProcessor, MessageChunk

pytestmark = pytest.mark.timeout(30)

Make = Callable[..., LlmProcessor]
READERS = ["requests", "httpx"]
EVENTS = [
    b'data: {"status": "success", "type": "message", "content": "w%d "}\n\n' % i for i in range(40)
]


def _reader_options(reader: str) -> dict[str, Any]:
    """The processor options that pick ``reader``."""
    return {} if reader == "requests" else {"http_transport": httpx.HTTPTransport()}


class _CannedServer:
    """Loopback HTTP/1.1: keeps each request as it came (head, body) and answers it with the
    same bytes, then hangs up."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[tuple[bytes, bytes]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536) or b"\r\n\r\n"
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    more = conn.recv(65536)
                    if not more:
                        break
                    body += more
                self.requests.append((head, body))
                with contextlib.suppress(OSError):
                    conn.sendall(self._answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(5)


@contextlib.contextmanager
def _serving(answer: bytes) -> Iterator[_CannedServer]:
    server = _CannedServer(answer)
    try:
        yield server
    finally:
        server.close()


def _answer(chunks: list[bytes], *, gzip: bool = False, complete: bool = True) -> bytes:
    """A chunked SSE answer (``Connection: close``); ``complete=False`` leaves out the last
    chunk, as a server that died mid-stream."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    head += b"Connection: close\r\n"
    if gzip:
        head += b"Content-Encoding: gzip\r\n"
        compressor = zlib.compressobj(wbits=31)  # the gzip container
        # Flushed per event: each one can be decoded as soon as it arrives.
        chunks = [compressor.compress(c) + compressor.flush(zlib.Z_SYNC_FLUSH) for c in chunks]
        chunks.append(compressor.flush())
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return head + b"\r\n" + body + (b"0\r\n\r\n" if complete else b"")


def _turn(url: str, reader: str, message: str = "Hello") -> list[Any]:
    with LlmProcessor(
        api_server=url, session_id="sid", timeout=10.0, **_reader_options(reader)
    ) as processor:
        return list(processor.process_llm(message))


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }


def test_both_readers_send_the_same_bytes_and_headers() -> None:
    with _serving(_answer(EVENTS[:1])) as server:
        for reader in READERS:
            _turn(server.url, reader, 'Hello \u00e9\U0001f600 "quoted"')
    sent = dict(zip(READERS, server.requests, strict=True))
    (req_head, req_body), (httpx_head, httpx_body) = sent["requests"], sent["httpx"]
    assert req_head.split(b"\r\n")[0] == httpx_head.split(b"\r\n")[0]  # POST, path, HTTP/1.1
    assert req_body == httpx_body  # byte for byte
    requests_headers, httpx_headers = _headers(req_head), _headers(httpx_head)
    # The same headers, our own User-Agent (as REST calls send) included.
    assert requests_headers == httpx_headers
    assert requests_headers["user-agent"] == f"perso_sync/{perso.__version__}"
    assert requests_headers["content-type"] == "application/json"
    assert requests_headers["accept"] == "text/event-stream"


def test_both_readers_send_the_request_the_mock_journals_alike(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    bodies, headers = [], []
    for reader in READERS:
        sid = perso_mock.create_session_id()
        processor = make_processor(session_id=sid, **_reader_options(reader))
        chunks = list(processor.process_llm("Hello"))
        assert isinstance(chunks[-1], MessageChunk)
        assert chunks[-1].finish
        (request,) = perso_mock.journal.requests(endpoint="llm", session_id=sid)
        bodies.append(request.body)
        headers.append({k.lower(): v for k, v in request.headers.items()})
    assert bodies[0] == bodies[1]
    for journaled in headers:
        assert journaled["content-type"] == "application/json"
        assert journaled["accept"] == "text/event-stream"
        assert "persolive-apikey" not in journaled  # a session-scoped request carries no key


@pytest.mark.parametrize("reader", READERS)
def test_a_gzip_stream_is_decoded_as_it_arrives(reader: str) -> None:
    with _serving(_answer(EVENTS, gzip=True)) as server:
        chunks = _turn(server.url, reader)
    assert all(isinstance(chunk, MessageChunk) for chunk in chunks)
    assert len(chunks) == len(EVENTS) + 1  # one per event, then the finish
    assert chunks[-1].finish
    assert chunks[-1].message == "".join(f"w{i} " for i in range(len(EVENTS)))


def _failure(chunks: list[Any]) -> perso.PersoError:
    assert isinstance(chunks[-1], ErrorChunk)
    underlying = chunks[-1].error.underlying_error
    assert isinstance(underlying, perso.PersoError)
    return underlying


def _kind(error: perso.PersoError) -> str:
    """``"LLM request failed: Kind"`` of ``"LLM request failed: Kind: detail"``."""
    return ":".join(str(error).split(":")[:2])


def test_a_stream_cut_off_mid_way_fails_alike_through_both_readers() -> None:
    errors = []
    for reader in READERS:
        with _serving(_answer(EVENTS[:3], complete=False)) as server:
            chunks = _turn(server.url, reader)
        assert [c.message for c in chunks[:3]] == ["w0 ", "w0 w1 ", "w0 w1 w2 "]
        errors.append(_failure(chunks))
    assert all(isinstance(error, perso.PersoConnectionError) for error in errors)
    assert _kind(errors[0]) == _kind(errors[1]) == "LLM request failed: RemoteProtocolError"


def test_a_refused_connection_fails_alike_through_both_readers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        url = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
    # The port is free again: nothing listens there now.
    errors = [_failure(_turn(url, reader)) for reader in READERS]
    assert all(isinstance(error, perso.PersoConnectionError) for error in errors)
    assert _kind(errors[0]) == _kind(errors[1]) == "LLM request failed: ConnectError"
