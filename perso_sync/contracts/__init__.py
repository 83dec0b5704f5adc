"""Recorded request/response contracts between perso_sync and the Perso platform.

The corpus lives in ``contracts/*.json`` (format: ``contracts/README.md``). The same files drive
the client's consumer tests (fake transport), the mock server's provider verification, and can be
refreshed against a real server with the record mode::

    python -m perso_sync.contracts record --out DIR [--api-server URL]   # key from the env
    python -m perso_sync.contracts verify DIR
"""

from __future__ import annotations

from perso_sync.contracts._files import (
    iter_contracts,
    load_contract_file,
    load_contracts,
    parse_contract_file,
)
from perso_sync.contracts._match import (
    Mismatch,
    check_outcome,
    check_request,
    check_response,
    compare,
)
from perso_sync.contracts._model import (
    FORMAT_ID,
    REDACTED,
    Contract,
    ContractFile,
    ContractFormatError,
    Expectation,
    Interaction,
    Matcher,
    ProviderState,
)

__all__ = [
    "FORMAT_ID",
    "REDACTED",
    "Contract",
    "ContractFile",
    "ContractFormatError",
    "Expectation",
    "Interaction",
    "Matcher",
    "Mismatch",
    "ProviderState",
    "check_outcome",
    "check_request",
    "check_response",
    "compare",
    "iter_contracts",
    "load_contract_file",
    "load_contracts",
    "parse_contract_file",
]
