"""`make bench`: run every benchmark module in bench/ and print one table."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

from bench._report import Row, format_table


def main() -> int:
    rows: list[Row] = []
    failed: list[str] = []
    package = importlib.import_module("bench")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        run = getattr(module, "run", None)
        if run is None:
            continue
        print(f"running bench/{info.name}.py ...", file=sys.stderr, flush=True)
        try:
            rows.extend(run())
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed.append(info.name)
            traceback.print_exc()
    print(format_table(rows))
    if failed:
        print(f"benchmarks that crashed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
