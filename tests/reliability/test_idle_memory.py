"""An idle 1280×720 session keeps a flat memory footprint (issue 6, item 7).

aiortc queues every decoded frame until someone reads it; a session whose user never reads
frames must not grow. The bar: RSS after 60 s within 20 MB of RSS after 5 s. That run takes a
minute, so the observation time is configurable:

- ``PERSO_IDLE_MEMORY_SECONDS``: seconds observed after the warm-up (default 15; 3 when the
  ``CI`` environment variable is set). The full bar: ``PERSO_IDLE_MEMORY_SECONDS=55``.
- ``PERSO_IDLE_MEMORY_WARMUP``: warm-up seconds before the first measurement (default 5; 2 in
  CI).

Even the short run can fail: an undrained 720p track grows by ~14 MB per second.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import perso_sync

TOLERANCE_MB = 20.0


def _seconds(name: str, default: float, ci_default: float) -> float:
    value = os.environ.get(name)
    if value:
        return float(value)
    return ci_default if os.environ.get("CI") else default


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    pytest.skip("no /proc/self/status on this platform")
    raise AssertionError("unreachable")


def _idle_for(seconds: float, session: Any) -> None:
    # Nothing to wait *for*: idling is the point. Still wake early if the session dies.
    closed = threading.Event()
    session.on_close(lambda manual: closed.set())
    deadline = time.monotonic() + seconds
    while not closed.is_set() and time.monotonic() < deadline:
        closed.wait(deadline - time.monotonic())
    assert not session.closed, "the session closed while idle"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_idle_720p_session_memory_stays_flat(perso_mock: Any) -> None:
    warmup = _seconds("PERSO_IDLE_MEMORY_WARMUP", 5.0, 2.0)
    observe = _seconds("PERSO_IDLE_MEMORY_SECONDS", 15.0, 3.0)
    sid = perso_mock.create_session_id()
    config = perso_mock.sessions[sid].peer_config
    config.video_max_width, config.video_max_height = 1280, 720  # really stream 720p

    with (
        perso_sync.PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url) as client,
        client.create_session(sid, width=1280, height=720, connect_timeout=15) as session,
    ):
        _idle_for(warmup, session)
        frame = session.latest_frame()
        assert frame is not None
        assert (frame.width, frame.height) == (1280, 720)  # frames were received and decoded
        after_warmup = _rss_mb()
        _idle_for(observe, session)
        after_idle = _rss_mb()

    print(
        f"idle RSS: {after_warmup:.1f} MB after warm-up, {after_idle:.1f} MB {observe:.0f} s later"
    )
    assert after_idle - after_warmup <= TOLERANCE_MB, (
        f"RSS grew from {after_warmup:.1f} MB to {after_idle:.1f} MB in {observe:.0f} s idle"
    )
