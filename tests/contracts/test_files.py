"""Contract files (perso_sync.contracts._files, ._model): the corpus loads and round-trips,
and every malformed field is refused with an error naming the file and the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from _contract_edits import DELETE, edited

from perso_sync import _endpoints as ep
from perso_sync.contracts import (
    ContractFormatError,
    load_contract_file,
    load_contracts,
    parse_contract_file,
)
from perso_sync.contracts._files import dump_contract_file
from perso_sync.contracts._model import FORMAT_ID

CORPUS = Path(__file__).resolve().parents[2] / "contracts"


def _corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


def _all_contracts() -> list[Any]:
    return [c for f in load_contracts(CORPUS) for c in f.contracts]


# ---------------------------------------------------------------------------------------------
# The corpus itself


def test_every_corpus_file_validates_and_round_trips() -> None:
    assert _corpus_files(), "contracts/ has no *.json files"
    for path in _corpus_files():
        loaded = load_contract_file(path)
        again = parse_contract_file(json.loads(dump_contract_file(loaded.contracts)), str(path))
        assert [c.name for c in again.contracts] == [c.name for c in loaded.contracts]
        assert again.contracts == tuple(c for c in loaded.contracts), (
            f"{path.name} changes when written back"
        )


def _template(path: str) -> str:
    # "/api/v1/session/s-1/stt/" -> "/api/v1/session/{}/stt/"
    return re.sub(r"/(session|session_template|text_normalization_config)/[^/]+/", r"/\1/{}/", path)


def test_every_endpoint_of_protocol_3_and_4_has_a_success_contract() -> None:
    endpoints = {
        ("GET", ep.LLM_TYPES),
        ("GET", ep.TTS_TYPES),
        ("GET", ep.STT_TYPES),
        ("GET", ep.MODEL_STYLES),
        ("GET", ep.BACKGROUND_IMAGES),
        ("GET", ep.PROMPTS),
        ("GET", ep.DOCUMENTS),
        ("GET", ep.MCP_SERVERS),
        ("GET", ep.TEXT_NORMALIZATIONS),
        ("GET", _template(ep.text_normalization_download("x"))),
        ("GET", ep.SESSION_TEMPLATES),
        ("GET", _template(ep.session_template("x"))),
        ("POST", ep.SESSIONS),
        ("GET", _template(ep.session_info("x"))),
        ("GET", _template(ep.ice_servers("x"))),
        ("POST", _template(ep.exchange("x"))),
        ("POST", _template(ep.session_event("x"))),
        ("POST", _template(ep.stt("x"))),
        ("POST", _template(ep.tts("x"))),
        ("POST", _template(ep.llm_v2("x"))),
    }
    covered = {
        (i.request.method, _template(i.request.path))
        for c in _all_contracts()
        if c.expect.raises is None
        for i in c.interactions
        if 200 <= i.response.status < 300
    }
    assert endpoints - covered == set()
    sse = [
        c for c in _all_contracts() if any(i.response.body_kind == "sse" for i in c.interactions)
    ]
    assert any(c.expect.raises is None for c in sse), "no successful SSE contract"


def _raised_classes(spec: Any) -> set[str]:
    found: set[str] = set()
    while spec is not None:
        found.add(spec.cls)
        spec = spec.underlying
    return found


def test_every_error_class_of_protocol_2_is_raised_by_some_contract() -> None:
    wanted = {
        "ApiError",
        "SessionCreationError",
        "DoesNotExistError",
        "NotInOrganizationError",
        "LLMError",
        "LLMStreamingResponseError",
        "STTError",
        "TTSError",
        "TTSDecodeError",
        "Timeout",
        "UnsupportedTemplateError",
    }
    raised: set[str] = set()
    for contract in _all_contracts():
        raised |= _raised_classes(contract.expect.raises)
    assert wanted - raised == set()


def test_the_issue_4_error_paths_are_all_there() -> None:
    by_name = {c.name: c for c in _all_contracts()}
    statuses = {i.response.status for c in by_name.values() for i in c.interactions}
    assert {401, 502, 504} <= statuses
    bodies = [
        (i.response.status, i.response.body_kind, i.response.text)
        for c in by_name.values()
        for i in c.interactions
    ]
    assert any(s >= 500 and k == "text" and t.lstrip().startswith("<") for s, k, t in bodies)
    assert any(s >= 500 and k == "text" and t == "" for s, k, t in bodies)
    attrs_kept = [
        c
        for c in by_name.values()
        if c.expect.raises is not None
        and c.expect.raises.cls == "DoesNotExistError"
        and c.expect.raises.fields.get("attr")
    ]
    assert attrs_kept, "no DoesNotExistError contract checks attr"
    no_post = [
        c
        for c in by_name.values()
        if c.expect.raises is not None and c.expect.raises.cls == "UnsupportedTemplateError"
    ]
    assert no_post
    assert all([i.request.method for i in c.interactions] == ["GET"] for c in no_post)
    unknown_session = [
        c
        for c in by_name.values()
        if c.expect.call == "client.get_session_info" and c.expect.raises is not None
    ]
    assert unknown_session
    garbled = [
        c
        for c in by_name.values()
        for i in c.interactions
        if any(item.raw is not None for item in i.response.sse)
    ]
    assert garbled


def test_no_corpus_file_holds_anything_but_redacted_keys() -> None:
    for path in _corpus_files():
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r'"PersoLive-APIKey"\s*:\s*"([^"]*)"', text, re.IGNORECASE):
            assert match.group(1) == "<redacted>", path.name


# ---------------------------------------------------------------------------------------------
# Validation errors name the file and the field


def _minimal() -> dict[str, Any]:
    return {
        "format": FORMAT_ID,
        "contracts": [
            {
                "name": "get_llms lists",
                "provider_states": [{"state": "catalog has", "params": {"kind": "llm_types"}}],
                "interactions": [
                    {
                        "request": {
                            "method": "GET",
                            "path": "/api/v1/settings/llm_type/",
                            "headers": {"PersoLive-APIKey": "<redacted>"},
                        },
                        "response": {"status": 200, "json": [{"name": "gpt-4o-mini"}]},
                        "matchers": {"response.json[*].name": {"match": "type"}},
                    }
                ],
                "expect": {"call": "client.get_llms", "args": {}, "result": [{"name": "x"}]},
            }
        ],
    }


C0 = ("contracts", 0)
I0 = (*C0, "interactions", 0)


@pytest.mark.parametrize(
    ("path", "value", "field", "problem"),
    [
        (("format",), "pact/3", "format", "must be 'perso-contract/1'"),
        ((*C0, "name"), "", "contracts[0].name", "non-empty string"),
        ((*C0, "expect", "call"), "client.nope", ".expect.call", "unknown call"),
        ((*C0, "expect", "args"), {"bogus": 1}, ".expect.args", "takes no argument"),
        ((*C0, "expect", "result"), DELETE, ".expect", "exactly one of 'result' or 'raises'"),
        ((*C0, "expect", "raises"), {"class": "KeyError"}, ".expect.raises.class", "not an exc"),
        ((*I0, "request", "method"), "FETCH", "interactions[0].request.method", "one of"),
        ((*I0, "request", "path"), "api/v1/x?y=1", "interactions[0].request.path", "start with"),
        (
            (*I0, "request", "headers", "PersoLive-APIKey"),
            "sk-live-123",
            "request.headers.PersoLive-APIKey",
            "must be '<redacted>'",
        ),
        ((*I0, "response", "status"), 999, "interactions[0].response.status", "HTTP status"),
        ((*I0, "response", "text"), "", "interactions[0].response", "exactly one body"),
        (
            (*I0, "matchers", "response.json[*].name"),
            {"match": "fuzzy"},
            ".match",
            "must be one of",
        ),
        (
            (*I0, "matchers", "response.json[*].name"),
            {"match": "regex", "regex": "claude-.*"},
            "matchers['response.json[*].name']",
            "does not match its own regex",
        ),
        ((*I0, "matchers", "body..x"), {"match": "type"}, "matchers['body..x']", "malformed"),
        ((*I0, "matchers", "result.x"), {"match": "type"}, "matchers['result.x']", "start with"),
        ((*C0, "provider_states", 0, "state"), 3, "provider_states[0].state", "non-empty"),
        ((*C0, "surprise"), 1, "contracts[0]", "unknown key(s) ['surprise']"),
    ],
)
def test_a_malformed_contract_is_refused_naming_file_and_field(
    path: tuple[Any, ...], value: Any, field: str, problem: str
) -> None:
    with pytest.raises(ContractFormatError) as info:
        parse_contract_file(edited(_minimal(), path, value), "contracts/broken.json")
    message = str(info.value)
    assert message.startswith("contracts/broken.json: ")
    assert field in info.value.field
    assert problem in message


def test_a_file_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "bad.json"
    broken.write_text('{"format": "perso-contract/1",\n "contracts": [}\n')
    with pytest.raises(ContractFormatError, match=r"bad\.json: <file>: is not JSON \(line 2"):
        load_contract_file(broken)


def test_the_minimal_contract_is_valid() -> None:
    parsed = parse_contract_file(_minimal(), "x.json")
    assert parsed.contracts[0].expect.call == "client.get_llms"
