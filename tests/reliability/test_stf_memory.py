"""An STF upload streams the file: a file much larger than any buffer never sits in memory.

The mock runs in a child process here, so that this process's peak RSS counts only the client
(the in-process mock keeps every uploaded file, which would hide what we measure).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import perso_sync
from bench._mock_process import MockProcess

FILE_BYTES = 24 * 1024 * 1024  # far above the 512 KiB send buffer and the read-ahead
BAR_BYTES = 8 * 1024 * 1024  # peak growth allowed: a third of the file's size


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: writing 5 resets the peak ("high water mark") to the current RSS
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _big_wav(path: Path, size: int) -> None:
    """A valid 16-bit mono WAV of ``size`` bytes, written in pieces."""
    data_bytes = size - 44
    header = b"RIFF" + struct.pack("<I", size - 8) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    piece = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as out:
        out.write(header)
        left = data_bytes
        while left:
            chunk = piece[: min(left, len(piece))]
            out.write(chunk)
            left -= len(chunk)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_uploading_a_large_file_keeps_memory_flat(tmp_path: Path) -> None:
    path, small = tmp_path / "long.wav", tmp_path / "short.wav"
    _big_wav(path, FILE_BYTES)
    _big_wav(small, 1024 * 1024)
    with MockProcess() as mock:
        client = perso_sync.PersoClient(api_key=mock.api_key, api_server=mock.url)
        sid = client.create_session_id(params=perso_sync.SessionParams(**mock.session_params()))
        with client, client.create_session(sid, width=64, height=48, receive_video=False) as s:
            s.process_stf(small, message="warm-up")  # first-use allocations of the channel
            if not _reset_peak_rss():
                pytest.skip("this kernel cannot reset the peak RSS")
            before = _peak_rss()
            sent: list[int] = []
            file_ref = s.process_stf(path, message="long", progress=lambda n, _t: sent.append(n))
            growth = _peak_rss() - before
    assert file_ref
    assert sent[-1] == FILE_BYTES
    assert growth < BAR_BYTES, f"peak RSS grew by {growth / 2**20:.1f} MiB for a 24 MiB file"
