"""Waiting in tests: on a condition with a deadline, never a sleep "to let it happen"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Return once ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate!r}")
        pause.wait(0.01)  # a bounded poll of state owned by other threads
