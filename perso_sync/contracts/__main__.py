"""``python -m perso_sync.contracts``: record contracts from a server, or verify contract files.

    python -m perso_sync.contracts record --out DIR [--api-server URL]
        key from $PERSO_INTERACTIVE_API_KEY (never a command-line flag: it would land in shell
        history and in the process list)
    python -m perso_sync.contracts verify [--consumer] DIR
        validate every *.json file of DIR; with --consumer, also replay each contract to the
        client (needs the test dependency ``responses``)

Exit status: 0 on success, 1 when a file is malformed, a contract fails, or recording fails,
2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from perso_sync._endpoints import DEFAULT_API_SERVER
from perso_sync.contracts._files import load_contracts
from perso_sync.contracts._model import ContractFormatError
from perso_sync.errors import PersoError

API_KEY_ENV = "PERSO_INTERACTIVE_API_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m perso_sync.contracts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record contracts from a server")
    rec.add_argument("--out", required=True, help="directory to write the contract files into")
    rec.add_argument(
        "--api-server",
        default=os.environ.get("PERSO_API_SERVER") or DEFAULT_API_SERVER,
        help="server to record from (default: $PERSO_API_SERVER or %(default)s)",
    )
    ver = sub.add_parser("verify", help="validate contract files")
    ver.add_argument("directory")
    ver.add_argument("--consumer", action="store_true", help="also replay them to the client")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "record":
        return _record(args.out, args.api_server)
    return _verify(args.directory, consumer=args.consumer)


def _record(out: str, api_server: str) -> int:
    from perso_sync.contracts._record import KeyTooShortError, record

    api_key = os.environ.get(API_KEY_ENV, "").strip()
    if not api_key:
        print(f"error: set ${API_KEY_ENV} to record", file=sys.stderr)
        return 2
    try:
        written = record(out, api_key=api_key, api_server=api_server)
    except KeyTooShortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (PersoError, OSError, RuntimeError, ValueError) as exc:
        print(f"error: recording failed: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def _verify(directory: str, *, consumer: bool) -> int:
    try:
        files = load_contracts(directory)
    except ContractFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not files:
        print(f"error: no *.json contract files in {directory}", file=sys.stderr)
        return 1
    failed = 0
    count = 0
    for contract_file in files:
        for contract in contract_file.contracts:
            count += 1
            if not consumer:
                continue
            from perso_sync.contracts._consumer import run_consumer

            mismatches = run_consumer(contract)
            if mismatches:
                failed += 1
                print(f"FAIL {contract.id}", file=sys.stderr)
                for mismatch in mismatches:
                    print(f"    {mismatch}", file=sys.stderr)
    checked = "valid and honoured by the client" if consumer else "valid"
    if failed:
        print(f"{failed} of {count} contracts failed", file=sys.stderr)
        return 1
    print(f"{count} contracts in {len(files)} files: {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
