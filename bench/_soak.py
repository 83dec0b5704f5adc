"""Soak test (``make soak``, not in CI): many sessions chatting for minutes, with faults.

    python -m bench._soak [--minutes 10] [--sessions 20] [--fault-every 5] [--report-every 30]

The mock runs in a child process. Each session has its own worker thread that loops over the
public API: mostly ``process_chat``, and in turn ``process_llm``, ``process_tts``,
``process_stf``, ``clear_buffer`` + ``transcribe_audio``. Meanwhile a fault thread keeps arming
one random fault at a time through the mock's control API: broken LLM streams (garbage, cut,
dropped), TTS/STT errors, a failing exchange, and sessions the server terminates (the worker then
sees its session closed and opens a new one).

Printed every ``--report-every`` seconds and at the end: turns done, errors by class, sessions
reopened, and this process's threads, open descriptors and RSS. After everything is closed,
threads and descriptors are compared with the start. Exit status 1 when an error that is not a
``PersoError`` escaped (a bug), or when threads/descriptors did not come back.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import threading
import time
import traceback
import wave
from collections import Counter
from typing import Any

from bench._mock_process import (
    MockProcess,
    fds_connected_to,
    open_fd_count,
    rss_bytes,
    trim_heap,
)

WIDTH, HEIGHT = 64, 48
SETTLE_TIMEOUT = 15.0
#: httpx's default cap on idle keep-alive connections: the shared LLM pool may keep this many
#: connections to the server open after the sessions are gone (reused by the next turn).
KEEPALIVE_CAP = 20


def _tiny_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(b"\x00\x01" * 8000)  # half a second
    return buffer.getvalue()


class Stats:
    """Counters shared by the workers (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.turns = 0
        self.errors: Counter[str] = Counter()
        self.reopened = 0
        self.unexpected: list[str] = []

    def turn(self) -> None:
        with self.lock:
            self.turns += 1

    def error(self, exc: BaseException) -> None:
        import perso_sync

        with self.lock:
            self.errors[type(exc).__name__] += 1
            if not isinstance(exc, perso_sync.PersoError):
                self.unexpected.append("".join(traceback.format_exception(exc)))


class Worker:
    """One session's loop: open, chat, reopen when the session is closed under it."""

    def __init__(
        self,
        index: int,
        params: dict[str, Any],
        client: Any,
        stats: Stats,
        stop: threading.Event,
    ) -> None:
        self.index = index
        self.params = params
        self.client = client
        self.stats = stats
        self.stop = stop
        self.session: Any = None
        self.wav = _tiny_wav()
        self.thread = threading.Thread(target=self.run, name=f"soak-{index}", daemon=True)

    def open(self) -> None:
        sid = self.client.create_session_id(params=self.params)
        self.session = self.client.create_session(
            sid, width=WIDTH, height=HEIGHT, receive_video=False
        )

    def step(self, n: int) -> None:
        session = self.session
        kind = n % 10
        if kind == 3:
            with session.process_llm(f"stream {n}") as stream:
                for chunk in stream:
                    if chunk.type == "error":
                        raise chunk.error
        elif kind == 6:
            session.process_tts(f"say {n}")
        elif kind == 8:
            session.process_stf(self.wav, format="wav")
        elif kind == 9:
            session.clear_buffer()
            session.transcribe_audio(self.wav)
        else:
            session.process_chat(f"hello {n}")

    def run(self) -> None:
        import perso_sync

        n = self.index
        pause = threading.Event()
        while not self.stop.is_set():
            try:
                if self.session is None or self.session.closed:
                    if self.session is not None:
                        with self.stats.lock:
                            self.stats.reopened += 1
                    self.open()
                self.step(n)
                self.stats.turn()
            except perso_sync.SessionClosedError as exc:
                self.stats.error(exc)
            except Exception as exc:  # noqa: BLE001 -- counted; non-PersoError ones are bugs
                self.stats.error(exc)
                pause.wait(0.2)  # e.g. a failing exchange: do not spin on re-opening
            n += 1
            pause.wait(0.3)  # think time: keeps 2 shared cores usable
        if self.session is not None:
            self.session.stop_session()


FAULTS: list[dict[str, Any]] = [
    {"endpoint": "llm", "sse": "garbage"},
    {"endpoint": "llm", "sse": "truncate"},
    {"endpoint": "llm", "drop": True},
    {"endpoint": "llm", "status": 503},
    {"endpoint": "tts", "status": 500},
    {"endpoint": "stt", "status": 502, "body": "<html>bad gateway</html>"},
    {"endpoint": "exchange", "status": 500},
    {"endpoint": "session_info", "drop": True},
]


def inject_faults(
    mock: MockProcess, workers: list[Worker], every: float, stop: threading.Event
) -> Counter[str]:
    injected: Counter[str] = Counter()
    rng = random.Random(9)
    while not stop.wait(every):
        if rng.random() < 0.2:
            victim = rng.choice(workers).session
            if victim is not None and not victim.closed:
                mock.control("POST", f"sessions/{victim.session_id}/terminate")
                injected["terminate"] += 1
            continue
        fault = dict(rng.choice(FAULTS))
        mock.control("POST", "faults", fault)
        injected[fault["endpoint"] + ":" + next(k for k in fault if k != "endpoint")] += 1
    return injected


#: Capped pools whose idle threads stay (anyio's workers exit after 10 s idle; an asyncio
#: loop's default executor keeps its threads): not counted as growth.
POOL_PREFIXES = ("AnyIO worker thread", "asyncio_")


def non_pool_threads() -> int:
    return sum(1 for t in threading.enumerate() if not t.name.startswith(POOL_PREFIXES))


def process_figures() -> str:
    return (
        f"threads {threading.active_count()} ({non_pool_threads()} outside pools), "
        f"fds {open_fd_count()}, RSS {rss_bytes() / 2**20:.1f} MB"
    )


def report(stats: Stats, started: float, label: str) -> None:
    with stats.lock:
        errors = dict(stats.errors.most_common())
        turns, reopened = stats.turns, stats.reopened
    print(
        f"[{label} {time.monotonic() - started:6.0f} s] turns {turns}, reopened {reopened}, "
        f"errors {errors}; {process_figures()}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--fault-every", type=float, default=5.0, help="seconds between faults")
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds")
    args = parser.parse_args(argv)

    import perso_sync
    from perso_sync._runtime import get_runtime

    stats = Stats()
    stop = threading.Event()
    with MockProcess() as mock:
        params = mock.session_params()
        client = perso_sync.PersoClient(api_key=mock.api_key, api_server=mock.url)
        # Baseline after the one-time costs: runtime thread, imports, one session's pools.
        get_runtime()
        warm = Worker(-1, params, client, stats, stop)
        warm.open()
        warm.session.process_chat("warm up")
        warm.session.stop_session()
        trim_heap()
        threads_0, rss_0 = non_pool_threads(), rss_bytes()
        fds_0 = open_fd_count() - fds_connected_to(mock.port)
        print(f"start: {process_figures()}", flush=True)

        workers = [Worker(i, params, client, stats, stop) for i in range(args.sessions)]
        started = time.monotonic()
        for worker in workers:
            worker.thread.start()
        injected: Counter[str] = Counter()
        injector = threading.Thread(
            target=lambda: injected.update(inject_faults(mock, workers, args.fault_every, stop)),
            name="soak-faults",
            daemon=True,
        )
        injector.start()
        deadline = started + args.minutes * 60
        while not stop.wait(min(args.report_every, max(0.0, deadline - time.monotonic()))):
            report(stats, started, "soak")
            mock.control("DELETE", "journal")  # the mock's memory, not ours
            if time.monotonic() >= deadline:
                stop.set()
        injector.join(30)
        for worker in workers:
            worker.thread.join(60)
        stuck = [w.thread.name for w in workers if w.thread.is_alive()]
        client.close()
        report(stats, started, "end")
        print(f"faults injected: {dict(injected.most_common())}")

        # Everything is closed: threads and descriptors must come back (bounded wait). The
        # shared LLM pool's idle connections to the server are counted apart (bounded).
        def other_fds() -> int:
            return open_fd_count() - fds_connected_to(mock.port)

        deadline = time.monotonic() + SETTLE_TIMEOUT
        pause = threading.Event()
        while time.monotonic() < deadline:
            trim_heap()
            if non_pool_threads() <= threads_0 and other_fds() <= fds_0:
                break
            pause.wait(0.5)
        threads_1, fds_1, rss_1 = non_pool_threads(), other_fds(), rss_bytes()
        pooled = fds_connected_to(mock.port)
    print(
        f"after close: threads outside pools {threads_0} -> {threads_1}, "
        f"fds other than pooled connections {fds_0} -> {fds_1} (pooled: {pooled}), "
        f"RSS {rss_0 / 2**20:.1f} -> {rss_1 / 2**20:.1f} MB"
    )
    failed = False
    if stuck:
        print(f"FAIL: workers did not stop: {stuck}")
        failed = True
    if stats.unexpected:
        print(f"FAIL: {len(stats.unexpected)} errors that are not PersoError; first:")
        print(stats.unexpected[0])
        failed = True
    if threads_1 > threads_0 or fds_1 > fds_0 or pooled > KEEPALIVE_CAP:
        names = sorted(t.name for t in threading.enumerate())
        print(f"FAIL: threads or descriptors did not come back; threads now: {names}")
        failed = True
    print("soak: FAIL" if failed else "soak: OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
