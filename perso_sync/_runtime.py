"""The one background event loop of the process, and safe crossings between it and user threads.

Threads (see docs/ARCHITECTURE.md):

- ``perso-runtime``: one named daemon thread per process runs ``anyio.run`` (asyncio backend)
  with a ``BlockingPortal`` and a task group. It is started lazily by :func:`get_runtime`, shared
  by every session and LLM processor, forgotten in a child after ``os.fork()`` (the thread does
  not exist there; the next call starts a fresh one) and stopped at interpreter exit after every
  registered closable (``register_closable``) had a bounded chance to close.
- anyio worker threads under two process-wide capacity limiters, one for sync
  ``ChatTool.call`` functions (:func:`run_sync_off_loop`) and one for user callbacks
  (``perso_sync._callbacks.CallbackDispatcher``), so that busy tools never stop the callbacks of
  other sessions.
  User code never runs on the loop thread, so a slow callback cannot starve pings.
- **No deadlock by nesting.** A worker that blocks on the runtime itself (a sync tool or a
  callback calling ``process_chat``, iterating ``process_llm``, flushing callbacks) lends its
  slot back while it waits (:func:`lend_worker_slot`): the nested turn's own tools and
  callbacks can always get a worker, at any concurrency and any depth. Threads beyond the caps
  exist only while that many workers are blocked in such nested calls.

Crossing into the loop (:meth:`Runtime.call`, :meth:`Runtime.spawn`, :meth:`Runtime.iterate`)
schedules the task with one ``call_soon_threadsafe`` and waits on a ``concurrent.futures.Future``:
one hand-off each way, nothing blocks the loop, and cancelling the future cancels the task.
Calling a blocking method from the loop thread itself raises :class:`RuntimeUsageError`
instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from perso_sync.errors import PersoError, PersoTimeoutError, RuntimeUsageError

if TYPE_CHECKING:
    import anyio
    from anyio.abc import TaskGroup
    from anyio.from_thread import BlockingPortal

__all__ = [
    "Runtime",
    "SyncStream",
    "current_runtime",
    "get_runtime",
    "holding_worker_slot",
    "lend_worker_slot",
    "register_closable",
    "run_sync_off_loop",
]

T = TypeVar("T")

_log = logging.getLogger("perso_sync.runtime")

THREAD_NAME = "perso-runtime"
# Threads for sync tools, and for user callbacks, each shared by the whole process (a worker
# blocked in a nested runtime call does not count: see lend_worker_slot).
WORKER_THREADS = 32
CALLBACK_THREADS = 32
# How long the runtime may take to start, and how long exit may spend closing sessions.
START_TIMEOUT = 10.0
EXIT_CLOSE_TIMEOUT = 5.0
EXIT_STOP_TIMEOUT = 2.0
# Items a sync iterator may hold unconsumed before the async producer waits (backpressure).
DEFAULT_STREAM_CREDITS = 64
# How long SyncStream.close() waits for the async side to finish its cleanup.
STREAM_CLOSE_TIMEOUT = 5.0


class _Closable(Protocol):
    def _close_at_exit(self) -> None: ...


class Runtime:
    """One background anyio event loop (asyncio backend) in a named daemon thread.

    Get the process-wide instance with :func:`get_runtime`; never construct one per object.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task_group: TaskGroup | None = None
        self._portal: BlockingPortal | None = None
        self._stop_event: anyio.Event | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._callback_limiter: anyio.CapacityLimiter | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self) -> None:
        thread = threading.Thread(target=self._run_thread, name=THREAD_NAME, daemon=True)
        self._thread = thread
        thread.start()
        # The runtime is handed out only once its loop runs (nothing is posted into the void).
        if not self._ready.wait(START_TIMEOUT):
            raise PersoTimeoutError(f"the perso_sync runtime did not start in {START_TIMEOUT}s")
        if self._start_error is not None:
            raise PersoError("the perso_sync runtime failed to start") from self._start_error

    def _run_thread(self) -> None:
        import anyio

        try:
            anyio.run(self._main, backend="asyncio")
        except BaseException as exc:  # noqa: BLE001 -- reported to the starter or logged
            if not self._ready.is_set():
                self._start_error = exc
            else:
                _log.exception("the perso_sync runtime loop crashed")
        finally:
            self._stopped = True
            self._ready.set()

    async def _main(self) -> None:
        import anyio
        from anyio.from_thread import BlockingPortal

        self._loop = asyncio.get_running_loop()
        self._limiter = anyio.CapacityLimiter(WORKER_THREADS)
        self._callback_limiter = anyio.CapacityLimiter(CALLBACK_THREADS)
        self._stop_event = anyio.Event()
        async with BlockingPortal() as portal:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                self._portal = portal
                self._thread_id = threading.get_ident()
                self._ready.set()
                await self._stop_event.wait()
                task_group.cancel_scope.cancel()
            await portal.stop(cancel_remaining=True)

    def _stop(self, timeout: float = EXIT_STOP_TIMEOUT) -> None:
        """Cancel every task and end the loop thread (bounded wait). Idempotent."""
        loop, event, thread = self._loop, self._stop_event, self._thread
        if self._stopped or loop is None or event is None:
            return
        self._stopped = True
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop is already closed
            return
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def is_running(self) -> bool:
        """True while the loop thread runs and accepts work."""
        thread = self._thread
        return not self._stopped and thread is not None and thread.is_alive()

    @property
    def portal(self) -> BlockingPortal:
        """The anyio portal of the loop (for code that needs anyio's own thread helpers)."""
        assert self._portal is not None
        return self._portal

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """The process-wide cap on worker threads running sync tools."""
        assert self._limiter is not None
        return self._limiter

    @property
    def callback_limiter(self) -> anyio.CapacityLimiter:
        """The process-wide cap on worker threads delivering user callbacks."""
        assert self._callback_limiter is not None
        return self._callback_limiter

    def _resize(self, limiter: anyio.CapacityLimiter, delta: int) -> None:
        # On the loop (anyio limiters are not thread-safe). Growing wakes a waiting borrower;
        # shrinking below the borrowed count just makes the next release not hand over.
        limiter.total_tokens = max(1, int(limiter.total_tokens) + delta)

    def in_loop_thread(self) -> bool:
        """True when called from the runtime's own event-loop thread."""
        return threading.get_ident() == self._thread_id

    # -- scheduling ------------------------------------------------------------------------

    def _refuse_loop_thread(self, what: str) -> None:
        if self.in_loop_thread():
            raise RuntimeUsageError(
                f"{what} was called from the perso_sync runtime's event-loop thread (e.g. from "
                "an async tool or an async callback); it would deadlock. Await the async API "
                "there, or call it from another thread."
            )

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """Run the plain function ``fn(*args)`` on the loop soon; never blocks, any thread."""
        loop = self._loop
        if self._stopped or loop is None:
            raise RuntimeUsageError("the perso_sync runtime has stopped")
        if self.in_loop_thread():
            loop.call_soon(fn, *args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError as exc:  # the loop closed between the check and the call
            raise RuntimeUsageError("the perso_sync runtime has stopped") from exc

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task of the runtime's task group; any thread, never blocks.

        The task must handle its own errors: one that escapes is logged and dropped, so a
        faulty task never brings the shared loop down.
        """
        task_group = self._task_group
        assert task_group is not None
        self.call_soon_threadsafe(task_group.start_soon, _logged_task, fn, args)

    def spawn(self, fn: Callable[..., Awaitable[T]], *args: Any) -> concurrent.futures.Future[T]:
        """Start ``fn(*args)`` on the loop without waiting; from any thread.

        The returned future holds the result or the exception; cancelling it cancels the task.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        task_group = self._task_group
        assert task_group is not None
        self.call_soon_threadsafe(task_group.start_soon, self._run_into_future, fn, args, future)
        return future

    async def _run_into_future(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        future: concurrent.futures.Future[T],
    ) -> None:
        import anyio

        if future.cancelled():
            return
        loop = self._loop
        assert loop is not None
        with anyio.CancelScope() as scope:

            def cancel_on_future_cancel(done: concurrent.futures.Future[T]) -> None:
                # Runs in whichever thread cancelled the future.
                if done.cancelled():
                    if self.in_loop_thread():
                        scope.cancel()
                    else:
                        with contextlib.suppress(RuntimeError):  # loop gone: nothing to cancel
                            loop.call_soon_threadsafe(scope.cancel)

            # The future stays PENDING while the task runs so that cancel() works on it.
            future.add_done_callback(cancel_on_future_cancel)
            try:
                result = await fn(*args)
            except anyio.get_cancelled_exc_class():
                future.cancel()
                raise
            except BaseException as exc:  # noqa: BLE001 -- handed to the caller via the future
                # KeyboardInterrupt/SystemExit raised by a task travel to the caller too; they
                # must not tear down the loop that every session shares.
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
                return
            if future.set_running_or_notify_cancel():
                future.set_result(result)
        if scope.cancelled_caught and not future.done():
            future.cancel()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` on the loop and block until it finishes; return its result.

        Exceptions cross unchanged. After ``timeout`` seconds the task is cancelled, then
        :class:`PersoTimeoutError` is raised. A ``KeyboardInterrupt`` while waiting cancels the
        task and is re-raised; the runtime stays usable. From the loop thread itself:
        :class:`RuntimeUsageError`.
        """
        self._refuse_loop_thread("Runtime.call()")
        with lend_worker_slot(self):
            return self._wait(self.spawn(fn, *args), timeout, fn)

    def wait(
        self,
        future: concurrent.futures.Future[T],
        *,
        timeout: float | None = None,
        what: object = "the task",
    ) -> T:
        """Block until the task behind ``future`` (from :meth:`spawn`) finishes; its result.

        The waiting half of :meth:`call`, for a caller that does some work of its own between
        spawning and waiting; the same rules (timeout, Ctrl-C, loop thread, worker slot).
        """
        self._refuse_loop_thread("Runtime.wait()")
        with lend_worker_slot(self):
            return self._wait(future, timeout, what)

    def _wait(self, future: concurrent.futures.Future[T], timeout: float | None, what: object) -> T:
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            # Not cancelled by us: the runtime stopped (interpreter exit) under the task.
            raise RuntimeUsageError("the perso_sync runtime stopped during the call") from None
        except concurrent.futures.TimeoutError:
            if future.done():  # the task's own TimeoutError, or it finished at the deadline
                return future.result()
            if not future.cancel():
                return future.result()
            name = getattr(what, "__qualname__", repr(what))
            raise PersoTimeoutError(f"{name} took longer than {timeout}s") from None
        except BaseException:
            future.cancel()  # no-op when the task itself raised
            raise

    def iterate(
        self,
        fn: Callable[..., AsyncIterator[T]],
        *args: Any,
        item_timeout: float | None = None,
        credits: int = DEFAULT_STREAM_CREDITS,
    ) -> SyncStream[T]:
        """A sync iterator over the async iterator ``fn(*args)``, which runs on the loop.

        At most ``credits`` items wait unconsumed; then the producer awaits (backpressure,
        without ever blocking the loop). ``item_timeout`` bounds each wait for the next item
        (:class:`PersoTimeoutError`). Closing the stream, breaking out of a ``with`` block or
        garbage collection cancels the async side. From the loop thread: RuntimeUsageError.
        """
        self._refuse_loop_thread("Runtime.iterate()")
        return SyncStream(self, fn, args, item_timeout=item_timeout, credits=credits)


async def _logged_task(fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception:  # noqa: BLE001 -- the shared loop must survive a faulty task
        _log.exception("background task %r failed", fn)


# -- sync iterator over an async stream ----------------------------------------------------

_ITEM, _BATCH, _ERROR, _END = 0, 1, 2, 3


class _Channel:
    """The state shared by the loop-side producer and the consumer.

    Kept apart from :class:`SyncStream` so that the running producer holds no reference to the
    user-facing stream: dropping the stream (``break`` in a plain for-loop) lets it be collected,
    and its finaliser cancels the producer.

    Crossing the thread boundary is what costs, so it is batched both ways:

    - items the source yields within one turn of the loop (e.g. every event parsed from one
      socket read) travel as one list, flushed by a ``call_soon`` at the end of that turn, or at
      once when the credits run out;
    - a producer parked on its credits is woken once, when the consumer has brought the backlog
      down to the low-water mark (half the credits), not for every item it takes: a stream read
      slower than it is produced costs one ``call_soon_threadsafe`` per half-credit of items.
    """

    def __init__(self, runtime: Runtime, credits: int) -> None:
        self.runtime = runtime
        self.credits = credits
        self.low_water = credits // 2
        self.queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        # Each counter has one writer (the loop / the consumer); the GIL orders the accesses.
        self.produced = 0
        self.consumed = 0
        self.wake: anyio.Event | None = None
        self.started = False
        self.finished = threading.Event()
        # Loop-side only: items not handed over yet (None once the producer is done).
        self._batch: list[Any] | None = []
        # Consumer-side only: the last wake event it set (each event is set once).
        self._woken: anyio.Event | None = None

    def on_task_done(self, _: concurrent.futures.Future[None]) -> None:
        # Also ends the consumer's wait when the task was cancelled before it ever ran.
        self.queue.put((_END, None))

    async def produce(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        import anyio

        self.started = True
        try:
            source = fn(*args)
            if hasattr(source, "aclose"):
                async with aclosing(source):
                    await self._pump(source)
            else:
                await self._pump(source)
            self._flush()
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # noqa: BLE001 -- travels to the consumer as a value
            self._flush()  # the items before the error come first
            self.queue.put((_ERROR, exc))
        finally:
            self._batch = None  # a flush still scheduled finds nothing to hand over
            self.queue.put((_END, None))
            self.finished.set()

    def _flush(self) -> None:
        batch = self._batch
        if batch:
            self._batch = []
            self.queue.put((_BATCH, batch) if len(batch) > 1 else (_ITEM, batch[0]))

    async def _pump(self, source: AsyncIterator[Any]) -> None:
        async for item in source:
            if self.put(item):
                await self.wait_for_room()

    def put(self, item: Any) -> bool:
        """Hand ``item`` over (loop thread); True when the credits ran out: the producer must
        then ``await wait_for_room()`` before its next put."""
        batch = self._batch
        assert batch is not None
        if not batch:  # flushed after whatever else this turn of the loop yields
            asyncio.get_running_loop().call_soon(self._flush)
        batch.append(item)
        self.produced += 1
        if self.produced - self.consumed >= self.credits:
            self._flush()
            return True
        return False

    async def wait_for_room(self) -> None:
        """Wait until the consumer brought the backlog down to the low-water mark."""
        import anyio

        # Publish the event, then look again: a consumer that took items in between either
        # sees the event (and sets it at the low-water mark) or already brought the backlog
        # down to it, which we now see.
        wake = self.wake = anyio.Event()
        try:
            if self.produced - self.consumed > self.low_water:
                await wake.wait()
        finally:
            self.wake = None

    def consumed_one(self) -> None:
        # No lock shared with the loop: the loop thread never waits on the consumer's thread
        # (a Ctrl-C inside a `with lock:` could leave such a lock held for ever).
        self.consumed += 1
        wake = self.wake
        if (
            wake is not None
            and wake is not self._woken
            and self.produced - self.consumed <= self.low_water
        ):
            self._woken = wake
            with contextlib.suppress(RuntimeUsageError):  # runtime gone: the producer with it
                self.runtime.call_soon_threadsafe(wake.set)


class SyncStream(Iterator[T]):
    """Items of an async iterator running on the runtime loop, consumed from a sync thread.

    Items, the end and exceptions travel as values through a ``queue.SimpleQueue`` (its
    ``put`` never blocks the loop). A stream is iterated once; ``close()`` is idempotent.
    """

    def __init__(
        self,
        runtime: Runtime,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        item_timeout: float | None,
        credits: int,
    ) -> None:
        if credits < 1:
            raise ValueError("credits must be >= 1")
        self._closed = True  # until the producer exists (for __del__ after a failed init)
        self._runtime = runtime
        self._item_timeout = item_timeout
        self._channel = _Channel(runtime, credits)
        self._done = False
        self._iterating = False
        self._pending: deque[Any] = deque()  # the rest of a batch, consumer side
        self._future = runtime.spawn(self._channel.produce, fn, args)
        self._future.add_done_callback(self._channel.on_task_done)
        self._closed = False

    def __iter__(self) -> SyncStream[T]:
        if self._iterating:
            raise RuntimeUsageError("this stream is already being (or was) iterated")
        self._iterating = True
        return self

    def __next__(self) -> T:
        channel = self._channel
        if self._pending:
            channel.consumed_one()
            return self._pending.popleft()  # type: ignore[no-any-return]
        if self._done:
            raise StopIteration
        try:
            with lend_worker_slot(self._runtime):
                kind, value = channel.queue.get(timeout=self._item_timeout)
        except queue.Empty:
            self.close(wait=False)
            raise PersoTimeoutError(
                f"no stream item within {self._item_timeout}s; the stream was closed"
            ) from None
        except BaseException:  # KeyboardInterrupt while waiting: stop the producer too
            self.close(wait=False)
            raise
        if kind == _BATCH:
            self._pending.extend(value)
            value = self._pending.popleft()
            kind = _ITEM
        if kind == _ITEM:
            channel.consumed_one()
            return value  # type: ignore[no-any-return]
        self._done = True
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self, wait: bool = True) -> None:
        """Cancel the async side; with ``wait``, also wait (bounded) until its cleanup ran.

        Idempotent. Waiting is skipped on the loop thread, where it would deadlock.
        """
        self._done = True
        self._pending.clear()
        if not self._closed:
            self._closed = True
            self._future.cancel()
        # A producer cancelled before it started has nothing to clean up.
        if wait and self._channel.started and not self._runtime.in_loop_thread():
            self._channel.finished.wait(STREAM_CLOSE_TIMEOUT)

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort only: breaking out of a plain for-loop drops the stream here.
        if not getattr(self, "_closed", True):
            self._closed = True
            self._future.cancel()


# -- process-wide runtime ------------------------------------------------------------------

_lock = threading.Lock()
_runtime: Runtime | None = None
_closables: weakref.WeakSet[_Closable] = weakref.WeakSet()
_exit_hook_registered = False


def get_runtime() -> Runtime:
    """The process-wide runtime, started on first use (and again in a forked child)."""
    global _runtime
    runtime = _runtime
    if runtime is not None and runtime.pid == os.getpid() and runtime.is_running():
        return runtime
    with _lock:
        runtime = _runtime
        if runtime is None or runtime.pid != os.getpid() or not runtime.is_running():
            runtime = Runtime()
            runtime._start()
            _runtime = runtime
            _register_exit_hook()
        return runtime


def register_closable(obj: _Closable) -> None:
    """Track ``obj`` (weakly) so that interpreter exit calls ``obj._close_at_exit()``.

    Exit closes every live registered object (sessions: their peer connections) within a bounded
    time, before the loop stops and before non-daemon threads are joined.
    """
    with _lock:
        _closables.add(obj)


def _register_exit_hook() -> None:
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    _exit_hook_registered = True
    # threading's hook runs before non-daemon threads (aiortc's decoders) are joined; plain
    # atexit would run after that join and could wait forever.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_close_everything_at_exit)
            return
        except RuntimeError:  # already shutting down
            pass
    atexit.register(_close_everything_at_exit)


def _close_everything_at_exit() -> None:
    with _lock:
        runtime = _runtime
        closables = list(_closables)
        _closables.clear()
    if closables:
        # One helper thread so that a stuck close cannot hold interpreter exit forever.
        closer = threading.Thread(
            target=_close_all, args=(closables,), name="perso-exit-close", daemon=True
        )
        closer.start()
        closer.join(EXIT_CLOSE_TIMEOUT)
    if runtime is not None and runtime.pid == os.getpid():
        runtime._stop()


def _close_all(closables: list[_Closable]) -> None:
    for obj in closables:
        try:
            obj._close_at_exit()
        except Exception:  # noqa: BLE001 -- one failing close must not stop the others
            _log.exception("closing %r at exit failed", obj)


def _forget_runtime_in_child() -> None:
    # The loop thread does not exist in a forked child; the parent's sessions are not ours.
    global _runtime, _lock, _closables
    _runtime = None
    _lock = threading.Lock()
    _closables = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runtime_in_child)


# -- user code off the loop ----------------------------------------------------------------


async def run_sync_off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking or user function in a worker thread (process-wide thread cap).

    On cancellation the caller stops waiting at once; the thread finishes on its own and its
    result is dropped (a thread cannot be interrupted).
    """
    import anyio.to_thread

    runtime = _runtime
    limiter = (
        runtime.limiter if runtime is not None and runtime.in_loop_thread() else None
    )  # None: anyio's default limiter, e.g. when a test runs the core on its own loop
    if limiter is None:
        return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)

    def in_worker() -> T:
        with holding_worker_slot(limiter):
            return fn(*args)

    return await anyio.to_thread.run_sync(in_worker, abandon_on_cancel=True, limiter=limiter)


# Which limiter's slot the current worker thread holds (None outside the runtime's workers).
_worker_state = threading.local()


@contextlib.contextmanager
def holding_worker_slot(limiter: anyio.CapacityLimiter | None) -> Iterator[None]:
    """Mark the calling worker thread as holding a slot of ``limiter`` (for lending) while
    the body runs user code; None marks a thread that holds none."""
    _worker_state.limiter = limiter
    try:
        yield
    finally:
        _worker_state.limiter = None


def current_runtime() -> Runtime | None:
    """The process-wide runtime if one was started (possibly stopped or the parent's), else
    None; unlike :func:`get_runtime` it never starts one."""
    return _runtime


@contextlib.contextmanager
def lend_worker_slot(runtime: Runtime | None = None) -> Iterator[None]:
    """While the body blocks, give the calling worker's slot back to its limiter.

    A sync tool or a callback that waits for the runtime (a nested ``process_chat``, a
    ``process_llm`` stream, a flush) holds a worker thread but uses no capacity; without lending,
    enough such waits would take every slot and the work they wait for could never get one.
    A no-op outside the runtime's worker threads (the common case costs one attribute read).
    """
    limiter = getattr(_worker_state, "limiter", None)
    runtime = runtime if runtime is not None else _runtime
    if limiter is None or runtime is None or runtime.in_loop_thread():
        yield
        return
    # call_soon_threadsafe is FIFO: the slot is lent before the awaited work is scheduled.
    runtime.call_soon_threadsafe(runtime._resize, limiter, 1)
    _worker_state.limiter = None  # lent: a nested wait in this thread must not lend twice
    try:
        yield
    finally:
        _worker_state.limiter = limiter
        with contextlib.suppress(RuntimeUsageError):  # the runtime stopped: nothing to undo
            runtime.call_soon_threadsafe(runtime._resize, limiter, -1)
