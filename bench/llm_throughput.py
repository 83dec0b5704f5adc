"""LLM turn throughput: 2000 ``message`` events through ``process_llm`` vs bare requests.

The mock runs in a child process (``python -m mock_server``), so only the client's work is in
this process. One session's LLM script streams 2000 ``message`` events with no pause between
them, as fast as the socket carries them: the measure is throughput, not per-event latency
(``llm_latency.py`` does that).

- ours: ``LlmProcessor.process_llm("go")`` iterated to its end in this thread (a fresh
  processor per turn, so the history and the request body stay the same size each turn).
- baseline: the same POST with a ``requests.Session``, ``iter_lines()`` and ``json.loads`` per
  line: the least a script could do to read the stream.

Turns alternate (ours, bare, ours, ...), best of N each, so load from other processes on the
machine hits both sides alike. Bar: ours <= 1.3x bare.

``process_llm`` reads its stream on the thread that iterates it, with a sync ``httpx.Client``
(``perso_sync/_llm_caller.py``): no loop hop and no queue per event, only the parser and the
turn's bookkeeping on top of the read. An info row puts the transport's own floor beside it: the
same stream read with a bare sync ``httpx.Client`` (``iter_raw()``, lines split, ``json.loads``
per line). The mock writes each event as its own HTTP chunk, which httpx hands over one at a
time through its layers (h11, httpcore, httpx), where ``requests`` reads the chunks in C: that
difference is most of what separates ours from the baseline.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable

from bench._mock_process import MockProcess
from bench._report import Row, format_table

EVENTS = 2000
ROUNDS = int(os.environ.get("BENCH_LLM_ROUNDS", "7"))
BAR = 1.3


def _events() -> list[dict[str, str]]:
    return [{"status": "success", "type": "message", "content": f"w{i} "} for i in range(EVENTS)]


def _ours(url: str, session_id: str) -> float:
    from perso_sync import LlmProcessor

    with LlmProcessor(api_server=url, session_id=session_id, timeout=30.0) as processor:
        start = time.perf_counter()
        count = sum(1 for _ in processor.process_llm("go"))
        elapsed = time.perf_counter() - start
    if count < EVENTS:
        raise RuntimeError(f"process_llm yielded {count} chunks, expected >= {EVENTS}")
    return elapsed


def _bare(http: object, url: str, session_id: str) -> float:
    import requests

    assert isinstance(http, requests.Session)
    body = {"messages": [{"role": "user", "content": "go"}], "tools": []}
    start = time.perf_counter()
    with http.post(
        f"{url}/api/v1/session/{session_id}/llm/v2/", json=body, stream=True, timeout=30
    ) as response:
        response.raise_for_status()
        count = _message_events(response.iter_lines())
    elapsed = time.perf_counter() - start
    _check_count("the bare reader", count)
    return elapsed


def _message_events(lines: Iterable[bytes]) -> int:
    """The baselines' whole per-line work: json.loads of each ``data:`` line, counting messages."""
    count = 0
    for line in lines:
        if line.startswith(b"data: "):
            event = json.loads(line[6:])
            if event.get("type") == "message":
                count += 1
    return count


def _check_count(reader: str, count: int) -> None:
    if count != EVENTS:
        raise RuntimeError(f"{reader} saw {count} message events, expected {EVENTS}")


def _bare_httpx_turn(http: object, url: str, session_id: str) -> float:
    import httpx

    assert isinstance(http, httpx.Client)
    body = {"messages": [{"role": "user", "content": "go"}], "tools": []}
    start = time.perf_counter()
    count = 0
    with http.stream(
        "POST", f"{url}/api/v1/session/{session_id}/llm/v2/", json=body, timeout=30
    ) as response:
        pending = b""
        for data in response.iter_raw():
            pending += data
            *lines, pending = pending.split(b"\n")
            count += _message_events(lines)
    elapsed = time.perf_counter() - start
    _check_count("the bare httpx reader", count)
    return elapsed


def _measure() -> tuple[list[float], list[float], list[float]]:
    import requests

    import perso_sync

    ours: list[float] = []
    bare: list[float] = []
    bare_httpx: list[float] = []
    import httpx

    with MockProcess() as mock, requests.Session() as http, httpx.Client() as bare_client:
        with perso_sync.PersoClient(api_key=mock.api_key, api_server=mock.url) as client:
            sid = client.create_session_id(params=mock.session_params())
        mock.control(
            "PUT",
            "llm_script",
            {
                "session_id": sid,
                "rules": [{"pattern": ".", "events": _events()}],
                "delay": 0,
                "framing": "platform",
            },
        )
        _ours(mock.url, sid)  # warm-up: runtime thread, httpx import, first connection
        _bare(http, mock.url, sid)
        _bare_httpx_turn(bare_client, mock.url, sid)  # warm: the connection
        for _ in range(ROUNDS):  # interleaved: load changes hit both alike
            ours.append(_ours(mock.url, sid))
            bare.append(_bare(http, mock.url, sid))
            bare_httpx.append(_bare_httpx_turn(bare_client, mock.url, sid))
    return ours, bare, bare_httpx


def run() -> list[Row]:
    ours, bare, bare_httpx = _measure()
    best_ours, best_bare = min(ours) * 1000, min(bare) * 1000
    return [
        Row(
            metric=f"LLM turn, {EVENTS} events, best of {ROUNDS} (process_llm vs requests+json)",
            ours=best_ours,
            baseline=best_bare,
            unit="ms",
            bar=f"<= {BAR:g}x bare (aim 1.15x)",
            passed=best_ours <= BAR * best_bare,
        ),
        Row(
            metric=f"LLM turn, {EVENTS} events: bare sync httpx + json (info: transport floor)",
            ours=min(bare_httpx) * 1000,
            baseline=best_bare,
            unit="ms",
            bar="(info)",
            passed=True,
        ),
    ]


if __name__ == "__main__":
    print(format_table(run()))
