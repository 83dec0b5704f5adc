"""``python -m mock_server``: run the mock Perso platform until Ctrl-C or SIGTERM.

Prints exactly one line, e.g.
``Perso mock server on http://127.0.0.1:8123 (API key: test-key)``, then serves.

It binds to loopback by default. Its control API (``/_mock/``: reset, faults, the journal of every
request body) has no authentication, so any other address is refused unless ``--allow-remote``
is given, and then a warning goes to stderr before the line above.
"""

from __future__ import annotations

import argparse
import ipaddress
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
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host beyond loopback (the unauthenticated control API is then reachable "
        "from the network)",
    )
    return parser.parse_args(argv)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to anything


def _remote_warning(host: str) -> str:
    return (
        f"WARNING: the mock listens on {host}, beyond loopback: anyone who can reach it can use "
        "its unauthenticated control API (/_mock/: reset, faults, the journal of every request "
        "body) and its API key is a test key. Use it on trusted networks only."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not is_loopback(args.host):
        if not args.allow_remote:
            print(
                f"mock_server: refusing to listen on {args.host}: the control API (/_mock/) has "
                "no authentication. Pass --allow-remote to do it anyway.",
                file=sys.stderr,
            )
            return 2
        print(_remote_warning(args.host), file=sys.stderr, flush=True)
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
