"""A session's subscriber tables and the one callback dispatcher that delivers to them.

Any thread: the facade registers and removes callbacks from the caller's thread, the loop side
notifies from the runtime loop, closing may happen on either. Every table is guarded by the
session's one bookkeeping lock (passed in, shared with :mod:`perso_sync._session_loop`), which
is held only to read or change a table, never while user code runs: callbacks are queued on
the :class:`perso_sync._callbacks.CallbackDispatcher` and run later, in submission order, on a
worker thread.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from perso_sync.errors import InvalidInputError

if TYPE_CHECKING:
    from perso_sync._callbacks import CallbackDispatcher
    from perso_sync.models import Chat, ChatState

__all__ = ["ReplaceableCallback", "SessionSubscribers"]

_log = logging.getLogger("perso_sync.session")

_Callback = TypeVar("_Callback", bound=Callable[..., object])


class ReplaceableCallback(Generic[_Callback]):
    """One callback that a new one replaces (the error handler, the STT result callback).

    ``set`` returns a remover that clears the slot only while it still holds that callback, so
    removing an old handler never drops a newer one. Guarded by the session's lock; ``current``
    is read under that lock by the caller.
    """

    def __init__(self, lock: contextlib.AbstractContextManager[object]) -> None:
        self._lock = lock
        self.current: _Callback | None = None

    def set(self, callback: _Callback) -> Callable[[], None]:
        with self._lock:
            self.current = callback

        def remove() -> None:
            with self._lock:
                if self.current is callback:
                    self.current = None

        return remove


class SessionSubscribers:
    """Who wants to hear about a session, and the dispatcher that tells them.

    ``session_id`` only names the session in log lines.
    """

    def __init__(self, lock: contextlib.AbstractContextManager[object], session_id: str) -> None:
        from perso_sync._callbacks import CallbackDispatcher

        self._lock = lock
        self._session_id = session_id
        self._ids = itertools.count()
        self._state_subscribers: dict[int, Callable[[frozenset[ChatState]], object]] = {}
        self._log_subscribers: dict[int, Callable[[list[Chat]], object]] = {}
        self._close_callbacks: dict[int, Callable[[bool], object]] = {}
        self._message_callbacks: dict[int, tuple[str, Callable[[dict[str, Any]], object]]] = {}
        self.error_handler: ReplaceableCallback[Callable[[BaseException], object]] = (
            ReplaceableCallback(lock)
        )
        self.stt_callback: ReplaceableCallback[Callable[[str], object]] = ReplaceableCallback(lock)
        self.dispatcher: CallbackDispatcher = CallbackDispatcher(on_error=self._on_callback_error)

    # ------------------------------------------------------------------ registration

    def add_state_subscriber(
        self, callback: Callable[[frozenset[ChatState]], object], check_open: Callable[[], None]
    ) -> Callable[[], None]:
        return self._register(self._state_subscribers, callback, check_open)

    def add_log_subscriber(
        self, callback: Callable[[list[Chat]], object], check_open: Callable[[], None]
    ) -> Callable[[], None]:
        return self._register(self._log_subscribers, callback, check_open)

    def add_close_callback(
        self, callback: Callable[[bool], object], check_open: Callable[[], None]
    ) -> Callable[[], None]:
        return self._register(self._close_callbacks, callback, check_open)

    def add_message_callback(
        self, msg_type: str, callback: Callable[[dict[str, Any]], object]
    ) -> Callable[[], None]:
        key = next(self._ids)
        with self._lock:
            self._message_callbacks[key] = (msg_type, callback)

        def remove() -> None:
            with self._lock:
                self._message_callbacks.pop(key, None)

        return remove

    def _register(
        self,
        table: dict[int, Any],
        callback: Callable[..., object],
        check_open: Callable[[], None],
    ) -> Callable[[], None]:
        if not callable(callback):
            raise InvalidInputError("callback must be callable")
        with self._lock:
            # Under the lock: a close either ran before (check_open raises) or sees this entry.
            check_open()
            key = next(self._ids)
            table[key] = callback

        def remove() -> None:
            with self._lock:
                table.pop(key, None)

        return remove

    # ------------------------------------------------------------------ delivery

    def notify_states(self, active: frozenset[ChatState]) -> None:
        # The caller holds the lock, so notifications keep the order of the changes.
        with self._lock:
            for callback in self._state_subscribers.values():
                self.dispatcher.submit(callback, active)

    def notify_log(self, chat_log: list[Chat]) -> None:
        # The caller holds the lock; each subscriber gets its own copy of the log.
        with self._lock:
            for callback in self._log_subscribers.values():
                self.dispatcher.submit(callback, list(chat_log))

    def watches_messages(self) -> bool:
        """Whether any ``on_message`` callback is registered (read without the lock: a hint)."""
        return bool(self._message_callbacks)

    def deliver_message(self, msg_type: str, data: dict[str, Any]) -> None:
        # On the loop: hand each watcher its own copy (JS parses the message for each one).
        with self._lock:
            watchers = [cb for kind, cb in self._message_callbacks.values() if kind == msg_type]
        for callback in watchers:
            self.dispatcher.submit(callback, copy.deepcopy(data))

    def take_close_callbacks(self) -> list[Callable[[bool], object]]:
        """The ``on_close`` callbacks, removed from the table: each one runs once."""
        with self._lock:
            callbacks = list(self._close_callbacks.values())
            self._close_callbacks.clear()
        return callbacks

    def report_error(self, error: BaseException, *, raised: bool = False) -> None:
        # ``raised``: the caller gets the error too, so without a handler it is not news.
        with self._lock:
            handler = self.error_handler.current
        if handler is None:
            level = logging.DEBUG if raised else logging.WARNING
            _log.log(level, "session %s: %s", self._session_id, error)
            return
        self.dispatcher.submit(handler, error)

    def _on_callback_error(self, error: BaseException) -> None:
        # Runs in the dispatcher's worker thread; the dispatcher logs a raising handler.
        with self._lock:
            handler = self.error_handler.current
        if handler is None:
            _log.error("a callback of session %s raised", self._session_id, exc_info=error)
            return
        handler(error)
