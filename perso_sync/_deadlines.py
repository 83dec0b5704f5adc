"""The process's one deadline thread (``perso-http-deadline``): a heap of watched entries.

Blocking reads cannot see a deadline by themselves (``requests`` and httpx bound each read, not a
whole exchange, and a server that drips a byte before each read would expire keeps a reader for
ever). Every such deadline of the process is an entry in one heap kept by one daemon thread,
started on first use (again in a forked child): the REST exchanges' whole-exchange deadline
(``_http_watch.ExchangeWatch``) and the idle and turn deadlines of a ``process_llm`` stream read on
the caller's thread (``_llm_caller``). A timer thread per call would make the thread count
follow the number of concurrent calls (a busy WSGI app).

An entry comes due and is asked what to do (:meth:`Watched.expire`, on the watcher's thread,
which must not block): it cuts its work off (typically by shutting its socket down, which wakes
a reader blocked in another thread) and is dropped, or it names when to look again: an entry
that re-arms itself so costs nothing per read of the work it watches (the LLM idle watch looks
at when the current read began). An entry whose work ended is dropped when it comes due.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import socket
import threading
import time
from typing import Protocol

__all__ = ["THREAD_NAME", "Watched", "forget", "shut_socket", "watch"]

THREAD_NAME = "perso-http-deadline"
_PURGE_AT = 256  # finished entries in the deadline heap before it is worth compacting


class Watched(Protocol):
    """An entry of the heap."""

    @property
    def finished(self) -> bool:
        """True once the work ended: the entry is dropped when it comes due."""

    def expire(self, now: float) -> float | None:
        """The entry came due (the watcher's thread; must not block): None when done with it,
        else the ``time.monotonic()`` time to look at it again."""


class _DeadlineWatcher:
    """One daemon thread that sleeps until the earliest entry comes due."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Watched]] = []  # a heap
        self._counter = 0  # ties: never compare two entries
        self._finished = 0  # entries of finished work still in the heap (about)
        self._wake = threading.Condition()
        thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        thread.start()

    def watch(self, entry: Watched, deadline: float) -> None:
        with self._wake:
            if self._finished > _PURGE_AT and self._finished * 2 > len(self._due):
                # Most entries belong to work that ended long before its deadline (the usual
                # case): drop them now rather than carry them until they come due.
                self._due = [item for item in self._due if not item[2].finished]
                heapq.heapify(self._due)
                self._finished = 0
            self._counter += 1
            heapq.heappush(self._due, (deadline, self._counter, entry))
            if self._due[0][2] is entry:
                self._wake.notify()

    def forget(self) -> None:
        with self._wake:
            self._finished += 1

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                while not self._due or self._due[0][0] > now:
                    self._wake.wait(None if not self._due else self._due[0][0] - now)
                    now = time.monotonic()
                _, _, entry = heapq.heappop(self._due)
                if entry.finished:
                    self._finished = max(0, self._finished - 1)
                    continue
            again = entry.expire(now)
            if again is not None:
                self.watch(entry, again)


_watcher_lock = threading.Lock()
_watcher_instance: _DeadlineWatcher | None = None


def _watcher() -> _DeadlineWatcher:
    global _watcher_instance
    with _watcher_lock:
        if _watcher_instance is None:
            _watcher_instance = _DeadlineWatcher()
        return _watcher_instance


def watch(entry: Watched, deadline: float) -> None:
    """Ask for ``entry.expire()`` at ``deadline`` (``time.monotonic()`` time); any thread."""
    _watcher().watch(entry, deadline)


def forget() -> None:
    """Say that one more entry of the heap belongs to finished work (it is dropped when due,
    or sooner when many are)."""
    _watcher().forget()


def _forget_watcher() -> None:
    # In a forked child the watcher's thread does not exist (and the lock may have been held by
    # a thread that does not either): the first watch there starts a new one.
    global _watcher_lock, _watcher_instance
    _watcher_lock = threading.Lock()
    _watcher_instance = None


os.register_at_fork(after_in_child=_forget_watcher)


def shut_socket(sock: object) -> None:
    """Shut ``sock`` down both ways; any thread. The plain-socket shutdown, also for TLS: it
    wakes a reader blocked in another thread without touching the TLS object that reader is
    using (``close()`` would not wake it). Already closed: its work is ending anyway."""
    with contextlib.suppress(OSError, TypeError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # type: ignore[arg-type]
