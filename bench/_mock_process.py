"""The mock server in a child process, for benchmarks that measure *this* process.

Memory and thread figures must not include the mock's own journal, sessions and threads, so the
benchmarks that count them run ``python -m mock_server`` as a subprocess and drive it through its
HTTP control API (``mock_server.control``). Also: process figures (RSS, threads, descriptors)
read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0
_URL = re.compile(r"on (http://\S+) \(API key: (.*)\)")


class MockProcess:
    """``python -m mock_server`` on a free loopback port, stopped (SIGTERM) on exit."""

    def __init__(self) -> None:
        self.url = ""
        self.api_key = ""
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._http = requests.Session()

    def __enter__(self) -> MockProcess:
        # The repository on the path: an editable install may not map mock_server (see report).
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mock_server", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._proc = proc
        first_line: list[str] = []
        reader = threading.Thread(
            target=lambda: first_line.append(proc.stdout.readline() if proc.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(START_TIMEOUT)
        match = _URL.search(first_line[0]) if first_line else None
        if match is None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the mock server did not start: {first_line!r}")
        self.url, self.api_key = match.group(1), match.group(2)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the mock process has used so far."""
        if self._proc is None:
            return 0.0
        with open(f"/proc/{self._proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- control API -----------------------------------------------------------------------

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """One control-API call (``path`` below ``/_mock/``); its decoded JSON answer."""
        response = self._http.request(method, f"{self.url}/_mock/{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else None

    def catalog(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "catalog")
        return result

    def session_params(self) -> dict[str, Any]:
        """Form A params of a WebRTC session with the seeded catalog."""
        catalog = self.catalog()
        styles = [
            s for s in catalog["model_styles"] if s.get("platform_type", "webrtc") == "webrtc"
        ] or catalog["model_styles"]
        return {
            "using_stf_webrtc": True,
            "model_style": styles[0]["name"],
            "prompt": catalog["prompts"][0]["prompt_id"],
        }


def rss_bytes() -> int:
    """Resident set size of this process now (not the peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fds_connected_to(port: int) -> int:
    """How many of this process's descriptors are TCP connections to ``port`` on loopback
    (e.g. idle keep-alive connections of an HTTP pool to the mock server)."""
    inodes: set[str] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)  # the header
                for line in lines:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if remote_port == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


def trim_heap() -> None:
    """Collect garbage and hand freed heap pages back (glibc), so RSS reflects live data."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS is just noisier
        ctypes.CDLL("libc.so.6").malloc_trim(0)
