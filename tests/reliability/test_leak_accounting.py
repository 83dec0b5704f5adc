"""The leak check itself can fail: a thread or a descriptor left behind is named."""

from __future__ import annotations

import os
import threading

import pytest
from _reliability import Snapshot


def test_a_thread_left_running_is_reported() -> None:
    before = Snapshot.take()
    release = threading.Event()
    straggler = threading.Thread(target=release.wait, name="straggler", daemon=True)
    straggler.start()
    try:
        with pytest.raises(pytest.fail.Exception, match="straggler"):
            before.assert_no_leaks(timeout=0.1)
    finally:
        release.set()
        straggler.join(5)
    before.assert_no_leaks(timeout=5)


def test_a_descriptor_left_open_is_reported() -> None:
    before = Snapshot.take()
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(pytest.fail.Exception, match="2 more descriptors"):
            before.assert_no_leaks(timeout=0.1)
    finally:
        os.close(read_end)
        os.close(write_end)
    before.assert_no_leaks(timeout=5)
