"""Record mode against the mock server: the written files hold no key, validate, and verify
cleanly on both sides (consumer: the client; provider: the mock)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from perso_sync.contracts import _record as record_module
from perso_sync.contracts import load_contracts
from perso_sync.contracts.__main__ import main
from perso_sync.contracts._consumer import run_consumer
from perso_sync.contracts._provider import run_provider

KEY = "sk-perso-record-7f3a9c1e5b"
CORPUS = Path(__file__).resolve().parents[2] / "contracts"


def _record(perso_mock: Any, out: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    perso_mock.api_key = KEY
    monkeypatch.setenv("PERSO_INTERACTIVE_API_KEY", KEY)
    return main(["record", "--out", str(out), "--api-server", perso_mock.url + "/"])


def test_recorded_contracts_hold_no_key_and_verify_on_both_sides(
    perso_mock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key also comes back in a response body: it must be scrubbed there too.
    echo = [{"mcpserver_id": "mcp-echo", "name": f"echo {KEY}", "url": "https://mcp.example.com"}]
    perso_mock.faults.fail("mcp_servers", 200, body=echo)
    assert _record(perso_mock, tmp_path, monkeypatch) == 0

    files = sorted(tmp_path.glob("*.json"))
    assert {p.stem for p in files} == {
        "settings",
        "session_templates",
        "session_create",
        "session_scoped",
        "llm",
        "errors",
    }
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path.name
    settings = {
        c["name"]: c for c in json.loads((tmp_path / "settings.json").read_text())["contracts"]
    }
    mcp = settings["get_mcp_servers lists the organization's mcp servers"]["interactions"][0]
    assert mcp["request"]["headers"] == {"PersoLive-APIKey": "<redacted>"}
    assert mcp["response"]["json"][0]["name"] == "echo <redacted>"

    contracts = [c for f in load_contracts(tmp_path) for c in f.contracts]
    calls = {c.expect.call for c in contracts}
    assert {"client.create_session_id", "client.transcribe", "llm.process_llm"} <= calls
    session_scoped = [c for c in contracts if c.expect.call == "client.get_session_info"]
    assert all("/s-recorded-" in c.interactions[0].request.path for c in session_scoped)
    assert any(c.expect.raises is not None for c in contracts)

    for contract in contracts:
        assert run_consumer(contract) == [], contract.id
        perso_mock.reset()
        assert run_provider(contract, perso_mock) == [], contract.id


def test_a_failing_step_stops_the_recording_with_a_message_without_the_key(
    perso_mock: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    perso_mock.faults.fail("prompts", 500, body={"errors": [{"code": "boom", "detail": KEY}]})
    assert _record(perso_mock, tmp_path, monkeypatch) == 1
    err = capsys.readouterr().err
    assert "get_prompts" in err
    assert KEY not in err
    assert list(tmp_path.glob("*.json")) == []


def test_record_needs_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PERSO_INTERACTIVE_API_KEY", raising=False)
    assert main(["record", "--out", str(tmp_path)]) == 2
    assert "PERSO_INTERACTIVE_API_KEY" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_key_that_slips_through_is_caught_and_nothing_is_kept(
    perso_mock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Disable the scrubbing to prove the last check (searching the written bytes) works alone.
    perso_mock.faults.fail(
        "mcp_servers", 200, body=[{"mcpserver_id": KEY, "name": "x", "url": "u"}]
    )
    monkeypatch.setattr(record_module, "_scrub", lambda value, replacements: value)
    assert _record(perso_mock, tmp_path, monkeypatch) == 1
    assert list(tmp_path.glob("*.json")) == []


def test_verify_accepts_the_corpus_and_names_file_and_field_of_a_broken_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(CORPUS)]) == 0
    assert "contracts in" in capsys.readouterr().out
    broken = json.loads((CORPUS / "errors.json").read_text())
    broken["contracts"][1]["interactions"][0]["response"]["status"] = "502"
    (tmp_path / "errors.json").write_text(json.dumps(broken))
    assert main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "errors.json" in err
    assert ".interactions[0].response.status: must be an HTTP status" in err
