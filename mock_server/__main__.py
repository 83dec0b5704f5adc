"""``python -m mock_server``: run the mock Perso platform until Ctrl-C or SIGTERM.

Prints exactly one line, e.g.
``Perso mock server on http://127.0.0.1:8123 (API key: test-key)``, then serves.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from mock_server import MockPersoServer
from mock_server.catalog import CatalogError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mock_server", description="Run the mock Perso Interactive platform."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    parser.add_argument("--catalog", default=None, help="JSON file replacing seeded data")
    parser.add_argument("--api-key", default="test-key", help="the accepted API key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server = MockPersoServer(
            api_key=args.api_key, host=args.host, port=args.port, catalog=args.catalog
        )
    except CatalogError as exc:
        print(f"mock_server: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"mock_server: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"Perso mock server on {server.url} (API key: {server.api_key})", flush=True)
        # wait() with a timeout keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
