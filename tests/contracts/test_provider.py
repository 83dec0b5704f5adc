"""Provider side: every contract of contracts/ replayed against the mock server (its provider
states set up through the mock's Python API), answers checked under the contracts' matchers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from perso_sync.contracts import Contract, iter_contracts
from perso_sync.contracts._provider import run_provider

CORPUS = Path(__file__).resolve().parents[2] / "contracts"
CONTRACTS = list(iter_contracts(CORPUS))


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c.id for c in CONTRACTS])
def test_mock_server_honours_contract(contract: Contract, perso_mock: Any) -> None:
    mismatches = run_provider(contract, perso_mock)
    assert not mismatches, "\n".join(str(m) for m in mismatches)
