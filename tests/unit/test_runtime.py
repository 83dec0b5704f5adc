"""The runtime: one loop thread, sync calls and iterators across it, callbacks off it."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest

from perso_sync._runtime import (
    THREAD_NAME,
    Runtime,
    get_runtime,
    run_sync_off_loop,
)
from perso_sync.errors import PersoTimeoutError, RuntimeUsageError

WAIT = 5.0


async def add(a: int, b: int) -> int:
    return a + b


def test_call_returns_the_result_on_the_loop_thread() -> None:
    async def where() -> str:
        return threading.current_thread().name

    runtime = get_runtime()
    assert runtime.call(add, 2, 3) == 5
    assert runtime.call(where) == THREAD_NAME
    assert get_runtime() is runtime  # one runtime per process


def test_exceptions_cross_unchanged() -> None:
    error = KeyError("the very same object")

    async def fail() -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        get_runtime().call(fail)
    assert caught.value is error


def test_a_task_raising_timeout_error_is_not_mistaken_for_our_timeout() -> None:
    async def fail() -> None:
        raise TimeoutError("the task's own")

    with pytest.raises(TimeoutError, match="the task's own"):
        get_runtime().call(fail, timeout=WAIT)


def test_timeout_cancels_the_task_then_raises() -> None:
    cleaned_up = threading.Event()

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.set()

    with pytest.raises(PersoTimeoutError):
        get_runtime().call(forever, timeout=0.05)
    assert cleaned_up.wait(WAIT)
    assert get_runtime().call(add, 1, 1) == 2


def test_calling_the_sync_api_from_the_loop_thread_is_refused_not_deadlocked() -> None:
    runtime = get_runtime()

    async def nested_call() -> int:
        return runtime.call(add, 1, 1)

    async def nested_iterate() -> object:
        return runtime.iterate(numbers, 3)

    with pytest.raises(RuntimeUsageError):
        runtime.call(nested_call, timeout=WAIT)
    with pytest.raises(RuntimeUsageError):
        runtime.call(nested_iterate, timeout=WAIT)


def test_cancelling_a_spawned_future_cancels_the_task() -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    future = get_runtime().spawn(forever)
    assert started.wait(WAIT)
    assert future.cancel()
    assert cancelled.wait(WAIT)


async def numbers(count: int) -> AsyncIterator[int]:
    for i in range(count):
        yield i


def test_iterate_yields_every_item_in_order() -> None:
    with get_runtime().iterate(numbers, 500) as stream:
        assert list(stream) == list(range(500))


def test_iterate_reraises_the_producers_error_after_its_items() -> None:
    async def two_then_fail() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("broken source")

    got: list[int] = []
    with pytest.raises(ValueError, match="broken source"):
        got.extend(get_runtime().iterate(two_then_fail))
    assert got == [1, 2]


def test_iterating_twice_is_an_error_not_a_silent_empty_loop() -> None:
    stream = get_runtime().iterate(numbers, 2)
    assert list(stream) == [0, 1]
    with pytest.raises(RuntimeUsageError):
        list(stream)


def test_backpressure_stops_the_producer_at_the_credit_limit() -> None:
    produced: list[int] = []

    async def endless() -> AsyncIterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    runtime = get_runtime()
    with runtime.iterate(endless, credits=4) as stream:
        # Once every task on the loop is blocked, the producer is parked on its credits.
        runtime.call(anyio.wait_all_tasks_blocked, timeout=WAIT)
        assert len(produced) == 4
        assert next(stream) == 0
        runtime.call(anyio.wait_all_tasks_blocked, timeout=WAIT)
        assert len(produced) == 4  # above the low-water mark (half the credits): still parked
        assert next(stream) == 1
        runtime.call(anyio.wait_all_tasks_blocked, timeout=WAIT)
        assert len(produced) == 6  # woken at the mark, it refilled up to the credits again
        assert [next(stream) for _ in range(4)] == [2, 3, 4, 5]


class CountingRuntime(Runtime):
    """A real runtime (its own loop thread) that counts the crossings into its loop."""

    def __init__(self) -> None:
        super().__init__()
        self.crossings = 0

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        if not self.in_loop_thread():
            self.crossings += 1
        super().call_soon_threadsafe(fn, *args)


@pytest.fixture
def counting_runtime() -> Iterator[CountingRuntime]:
    runtime = CountingRuntime()
    runtime._start()
    try:
        yield runtime
    finally:
        runtime._stop()


@pytest.mark.parametrize("credits", [4, 16, 64])
def test_a_slow_consumer_wakes_the_producer_once_per_half_credit_of_items(
    counting_runtime: CountingRuntime, credits: int
) -> None:
    items = 2000
    with counting_runtime.iterate(numbers, items, credits=credits) as stream:
        # The producer is parked on its credits before each item is taken: the consumer is
        # always the slower side.
        counting_runtime.call(anyio.wait_all_tasks_blocked, timeout=WAIT)
        crossings_before = counting_runtime.crossings
        got = []
        for item in stream:
            got.append(item)
    assert got == list(range(items))
    wakes = counting_runtime.crossings - crossings_before
    assert wakes <= items / (credits / 2) + 2


async def ones_until_cancelled(cleaned_up: threading.Event) -> AsyncIterator[int]:
    """Yields 1 forever; sets ``cleaned_up`` once it is cancelled or closed."""
    try:
        while True:
            yield 1
            await anyio.sleep(0)
    finally:
        cleaned_up.set()


def test_close_cancels_the_producer_and_waits_for_its_cleanup() -> None:
    cleaned_up = threading.Event()
    stream = get_runtime().iterate(ones_until_cancelled, cleaned_up)
    assert next(stream) == 1
    stream.close()
    assert cleaned_up.is_set()
    stream.close()  # twice is harmless
    with pytest.raises(StopIteration):
        next(stream)


def test_breaking_out_of_a_for_loop_cancels_the_producer() -> None:
    cleaned_up = threading.Event()
    for _ in get_runtime().iterate(ones_until_cancelled, cleaned_up):
        break
    assert cleaned_up.wait(WAIT)


def test_item_timeout_closes_the_stream() -> None:
    cleaned_up = threading.Event()

    async def silent() -> AsyncIterator[int]:
        try:
            await anyio.sleep_forever()
            yield 0
        finally:
            cleaned_up.set()

    with pytest.raises(PersoTimeoutError):
        next(get_runtime().iterate(silent, item_timeout=0.05))
    assert cleaned_up.wait(WAIT)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_keyboard_interrupt_in_the_consumer_cancels_the_producer() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is delivered to the main thread")
    main_ident = threading.main_thread().ident
    assert main_ident is not None
    cleaned_up, consumer_has_first = threading.Event(), threading.Event()

    async def interrupt_then_hang() -> AsyncIterator[int]:
        try:
            yield 1
            await run_sync_off_loop(consumer_has_first.wait, WAIT)
            # Ctrl-C arrives while the consumer waits for the next item.
            signal.pthread_kill(main_ident, signal.SIGINT)
            await anyio.sleep_forever()
        finally:
            cleaned_up.set()

    runtime = get_runtime()
    got: list[int] = []

    def consume() -> None:
        with runtime.iterate(interrupt_then_hang) as stream:
            for item in stream:
                got.append(item)
                consumer_has_first.set()

    # A signal handled inside a finaliser is swallowed by CPython; keep the collector (which
    # runs finalisers of old garbage at random points) out of the interrupted window.
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(KeyboardInterrupt):
            consume()
    finally:
        gc.enable()
    assert got == [1]
    assert cleaned_up.wait(WAIT)
    assert runtime.call(add, 1, 2) == 3  # still usable
    assert get_runtime() is runtime


def test_run_sync_off_loop_runs_in_a_worker_thread() -> None:
    async def where() -> str:
        return await run_sync_off_loop(lambda: threading.current_thread().name)

    assert get_runtime().call(where) != THREAD_NAME


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_runtime() -> None:
    parent_runtime = get_runtime()
    assert parent_runtime.call(add, 1, 1) == 2
    pid = os.fork()
    if pid == 0:  # child: exit with a status the parent checks, whatever happens
        status = 1
        try:
            child_runtime = get_runtime()
            ok = child_runtime is not parent_runtime and child_runtime.call(add, 2, 2) == 4
            status = 0 if ok else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent_runtime.call(add, 3, 3) == 6


def test_interpreter_exit_closes_registered_objects_then_stops_the_loop() -> None:
    script = textwrap.dedent(
        """
        import anyio
        from perso_sync._runtime import get_runtime, register_closable

        class Resource:
            def _close_at_exit(self):
                print("closed at exit", flush=True)

        async def forever():
            await anyio.sleep_forever()

        resource = Resource()
        register_closable(resource)
        get_runtime().spawn(forever)  # a task still running at exit must not hold it
        print("bye", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["bye", "closed at exit"]


def test_start_soon_and_call_soon_threadsafe_run_on_the_loop_from_any_thread() -> None:
    ran = threading.Event()
    names: list[str] = []

    async def task() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    runtime = get_runtime()
    runtime.start_soon(task)
    assert ran.wait(WAIT)
    plain = threading.Event()
    runtime.call_soon_threadsafe(
        lambda: (names.append(threading.current_thread().name), plain.set())
    )
    assert plain.wait(WAIT)
    assert names == [THREAD_NAME, THREAD_NAME]


def test_a_failing_background_task_does_not_take_the_loop_down() -> None:
    async def fail() -> None:
        raise RuntimeError("background failure")

    runtime = get_runtime()
    runtime.start_soon(fail)
    assert runtime.call(add, 2, 2) == 4
    assert runtime.is_running()
