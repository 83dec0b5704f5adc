"""Ordered delivery of user callbacks, off the loop thread: one :class:`CallbackDispatcher` per
session or LLM processor.

Callbacks (chat states, the chat log, ``on_close``, the error handler, STT results, LLM
processor callbacks) are submitted from the loop or from any thread, and run one after the other
on a worker thread under the runtime's callback limiter (``perso_sync._runtime``): in order
within one dispatcher, in parallel across sessions, never on the loop, so a slow callback never
delays a session's pings.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from perso_sync._runtime import current_runtime, get_runtime, holding_worker_slot, lend_worker_slot
from perso_sync.errors import PersoTimeoutError, RuntimeUsageError

__all__ = ["CallbackDispatcher"]

_log = logging.getLogger("perso_sync.runtime")

_dispatch_state = threading.local()


class CallbackDispatcher:
    """Ordered delivery of user callbacks off the loop thread; one per session or processor.

    ``submit`` queues a call from any thread and never blocks. Queued calls run one after the
    other, in submission order, on an anyio worker thread (the process-wide cap), so callbacks of
    one session stay ordered while sessions run in parallel. A callback that raises is passed to
    ``on_error`` (or logged); delivery carries on.
    """

    def __init__(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        self._on_error = on_error
        self._pending: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._draining = False
        self._closed = False
        self._submitted = 0
        self._completed = 0

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)``; thread-safe, never blocks. Ignored after :meth:`close`."""
        with self._cond:
            if self._closed:
                _log.debug("callback %r submitted after close: dropped", fn)
                return
            self._pending.append((fn, args))
            self._submitted += 1
            if self._draining:
                return
            self._draining = True
        try:
            get_runtime().start_soon(self._drain)
        except BaseException:
            with self._cond:
                self._draining = False
            raise

    async def _drain(self) -> None:
        import anyio.to_thread

        try:
            await anyio.to_thread.run_sync(
                self._drain_in_worker,
                abandon_on_cancel=True,
                limiter=get_runtime().callback_limiter,
            )
        finally:
            with self._cond:
                if self._draining and not self._pending:
                    self._draining = False

    def _drain_in_worker(self) -> None:
        _dispatch_state.current = self
        runtime = current_runtime()
        limiter = None if runtime is None else runtime.callback_limiter
        try:
            with holding_worker_slot(limiter):
                self._deliver_pending()
        finally:
            _dispatch_state.current = None

    def _deliver_pending(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._draining = False
                    self._cond.notify_all()
                    return
                fn, args = self._pending.popleft()
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 -- not a cancellation (worker thread)
                # Even a callback's SystemExit must not stop delivery for the whole session.
                self._report(exc)
            finally:
                with self._cond:
                    self._completed += 1
                    self._cond.notify_all()

    def _report(self, exc: BaseException) -> None:
        if self._on_error is None:
            _log.error("a perso_sync callback raised", exc_info=exc)
            return
        try:
            self._on_error(exc)
        except Exception:  # noqa: BLE001 -- a faulty handler must not stop delivery
            _log.exception("the error handler raised while handling %r", exc)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every callback submitted so far has run.

        Returns at once inside a callback of this dispatcher (waiting there would deadlock);
        :class:`RuntimeUsageError` on the loop thread; :class:`PersoTimeoutError` on timeout.
        """
        if getattr(_dispatch_state, "current", None) is self:
            return
        runtime = current_runtime()
        if runtime is not None and runtime.in_loop_thread():
            raise RuntimeUsageError("CallbackDispatcher.flush() called from the loop thread")
        with self._cond, lend_worker_slot(runtime):
            target = self._submitted
            if not self._cond.wait_for(lambda: self._completed >= target, timeout):
                raise PersoTimeoutError(f"callbacks did not finish within {timeout}s")

    def close(self) -> None:
        """Accept no new callbacks; the ones already queued still run. Idempotent."""
        with self._cond:
            self._closed = True
