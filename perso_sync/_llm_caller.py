"""The caller-side LLM turn engine: the ``process_llm`` iterator reads its stream ON the caller's
thread, with ``requests`` (sync httpx over a processor's custom ``http_transport``).

A turn is a generator run by the thread that iterates the stream: it sends the request, reads
the response (one blocking read per network chunk), feeds ``_sse.SseParser`` and
``_llm_turn.LlmTurn`` (through ``_llm_common.TurnProgress``) and yields each step's chunks
directly: no loop hop per read and no queue, so a turn streams at the speed of a bare sync
reader. Only a tool round crosses into the runtime: it is submitted to the loop as a whole
(``_llm_loop.run_tool_round``: async tools as tasks, sync tools on the tool workers, all at
once) and the caller blocks on it.

What ends a turn from another thread goes through its :class:`_TurnWatch`: ``AbortSignal.abort()``
(any thread), ``LlmStream.close()`` from a thread other than the reader's, and the two deadlines,
kept by the process's one deadline thread (``_deadlines``). A blocked socket read cannot see any
of them by itself, so the watch shuts the response's socket down (``socket.shutdown`` wakes a
reader blocked in another thread; ``close()`` would not) or cancels the tool round being waited
on; the reader then sees why it was woken. The idle watch is one heap entry per turn that looks
again at "when the current read began" (no timer per read): bytes that complete no event are no
progress, and the idle clock runs only while the turn waits for the network, not while the user
holds a chunk. Ctrl-C in the reading thread interrupts the read itself; ``break``, ``close()``,
the ``with`` block and garbage collection close the generator, whose ``finally`` closes the
response (so its connection) and ends the turn.

Readers: the turn sees its response through one small interface (:class:`_Reader`: status and
content type, ``read()`` as bytes arrive, the failures it raises, ``close()``), so the turn's
logic exists once. By default (:class:`_RequestsReader`) one process-wide ``requests.Session``
(rebuilt in a forked child: the parent's connections are not ours) sends the request and the
body is read with urllib3's ``read1``, which hands over whatever has arrived (no waiting for a
full buffer; gzip decoded) while http.client undoes the chunked framing in C: a sync httpx
reader cost more per HTTP chunk (h11, httpcore, httpx) than the whole turn's parsing. The
session's pools (``_http_watch.connection_watched``) hand the turn's watch the connection as soon as
the pool gives it out, so even the wait for the response headers can be cut, and the socket the
body comes on is taken from the response (a connection not kept alive gives it up there). A
processor with a custom transport reads with its own sync httpx client over it
(:class:`_HttpxReader`; a mock transport has no socket: a cut is then seen after the read under
way returns). The session's LLM state listener still runs on the runtime loop (posted there at
the turn's start and end).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from perso_sync import _deadlines
from perso_sync._llm_common import (
    ERROR_BODY_LIMIT,
    REQUEST_HEADERS,
    TurnProgress,
    api_error,
    check_transport_side,
    connect_timeout,
    map_requests_error,
    map_transport_error,
    request_timeout,
)
from perso_sync._llm_turn import Failed, LlmChunk, TurnStep
from perso_sync._sse import SseParser
from perso_sync._validate import refuse_loop_thread
from perso_sync.errors import LLMError, PersoError, RuntimeUsageError
from perso_sync.models import ChatState

if TYPE_CHECKING:
    import httpx
    import requests

    from perso_sync.llm import AbortSignal, LlmProcessor

__all__ = ["CallerStream", "sync_client"]

# Why a turn was cut off from another thread.
_ABORTED, _CLOSED, _IDLE, _TURN = "aborted", "closed", "idle", "turn"

_NO_SOCKET_YET_RETRY = 0.05  # seconds: a cut connection still connecting is looked at again


class _TurnWatch:
    """Ends one caller-thread turn from another thread (abort, close, the deadline thread)."""

    def __init__(self, idle: float | None, turn_timeout: float | None) -> None:
        self.ended: str | None = None  # why the turn was cut off; read by the reader
        self.reading_since: float | None = None  # when the current wait for an event began
        self._idle = idle
        self._turn_timeout = turn_timeout
        self._turn_deadline = math.inf
        self._lock = threading.Lock()
        self._sock: object = None
        self._connection: Any = None  # urllib3's: its socket exists once it connected
        self._tools: concurrent.futures.Future[Any] | None = None
        self._watched = False
        self._finished = False

    def start(self) -> None:
        """The turn begins: arm its deadlines (one heap entry, re-armed by :meth:`expire`)."""
        now = time.monotonic()
        if self._turn_timeout is not None:
            self._turn_deadline = now + self._turn_timeout
        first = min(self._turn_deadline, math.inf if self._idle is None else now + self._idle)
        if first < math.inf:
            self._watched = True
            _deadlines.watch(self, first)

    @property
    def finished(self) -> bool:
        return self._finished

    def finish(self) -> bool:
        """The turn is over: nothing to cut any more. True the first time only."""
        with self._lock:
            if self._finished:
                return False
            self._finished = True
            self._sock = self._connection = self._tools = None
        if self._watched:
            _deadlines.forget()
        return True

    def expire(self, now: float) -> float | None:
        # The deadline thread. The idle deadline counts from when the current read began: when
        # no read is under way, or one began since, look again when it could be due.
        if self._finished:
            return None
        if self.ended is not None:  # cut while its connection was still connecting
            return None if self._shut() else now + _NO_SOCKET_YET_RETRY
        if now >= self._turn_deadline:
            self.cut(_TURN)
            return None
        idle, since = self._idle, self.reading_since
        if idle is None:
            return self._turn_deadline
        if since is not None and now >= since + idle:
            self.cut(_IDLE)
            return None
        return min(self._turn_deadline, (now if since is None else since) + idle)

    def cut(self, why: str) -> None:
        """End the turn for ``why`` (any thread): wake its blocked read or tool round."""
        with self._lock:
            if self.ended is not None or self._finished:
                return
            self.ended = why
            tools = self._tools
        if not self._shut():
            # The connection is not connected yet: look again shortly (the deadline thread).
            _deadlines.watch(self, time.monotonic() + _NO_SOCKET_YET_RETRY)
        if tools is not None:
            tools.cancel()

    def _shut(self) -> bool:
        """Shut the turn's socket down; False while its connection has none yet.

        Under the lock, as :meth:`detach` is: once the response hands its connection back to
        the pool (which detaches first), another turn may read on that socket, so a cut racing
        with the end of the stream must shut it before that or not at all.
        """
        with self._lock:
            sock, connection = self._sock, self._connection
            if sock is None and connection is not None:
                sock = getattr(connection, "sock", None)
                if sock is None:
                    return False
            if sock is not None:
                _deadlines.shut_socket(sock)
        return True

    def attach_socket(self, sock: object) -> None:
        """The socket the turn now reads from (None: none to cut, e.g. a mock transport)."""
        with self._lock:
            self._sock = sock
            if self.ended is not None and sock is not None:
                _deadlines.shut_socket(sock)

    def attach(self, connection: Any) -> None:
        """The pooled connection (urllib3's) the turn's request now goes out on: its socket is
        shut by a cut (see ``_http_watch.connection_watched``); connected or not yet."""
        with self._lock:
            self._connection = connection
            cut = self.ended is not None
        if cut and not self._shut():
            _deadlines.watch(self, time.monotonic() + _NO_SOCKET_YET_RETRY)

    def detach(self) -> None:
        """The response is done with: nothing of it to shut any more."""
        with self._lock:
            self._sock = self._connection = None

    def attach_tools(self, future: concurrent.futures.Future[Any] | None) -> None:
        """The tool round the turn now waits for (None once it is over)."""
        with self._lock:
            self._tools = future
            cut = self.ended is not None
        if cut and future is not None:
            future.cancel()


class CallerStream(Iterator[LlmChunk]):
    """The chunks of one ``process_llm`` turn, made on the thread that iterates them."""

    def __init__(
        self,
        processor: LlmProcessor,
        progress: TurnProgress,
        abort: AbortSignal | None,
    ) -> None:
        self._watch = _TurnWatch(processor._timeout, processor._turn_timeout)
        # The generator holds the turn's state, not this object: dropping the stream (a `break`
        # in a plain for-loop) collects it at once, and the generator's `finally` cleans up.
        self._chunks = _turn(processor, progress, self._watch, abort)
        self.next_chunk = self._chunks.__next__  # the hot path: no frame of ours per chunk
        self.closing = False  # close() was called (maybe from another thread)
        self._iterating = False

    def __iter__(self) -> CallerStream:
        if self._iterating:
            raise RuntimeUsageError("this stream is already being (or was) iterated")
        self._iterating = True
        return self

    def __next__(self) -> LlmChunk:
        return self.next_chunk()

    def close(self) -> None:
        self.closing = True
        chunks = self._chunks
        if not chunks.gi_running:  # type: ignore[attr-defined]
            try:
                chunks.close()
                return
            except ValueError:  # "generator already executing": it began in between
                pass
        # Another thread is reading: the turn ends when its read is woken (a generator cannot
        # be closed while it runs).
        self._watch.cut(_CLOSED)


def _turn(
    processor: LlmProcessor,
    progress: TurnProgress,
    watch: _TurnWatch,
    abort: AbortSignal | None,
) -> Generator[LlmChunk, None, None]:
    refuse_loop_thread("iterating a process_llm stream")
    client = processor._sync_client()
    unsubscribe: Callable[[], None] | None = None
    step: TurnStep | None = None
    processor._post_llm_state(ChatState.LLM, None)
    try:
        if abort is not None:
            unsubscribe = abort._subscribe(lambda: watch.cut(_ABORTED))
        watch.start()
        while True:
            if watch.ended is not None:
                step = _cut_step(processor, progress, watch.ended)
            elif progress.pending is not None:
                step = _tool_round(progress, watch)
            else:
                step = yield from _stream_round(client, processor, progress, watch)
            if step is None:  # cut off: the next pass says how
                continue
            if progress.finished:
                break
            yield from step.chunks
        # The turn is over before its last chunks are handed out: a caller that stops at the
        # finish chunk still sees the LLM state off and on_error delivered.
        _end(processor, watch, unsubscribe, step)
        yield from step.chunks
    finally:
        _end(processor, watch, unsubscribe, step)


def _end(
    processor: LlmProcessor,
    watch: _TurnWatch,
    unsubscribe: Callable[[], None] | None,
    step: TurnStep | None,
) -> None:
    if not watch.finish():
        return
    if unsubscribe is not None:
        unsubscribe()
    if step is not None and isinstance(step.decision, Failed):
        processor._notify("on_error", step.decision.error)
    processor._post_llm_state(None, ChatState.LLM, wait=True)


def _cut_step(processor: LlmProcessor, progress: TurnProgress, why: str) -> TurnStep:
    if why == _ABORTED:
        return progress.abort()
    if why == _IDLE:
        return progress.idle_expired(processor._timeout)
    if why == _TURN:
        return progress.turn_expired(processor._turn_timeout)
    progress.finished = True  # closed from another thread: the stream just ends
    return TurnStep()


def _tool_round(progress: TurnProgress, watch: _TurnWatch) -> TurnStep | None:
    from perso_sync._llm_loop import run_tool_round
    from perso_sync._runtime import get_runtime, lend_worker_slot

    assert progress.pending is not None
    runs, progress.pending = progress.pending.runs, None
    runtime = get_runtime()
    future = runtime.spawn(run_tool_round, progress, runs)
    watch.attach_tools(future)
    try:
        # No timeout of its own: the turn deadline, an abort and close() cancel the future.
        with lend_worker_slot(runtime):
            results = future.result()
    except concurrent.futures.CancelledError:
        if watch.ended is not None:
            return None
        return progress.fail(RuntimeUsageError("the perso_sync runtime stopped during the turn"))
    except BaseException:  # Ctrl-C while waiting: the tools are cancelled too
        future.cancel()
        raise
    finally:
        watch.attach_tools(None)
    step = progress.turn.on_tool_results(results)
    progress.book(step)
    return step


def _stream_round(
    client: httpx.Client | None,
    processor: LlmProcessor,
    progress: TurnProgress,
    watch: _TurnWatch,
) -> Generator[LlmChunk, None, TurnStep | None]:
    """One request and its stream: yields the chunks of the events as they come and returns the
    round's last step (booked), or None when the turn was cut off."""
    turn = progress.turn
    try:
        reader = _open(client, processor, progress.request_content(), watch)
    except _OpenFailed as failed:
        return None if watch.ended is not None else progress.fail(failed.error)
    try:
        if not 200 <= reader.status < 300:
            body = _read_limited(reader, ERROR_BODY_LIMIT)
            error = api_error(reader.status, body, reader.content_type)
            return None if watch.ended is not None else progress.fail(error)
        parser = SseParser()
        feed, on_events, clock = parser.feed, turn.on_events, time.monotonic
        step: TurnStep | None
        try:
            watch.reading_since = clock()
            for data in iter(reader.read, b""):  # as it arrives; b"": the end
                events = feed(data)
                if events:
                    watch.reading_since = None  # the user holds the chunks: no idle clock
                    step = on_events(events)
                    if step.decision is not None and progress.book(step):
                        return step  # the stream failed
                    chunks = step.chunks
                    if len(chunks) == 1:  # the usual case: no iterator to make
                        yield chunks[0]
                    else:
                        yield from chunks
                    if watch.ended is not None:
                        return None
                    watch.reading_since = clock()
                elif watch.ended is not None:
                    return None
            # The end, or the socket shut by a cut (a read then ends as at the end).
            step = None if watch.ended is not None else turn.on_stream_end(parser.close())
        except reader.failures as exc:
            if watch.ended is not None:
                return None
            step = turn.on_error(LLMError(reader.map_failure(exc)))
        finally:
            watch.reading_since = None
        if step is not None:
            progress.book(step)
        return step
    finally:
        watch.detach()
        reader.close()


# -- the response, whichever transport reads it ----------------------------------------------


class _Reader(Protocol):
    """One response to the turn's request: what the turn needs of it, whichever client made it
    (``requests`` by default, httpx over a custom transport)."""

    status: int
    content_type: str | None
    failures: tuple[type[BaseException], ...]

    def read(self) -> bytes:
        """The next bytes of the body as they arrive (decoded when the server compressed
        them); ``b""`` at the end. Raises one of :attr:`failures` when the transport fails."""

    def map_failure(self, exc: BaseException) -> PersoError:
        """One of :attr:`failures` as our error."""

    def close(self) -> None:
        """Close the response (its connection too unless the body was read to its end)."""


class _OpenFailed(Exception):
    """The request failed before a response came; ``error`` says why, as our error."""

    def __init__(self, error: PersoError) -> None:
        super().__init__(error)
        self.error = error


def _open(
    client: httpx.Client | None, processor: LlmProcessor, content: bytes, watch: _TurnWatch
) -> _Reader:
    """Send the turn's request; the response once its headers came. The watch learns the
    connection's socket as soon as there is one, so a cut wakes even the wait for the headers."""
    if client is None:
        return _RequestsReader.open(processor, content, watch)
    return _HttpxReader.open(client, processor, content, watch)


_READ_SIZE = 64 * 1024


class _RequestsReader:
    """A ``requests`` response read with urllib3's ``read1``: whatever has arrived, at once
    (http.client undoes the chunked framing in C), decoded when compressed."""

    def __init__(self, response: requests.Response) -> None:
        import urllib3.exceptions

        self._response = response
        self.status = response.status_code
        self.content_type: str | None = response.headers.get("content-type")
        # The hot path: no frame of ours per read.
        self.read: Callable[[], bytes] = functools.partial(
            response.raw.read1, _READ_SIZE, decode_content=True
        )
        # urllib3 wraps socket and protocol failures in its HTTPError.
        self.failures: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)

    @classmethod
    def open(cls, processor: LlmProcessor, content: bytes, watch: _TurnWatch) -> _RequestsReader:
        import requests

        from perso_sync._http_watch import connection_watched

        idle = processor._timeout
        try:
            # The session's pools hand the connection to the watch as soon as they give it out.
            with connection_watched(watch):
                response = _llm_session().post(
                    processor._url,
                    data=content,
                    headers=REQUEST_HEADERS,
                    stream=True,
                    timeout=(connect_timeout(idle), idle),
                    allow_redirects=False,
                )
        except requests.RequestException as exc:
            raise _OpenFailed(map_requests_error(exc)) from None
        # The socket the body comes on: a connection not kept alive ("Connection: close") gave
        # it up to the response already; urllib3's response keeps its shutdown method.
        shutdown = getattr(response.raw, "_sock_shutdown", None)
        sock = getattr(shutdown, "__self__", None)
        if sock is None:
            sock = getattr(response.raw.connection, "sock", None)
        if sock is not None:
            watch.attach_socket(sock)
        # urllib3 hands the connection back to the pool inside the read that reaches the end of
        # the body: the watch lets go of it first, so a late cut cannot shut a socket that
        # another turn may already be using.
        raw = response.raw
        release = raw.release_conn

        def release_after_detaching() -> None:
            watch.detach()
            release()

        raw.release_conn = release_after_detaching  # type: ignore[method-assign]
        return cls(response)

    @staticmethod
    def map_failure(exc: BaseException) -> PersoError:
        return map_requests_error(exc)

    def close(self) -> None:
        # Read to its end, the connection went back to the pool already; else it is closed.
        self._response.close()


class _HttpxReader:
    """An httpx response (a processor's custom ``http_transport``, e.g. a mock)."""

    def __init__(self, response: httpx.Response) -> None:
        import httpx

        self._response = response
        self.status = response.status_code
        self.content_type: str | None = response.headers.get("content-type")
        if "content-encoding" in response.headers:
            self._chunks: Iterator[bytes] = response.iter_bytes()
        else:  # straight from the transport's stream (the response is closed either way)
            self._chunks = iter(cast("Iterable[bytes]", response.stream))
        self.failures: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    @classmethod
    def open(
        cls, client: httpx.Client, processor: LlmProcessor, content: bytes, watch: _TurnWatch
    ) -> _HttpxReader:
        import httpx

        request = client.build_request(
            "POST",
            processor._url,
            content=content,
            headers=REQUEST_HEADERS,
            timeout=request_timeout(processor._timeout),
        )
        try:
            response = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _OpenFailed(map_transport_error(exc)) from None
        network = response.extensions.get("network_stream")
        if network is not None:  # a real socket under the custom transport
            watch.attach_socket(network.get_extra_info("socket"))
        return cls(response)

    def read(self) -> bytes:
        for data in self._chunks:
            if data:  # a transport may hand over an empty chunk: b"" means the end here
                return data
        return b""

    @staticmethod
    def map_failure(exc: BaseException) -> PersoError:
        assert isinstance(exc, Exception)
        return map_transport_error(exc)

    def close(self) -> None:
        self._response.close()


def _read_limited(reader: _Reader, limit: int) -> bytes:
    body = bytearray()
    try:
        while len(body) < limit:
            data = reader.read()
            if not data:
                break
            body += data
    except reader.failures:
        pass  # the status says enough
    return bytes(body[:limit])


# -- the clients -----------------------------------------------------------------------------

_session_lock = threading.Lock()
_shared_session: tuple[int, requests.Session] | None = None  # (pid, session)
_POOL_SIZE = 20  # kept-alive connections per host, as many as httpx keeps by default


def _llm_session() -> requests.Session:
    """The process-wide ``requests.Session`` of the ``process_llm`` streams (rebuilt in a forked
    child: the parent's connections are not ours), with ``_rest``'s watched pools."""
    global _shared_session
    shared = _shared_session
    pid = os.getpid()
    if shared is None or shared[0] != pid:
        with _session_lock:
            shared = _shared_session
            if shared is None or shared[0] != pid:
                import requests

                from perso_sync._http_watch import mount_deadline_adapters

                session = mount_deadline_adapters(requests.Session(), pool_maxsize=_POOL_SIZE)
                shared = _shared_session = (pid, session)
    return shared[1]


def sync_client(transport: object) -> httpx.Client:
    """A client over a processor's custom ``transport`` (its sync side)."""
    import httpx

    check_transport_side(transport, sync=True)
    return httpx.Client(transport=transport)  # type: ignore[arg-type]


def _forget_session_in_child() -> None:
    # The parent's connections are shared with it: the child makes its own session.
    global _session_lock, _shared_session
    _session_lock = threading.Lock()
    _shared_session = None


os.register_at_fork(after_in_child=_forget_session_in_child)
