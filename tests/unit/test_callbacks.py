"""CallbackDispatcher: user callbacks in order, off the loop, surviving raising callbacks."""

from __future__ import annotations

import threading

import pytest

from perso_sync._callbacks import CallbackDispatcher
from perso_sync._runtime import THREAD_NAME, get_runtime
from perso_sync.errors import RuntimeUsageError

WAIT = 5.0


def test_dispatcher_runs_callbacks_in_order_off_the_loop() -> None:
    seen: list[tuple[int, str]] = []
    dispatcher = CallbackDispatcher()

    async def submit_from_loop() -> None:
        for i in range(50):
            dispatcher.submit(lambda i=i: seen.append((i, threading.current_thread().name)))

    get_runtime().call(submit_from_loop)
    for i in range(50, 100):
        dispatcher.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    dispatcher.flush(WAIT)
    assert [i for i, _ in seen] == list(range(100))
    assert all(name not in (THREAD_NAME, "MainThread") for _, name in seen)


def test_dispatcher_reports_a_raising_callback_and_carries_on() -> None:
    errors: list[BaseException] = []
    done: list[int] = []
    dispatcher = CallbackDispatcher(on_error=errors.append)
    dispatcher.submit(lambda: 1 / 0)
    dispatcher.submit(done.append, 7)
    dispatcher.flush(WAIT)
    assert [type(e) for e in errors] == [ZeroDivisionError]
    assert done == [7]


def test_dispatcher_flush_inside_a_callback_does_not_deadlock() -> None:
    dispatcher = CallbackDispatcher()
    flushed = threading.Event()

    def callback() -> None:
        dispatcher.flush(WAIT)
        flushed.set()

    dispatcher.submit(callback)
    dispatcher.flush(WAIT)
    assert flushed.is_set()


def test_dispatcher_flush_from_the_loop_thread_is_refused() -> None:
    dispatcher = CallbackDispatcher()

    async def flush_on_loop() -> None:
        dispatcher.flush(WAIT)

    with pytest.raises(RuntimeUsageError):
        get_runtime().call(flush_on_loop)


def test_dispatcher_ignores_callbacks_after_close() -> None:
    done: list[int] = []
    dispatcher = CallbackDispatcher()
    dispatcher.close()
    dispatcher.submit(done.append, 1)
    dispatcher.flush(WAIT)
    assert done == []
