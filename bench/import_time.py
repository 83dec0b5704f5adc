"""Import cost: ``import perso_sync`` (and reaching the REST client) vs ``import requests``.

Each figure is the median of fresh interpreters (nothing cached in ``sys.modules``), alternating
ours and the baseline so that machine load hits both alike. Inside each interpreter only the
import itself is timed (``time.perf_counter`` around it), not the interpreter's start-up.

- ours: ``import perso_sync`` then ``perso_sync.PersoClient`` (the lazy name table loads the
  REST client, which imports requests, tenacity, attrs and cattrs);
- baseline: ``import requests``.

Bar (docs/ARCHITECTURE.md, "Quality bars"): at most 150 ms added on top of requests; aiortc and
av are not imported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from bench._mock_process import REPO
from bench._report import Row, format_table

RUNS = 15
BAR_ADDED_MS = 150.0

_PROBE = """
import json, sys, time
started = time.perf_counter()
{statement}
elapsed = time.perf_counter() - started
heavy = sorted(name for name in ("aiortc", "av", "anyio", "httpx") if name in sys.modules)
print(json.dumps({{"ms": elapsed * 1000, "heavy": heavy}}))
"""

OURS = "import perso_sync; perso_sync.PersoClient"
BASELINE = "import requests"


def _measure(statement: str) -> tuple[float, list[str]]:
    output = subprocess.run(
        [sys.executable, "-c", _PROBE.format(statement=statement)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result = json.loads(output)
    return float(result["ms"]), list(result["heavy"])


def run() -> list[Row]:
    ours: list[float] = []
    base: list[float] = []
    heavy: set[str] = set()
    _measure(OURS)  # warm the OS file cache for both
    _measure(BASELINE)
    for _ in range(RUNS):
        ms, loaded = _measure(OURS)
        ours.append(ms)
        heavy.update(loaded)
        base.append(_measure(BASELINE)[0])
    ours_ms = statistics.median(ours)
    base_ms = statistics.median(base)
    added = ours_ms - base_ms
    webrtc = sorted(heavy & {"aiortc", "av"})
    return [
        Row(
            metric="import perso_sync + PersoClient",
            ours=ours_ms,
            baseline=base_ms,
            unit="ms",
            bar=f"<= requests + {BAR_ADDED_MS:g} ms",
            passed=added <= BAR_ADDED_MS,
        ),
        Row(
            metric="  of which added over requests",
            ours=added,
            baseline=None,
            unit="ms",
            bar=f"<= {BAR_ADDED_MS:g} ms",
            passed=added <= BAR_ADDED_MS,
        ),
        Row(
            metric="aiortc/av loaded by the import" + (f" ({', '.join(webrtc)})" if webrtc else ""),
            ours=len(webrtc),
            baseline=None,
            unit="modules",
            bar="0",
            passed=not webrtc,
        ),
    ]


if __name__ == "__main__":
    print(format_table(run()))
