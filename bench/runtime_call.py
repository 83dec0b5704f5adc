"""Sync call overhead through the runtime: ``Runtime.call`` vs a bare anyio portal call.

Both run the same trivial coroutine function on a background loop thread and wait for its
result from this thread. Baseline: ``anyio.from_thread.start_blocking_portal()`` +
``portal.call`` (what one would write by hand). Bar (issue 5): ours no slower (<= 1.0x the time
per call; docs/ARCHITECTURE.md's "Quality bars" allow 1.5x).
"""

from __future__ import annotations

import statistics
import time

from bench._report import Row, format_table
from perso_sync._runtime import get_runtime

CALLS = 3000
ROUNDS = 5


async def add(a: int, b: int) -> int:
    return a + b


def _time_per_call(call: object) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        call(add, 1, 2)  # type: ignore[operator]
    return (time.perf_counter() - start) / CALLS


def run() -> list[Row]:
    from anyio.from_thread import start_blocking_portal

    runtime = get_runtime()
    ours_times: list[float] = []
    base_times: list[float] = []
    with start_blocking_portal(backend="asyncio") as portal:
        _time_per_call(runtime.call)  # warm-up both
        _time_per_call(portal.call)
        for _ in range(ROUNDS):  # interleaved, so load changes hit both alike
            ours_times.append(_time_per_call(runtime.call))
            base_times.append(_time_per_call(portal.call))
    ours_us = statistics.median(ours_times) * 1e6
    base_us = statistics.median(base_times) * 1e6
    return [
        Row(
            metric="runtime call overhead",
            ours=ours_us,
            baseline=base_us,
            unit="us/call",
            bar="<= 1.0x bare portal.call",
            passed=ours_us <= base_us,
        )
    ]


if __name__ == "__main__":
    print(format_table(run()))
