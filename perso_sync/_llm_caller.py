"""The caller-side LLM turn engine: the ``process_llm`` iterator reads its stream ON the caller's
thread, with a sync httpx ``Client``.

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

Clients: one process-wide ``httpx.Client`` for processors without a custom transport (rebuilt in
a forked child: the parent's connections are not ours), whose connections hand their socket to
the turn writing a request on them, so that even the wait for the response headers can be cut;
a processor with a custom transport has its own client over the transport's sync side (a mock
transport has no socket: a cut is then seen after the read under way returns). The session's
LLM state listener still runs on the runtime loop (posted there at the turn's start and end).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from perso_sync import _deadlines
from perso_sync._llm_common import (
    ERROR_BODY_LIMIT,
    REQUEST_HEADERS,
    TurnProgress,
    api_error,
    check_transport_side,
    map_transport_error,
    request_timeout,
)
from perso_sync._llm_turn import Failed, LlmChunk, TurnStep
from perso_sync._sse import SseParser
from perso_sync._validate import refuse_loop_thread
from perso_sync.errors import LLMError, RuntimeUsageError
from perso_sync.models import ChatState

if TYPE_CHECKING:
    import httpx

    from perso_sync.llm import AbortSignal, LlmProcessor

__all__ = ["CallerStream", "sync_client"]

# Why a turn was cut off from another thread.
_ABORTED, _CLOSED, _IDLE, _TURN = "aborted", "closed", "idle", "turn"

_writing = threading.local()  # .watch: the _TurnWatch of the request being sent on this thread


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
            self._sock = self._tools = None
        if self._watched:
            _deadlines.forget()
        return True

    def expire(self, now: float) -> float | None:
        # The deadline thread. The idle deadline counts from when the current read began: when
        # no read is under way, or one began since, look again when it could be due.
        if self._finished:
            return None
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
            sock, tools = self._sock, self._tools
        if sock is not None:
            _deadlines.shut_socket(sock)
        if tools is not None:
            tools.cancel()

    def attach_socket(self, sock: object) -> None:
        """The socket the turn now reads from (None: none to cut, e.g. a mock transport)."""
        with self._lock:
            self._sock = sock
            cut = self.ended is not None
        if cut and sock is not None:
            _deadlines.shut_socket(sock)

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
    client: httpx.Client,
    processor: LlmProcessor,
    progress: TurnProgress,
    watch: _TurnWatch,
) -> Generator[LlmChunk, None, TurnStep | None]:
    """One request and its stream: yields the chunks of the events as they come and returns the
    round's last step (booked), or None when the turn was cut off."""
    import httpx

    turn = progress.turn
    request = client.build_request(
        "POST",
        processor._url,
        content=progress.request_content(),
        headers=REQUEST_HEADERS,
        timeout=request_timeout(processor._timeout),
    )
    _writing.watch = watch
    try:
        response = client.send(request, stream=True)
    except httpx.HTTPError as exc:
        return None if watch.ended is not None else progress.fail(map_transport_error(exc))
    finally:
        _writing.watch = None
    try:
        network = response.extensions.get("network_stream")
        if network is not None:
            watch.attach_socket(network.get_extra_info("socket"))
        if not response.is_success:
            body = _read_limited(response, ERROR_BODY_LIMIT)
            error = api_error(response.status_code, body, response.headers.get("content-type"))
            return None if watch.ended is not None else progress.fail(error)
        parser = SseParser()
        feed, on_events, clock = parser.feed, turn.on_events, time.monotonic
        step: TurnStep | None
        try:
            # As it arrives: decoded when the server compressed it, else straight from the
            # transport's stream (iter_raw() would add a generator and a list per read; the
            # response is closed below either way).
            if "content-encoding" in response.headers:
                reader: Iterable[bytes] = response.iter_bytes()
            else:
                reader = cast("Iterable[bytes]", response.stream)
            watch.reading_since = clock()
            for data in reader:
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
        except httpx.HTTPError as exc:
            if watch.ended is not None:
                return None
            step = turn.on_error(LLMError(map_transport_error(exc)))
        finally:
            watch.reading_since = None
        if step is not None:
            progress.book(step)
        return step
    finally:
        watch.attach_socket(None)
        response.close()


def _read_limited(response: httpx.Response, limit: int) -> bytes:
    import httpx

    body = bytearray()
    try:
        for data in response.iter_bytes():
            body += data
            if len(body) >= limit:
                break
    except httpx.HTTPError:
        pass  # the status says enough
    return bytes(body[:limit])


# -- the process-wide sync client ----------------------------------------------------------

_client_lock = threading.Lock()
_shared_client: tuple[int, httpx.Client] | None = None  # (pid, client)


def sync_client(transport: object | None) -> httpx.Client:
    """The process-wide client (``transport`` None), or a new one over ``transport``."""
    import httpx

    global _shared_client
    if transport is not None:
        check_transport_side(transport, sync=True)
        return httpx.Client(transport=transport)  # type: ignore[arg-type]
    shared = _shared_client
    pid = os.getpid()
    if shared is None or shared[0] != pid:
        with _client_lock:
            shared = _shared_client
            if shared is None or shared[0] != pid:
                shared = _shared_client = (pid, httpx.Client(transport=_watching_transport()))
    return shared[1]


def _watching_transport() -> httpx.HTTPTransport:
    import httpx

    transport = httpx.HTTPTransport()
    # httpcore's pool makes its connections with this backend; ours hands each connection's
    # socket to the turn sending a request on it. Without it (another httpx), the socket is
    # known once the response headers came, so only the wait for them cannot be cut short.
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = _WatchingBackend(backend)  # type: ignore[union-attr]
    return transport


class _WatchingBackend:
    """An httpcore network backend around another: its streams report their socket."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(self, *args: Any, **kwargs: Any) -> _WatchingStream:
        return _WatchingStream(self._inner.connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> _WatchingStream:
        return _WatchingStream(self._inner.connect_unix_socket(*args, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _WatchingStream:
    """An httpcore network stream that, when a request is written on it, hands its socket to
    the turn sending it (``_writing.watch``). Reads go straight to the wrapped stream."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.read = inner.read  # the hot path: no frame of ours per read
        self.close = inner.close
        self.get_extra_info = inner.get_extra_info

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        watch: _TurnWatch | None = getattr(_writing, "watch", None)
        if watch is not None:
            watch.attach_socket(self._inner.get_extra_info("socket"))
        self._inner.write(buffer, timeout)

    def start_tls(self, *args: Any, **kwargs: Any) -> _WatchingStream:
        return _WatchingStream(self._inner.start_tls(*args, **kwargs))


def _forget_client_in_child() -> None:
    # The parent's connections are shared with it: the child makes its own client.
    global _client_lock, _shared_client
    _client_lock = threading.Lock()
    _shared_client = None


os.register_at_fork(after_in_child=_forget_client_in_child)
