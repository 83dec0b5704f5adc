"""process_llm latency per event on loopback: server write -> the user's thread has the chunk.

A small local server (its own process, a plain socket, as the real server is not in our process)
streams ``message`` events, paced so that each arrives on its own, each carrying the
``time.monotonic_ns()`` of its write (CLOCK_MONOTONIC: the same clock in every process).
Ours: iterate ``LlmProcessor.process_llm`` and note when each ``MessageChunk`` arrives.
Baseline: read the same stream with a bare socket and split lines. Bars (docs/ARCHITECTURE.md,
"Quality bars"): the latency we add on top of the baseline, p50 <= 1 ms and p99 <= 5 ms.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench._report import Row, format_table
from perso_sync import LlmProcessor, MessageChunk

EVENTS = 300
PACE_S = 0.002  # between events, so that each read carries one event
TURNS = 2


def _event(text: str) -> bytes:
    event = {"status": "success", "type": "message", "content": text}
    return b"data: " + json.dumps(event).encode() + b"\n"


def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(10)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            body += conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        for _ in range(EVENTS):
            time.sleep(PACE_S)
            conn.sendall(_event(f"{time.monotonic_ns()} "))
        conn.sendall(b'data: {"status":"success","type":"done","content":""}\n')


def serve_forever() -> None:
    """The server process: print the port, then answer one request at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        _serve_one(conn)


@contextmanager
def paced_server() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.llm_latency", "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait(5)


def ours(port: int) -> list[float]:
    latencies: list[float] = []
    with LlmProcessor(api_server=f"http://127.0.0.1:{port}", session_id="bench") as processor:
        for chunk in processor.process_llm("go"):
            now = time.monotonic_ns()
            if isinstance(chunk, MessageChunk) and not chunk.finish:
                latencies.append((now - int(chunk.chunks[-1])) / 1e6)
    return latencies


def baseline(port: int) -> list[float]:
    latencies: list[float] = []
    body = json.dumps({"messages": [{"role": "user", "content": "go"}], "tools": []}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/session/bench/llm/v2/ HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        pending = b""
        headers_done = False
        while True:
            data = sock.recv(65536)
            now = time.monotonic_ns()
            if not data:
                break
            pending += data
            if not headers_done:
                if b"\r\n\r\n" not in pending:
                    continue
                pending = pending.split(b"\r\n\r\n", 1)[1]
                headers_done = True
            *lines, pending = pending.split(b"\n")
            for line in lines:
                event = json.loads(line[6:])
                if event.get("type") == "message":
                    latencies.append((now - int(event["content"])) / 1e6)
    return latencies


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run() -> list[Row]:
    ours_lat: list[float] = []
    base_lat: list[float] = []
    with paced_server() as port:
        ours(port)  # warm-up: runtime thread, httpx import, first connection
        for _ in range(TURNS):  # interleaved, so load changes hit both alike
            ours_lat += ours(port)
            base_lat += baseline(port)
    rows = []
    for q, bar_ms in ((50, 1.0), (99, 5.0)):
        o, b = _percentile(ours_lat, q), _percentile(base_lat, q)
        rows.append(
            Row(
                metric=f"process_llm latency/event p{q}",
                ours=o,
                baseline=b,
                unit="ms",
                bar=f"ours - baseline <= {bar_ms:g} ms",
                passed=o - b <= bar_ms,
            )
        )
    return rows


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve_forever()
    else:
        print(format_table(run()))
