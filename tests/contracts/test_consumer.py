"""Consumer side: every contract of contracts/ replayed to the real client, through its public
API (PersoClient, a REST-only Session, LlmProcessor), with the responses served by `responses`
and an httpx.MockTransport."""

from __future__ import annotations

from pathlib import Path

import pytest

from perso_sync.contracts import Contract, iter_contracts
from perso_sync.contracts._consumer import run_consumer

CORPUS = Path(__file__).resolve().parents[2] / "contracts"
CONTRACTS = list(iter_contracts(CORPUS))


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c.id for c in CONTRACTS])
def test_client_honours_contract(contract: Contract) -> None:
    mismatches = run_consumer(contract)
    assert not mismatches, "\n".join(str(m) for m in mismatches)
