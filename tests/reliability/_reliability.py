"""Helpers of the reliability suite: leak accounting, deadlines and a deterministic Ctrl-C.

Leak accounting counts threads (``threading.enumerate``) and open file descriptors
(``/proc/self/fd``) before a test and again after it, once teardown had a bounded time to
settle. What may legitimately outlive a test, and why:

- ``perso-runtime``: the one runtime loop thread of the process (docs/ARCHITECTURE.md, rule 2
  "One runtime"). It is started *before* the first snapshot, so it and its selector + self-pipe
  descriptors are part of the baseline.
- Pool threads that are capped and idle, not per session: ``AnyIO worker thread`` (the runtime's
  worker pool for sync tools and user callbacks, capped by the runtime's ``CapacityLimiter``;
  an idle worker exits by itself after 10 s) and ``asyncio_N`` (an asyncio loop's default
  executor, capped at ``min(32, cpus + 4)``: aioice resolves candidates there, the mock probes
  uploaded audio there). They never hold descriptors.
- The mock server's own thread (``perso-mock-server``), alive for the whole pytest session, and
  its loop's fixed default executor (``perso-mock-io_N``, capped at ``mock_server.IO_THREADS``).
- ``perso-http-deadline``: the one thread per process that cuts REST exchanges and
  ``process_llm`` reads off at their deadlines (``perso_sync/_deadlines.py``), started by the
  first REST call or ``process_llm`` turn.
- The shared LLM connection pools (one sync ``httpx.Client`` per process for the ``process_llm``
  iterator, one ``httpx.AsyncClient`` per runtime for ``process_chat``): an idle keep-alive
  connection to the server stays open between turns in each. The baseline is taken after one
  warm-up turn of each kind, so a test that ends with those pooled connections open is at the
  baseline; a pool that grew would show.

Reference cycles: the settle loop runs ``gc.collect()``, so an object that is only waiting for the
cycle collector (an exception's traceback that reaches a response, say) is not counted. Whether
closing really releases sockets while the user still holds such an object is tested on its own
(``test_rest_faults``).

Anything else that a test started and that is still there after the deadline is a leak: aiortc's
``audio-decoder`` / ``video-decoder`` threads of a closed session, a recorder thread, sockets of
a peer connection, a half-closed HTTP connection, ...
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

#: Threads that exist once per process (or per pytest session) by design.
LONG_LIVED_THREADS = frozenset(
    {"MainThread", "perso-runtime", "perso-mock-server", "perso-http-deadline"}
)
#: Capped worker pools whose idle threads linger by design (see the module docstring).
POOL_THREAD_PREFIXES = ("AnyIO worker thread", "asyncio_", "perso-mock-io_")
#: How long teardown may take to release threads and descriptors.
SETTLE_TIMEOUT = 8.0


def open_fds() -> dict[int, str]:
    """Open descriptors of this process: fd -> what it points to (``socket:[...]``, a path)."""
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor of the listdir itself, already closed
            continue
    return found


def _may_linger(thread: threading.Thread) -> bool:
    return thread.name in LONG_LIVED_THREADS or thread.name.startswith(POOL_THREAD_PREFIXES)


@dataclass
class Snapshot:
    """Threads and descriptors at one moment."""

    threads: frozenset[threading.Thread]
    fds: dict[int, str]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(frozenset(threading.enumerate()), open_fds())

    def leaked_threads(self) -> list[str]:
        """Names of threads started since this snapshot that are not allowed to linger."""
        return sorted(
            t.name
            for t in threading.enumerate()
            if t not in self.threads and t.is_alive() and not _may_linger(t)
        )

    def extra_fds(self) -> dict[int, str]:
        """Descriptors open now that were not open (with the same target) at the snapshot."""
        now = open_fds()
        return {fd: target for fd, target in now.items() if self.fds.get(fd) != target}

    def settled(self) -> bool:
        return not self.leaked_threads() and len(open_fds()) <= len(self.fds)

    def assert_no_leaks(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (bounded) until no new thread or descriptor remains, else fail naming them."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        collected_at = 0.0
        while not self.settled():
            now = time.monotonic()
            if now - collected_at > 0.5:
                gc.collect()
                collected_at = now
                continue
            if now >= deadline:
                pytest.fail(
                    f"leaked after {timeout}s: threads {self.leaked_threads()}, "
                    f"{len(open_fds()) - len(self.fds)} more descriptors "
                    f"(new or changed: {self.extra_fds()})"
                )
            pause.wait(0.02)


def main_thread_blocked_in(innermost: str, caller: str) -> bool:
    """True when the main thread's innermost Python frame is ``innermost`` (a blocking wait:
    C-level waits such as ``SimpleQueue.get`` have no frame of their own) and ``caller`` is
    somewhere on its stack."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    if frame is None or frame.f_code.co_name != innermost:
        return False
    while frame is not None:
        if frame.f_code.co_name == caller:
            return True
        frame = frame.f_back
    return False


def interrupt_main_when(
    ready: Callable[[], bool], timeout: float = 5.0
) -> tuple[threading.Thread, threading.Event]:
    """Send SIGINT to the main thread (a real Ctrl-C) as soon as ``ready()`` holds.

    Returns the helper thread and an event set once the signal was sent. The caller must be the
    main thread with Python's default SIGINT handler (KeyboardInterrupt), and must join the
    helper. A real signal, not ``_thread.interrupt_main``: only a signal wakes a thread blocked
    in a lock or queue wait.
    """
    sent = threading.Event()
    main_ident = threading.main_thread().ident
    assert main_ident is not None

    def fire() -> None:
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while not ready():
            if time.monotonic() >= deadline:
                return  # the test then fails on its own: no KeyboardInterrupt arrived
            pause.wait(0.005)
        sent.set()
        signal.pthread_kill(main_ident, signal.SIGINT)

    helper = threading.Thread(target=fire, name="test-ctrl-c", daemon=True)
    helper.start()
    return helper, sent
