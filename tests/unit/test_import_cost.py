"""``import perso_sync`` (and the REST client) stays light: no aiortc, av, anyio or async HTTP,
and no rich (only the ``perso`` CLI uses it).

Checked in a fresh interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiortc", "av", "anyio", "httpx", "aiohttp", "rich")

# Each step runs after the previous one; the heavy modules loaded so far are reported per step.
PROBE = """
import json, sys
heavy = {heavy!r}
def loaded():
    return sorted(name for name in sys.modules if name.split(".")[0] in heavy)
report = {{}}
import perso_sync
report["import perso_sync"] = loaded()
perso_sync.PersoClient, perso_sync.SessionParams, perso_sync.get_llms, perso_sync.SessionInfo
report["REST names"] = loaded()
perso_sync.PersoClient(api_key="k", api_server="http://127.0.0.1:9").close()
report["a client"] = loaded()
print(json.dumps(report))
"""


def test_import_and_rest_client_load_no_heavy_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"import perso_sync": [], "REST names": [], "a client": []}
