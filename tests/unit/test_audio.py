"""perso_sync.audio, the public audio module: importing it loads neither PyAV nor aiortc."""

from __future__ import annotations

import subprocess
import sys


def test_import_perso_sync_does_not_load_pyav() -> None:
    code = (
        "import sys, perso_sync, perso_sync.audio;"
        "perso_sync.get_wav_sample_rate;"
        "assert 'av' not in sys.modules and 'aiortc' not in sys.modules, 'loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
