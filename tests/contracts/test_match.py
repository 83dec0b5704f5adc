"""Matching observed values against contracts (perso_sync.contracts._match): the matchers, and proof
that a broken contract or a drifting client makes the checkers fail."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from _contract_edits import edited
from hypothesis import given, settings
from hypothesis import strategies as st

from perso_sync import errors
from perso_sync.contracts import (
    Matcher,
    check_outcome,
    check_response,
    compare,
    load_contracts,
    parse_contract_file,
)
from perso_sync.contracts._match import ObservedRequest, check_request
from perso_sync.contracts._model import SseItem, parse_sse_body, render_sse

CORPUS = Path(__file__).resolve().parents[2] / "contracts"


def _corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


def _all_contracts() -> list[Any]:
    return [c for f in load_contracts(CORPUS) for c in f.contracts]


# ---------------------------------------------------------------------------------------------
# Matchers


@pytest.mark.parametrize(
    ("matcher", "expected", "actual", "ok"),
    [
        (None, {"a": 1}, {"a": 1, "extra": True}, True),  # servers add fields
        (None, {"a": 1}, {"a": 2}, False),
        (None, [1, 2], [1, 2, 3], False),
        (None, 1, 1.0, True),
        (None, True, 1, False),
        (Matcher("type"), "x", "anything", True),
        (Matcher("type"), "x", 3, False),
        (Matcher("type"), [{"n": "a"}], [{"n": "b"}, {"n": "c"}], True),
        (Matcher("type", min=1), [{"n": "a"}], [], False),
        (Matcher("type"), {"a": []}, {"a": [1, "x"]}, True),  # nothing recorded: any array
        (Matcher("type"), [1, "x"], [2, "y"], True),  # same length: element-wise
        (Matcher("type"), [1, "x"], [2, 3, 4], True),  # another length: each like the first
        (Matcher("type"), [{"n": "a"}], [{"n": 1}], False),
        (Matcher("regex", regex=r"plp-\w+"), "plp-1", "plp-abc", True),
        (Matcher("regex", regex=r"plp-\w+"), "plp-1", "s-abc", False),
        (Matcher("regex", regex=r"plp-\w+"), "plp-1", None, False),
        (Matcher("timestamp"), "", "2024-05-02T09:05:55.395Z", True),
        (Matcher("timestamp"), "", "2024-05-02T09:05:55.123456789+09:00", True),
        (Matcher("timestamp"), "", "2024-13-02T09:05:55Z", False),
        (Matcher("timestamp"), "", "yesterday", False),
        (Matcher("present"), "x", None, True),
        (Matcher("exact"), {"a": 1}, {"a": 1}, True),
    ],
)
def test_matchers(matcher: Matcher | None, expected: Any, actual: Any, ok: bool) -> None:
    rules = {"value": matcher} if matcher else {}
    assert (compare(expected, actual, rules) == []) is ok


def test_a_missing_key_is_reported_even_under_present() -> None:
    mismatches = compare({"a": 1}, {}, {"value.a": Matcher("present")})
    assert [str(m) for m in mismatches] == ["value.a: is missing"]


def test_strict_objects_report_extra_fields() -> None:
    # request bodies: an omitted optional field must stay absent
    found = compare({"prompt": "p"}, {"prompt": "p", "document": None}, strict_objects=True)
    assert [m.path for m in found] == ["value.document"]


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=50, deadline=None)
def test_a_value_always_matches_itself_exactly_and_by_type(value: Any) -> None:
    assert compare(value, copy.deepcopy(value)) == []
    assert compare(value, copy.deepcopy(value), {"value": Matcher("type")}) == []


@given(
    st.lists(
        st.one_of(
            st.builds(SseItem, data=json_values),
            st.builds(
                SseItem,
                raw=st.text(
                    alphabet=st.characters(
                        blacklist_characters="\r\n", blacklist_categories=("Cs",)
                    ),
                    min_size=1,
                ).filter(lambda s: s.strip() and not s.startswith((":", "data:"))),
            ),
        ),
        max_size=6,
    ),
    st.sampled_from(["lines", "sse", "crlf"]),
    st.booleans(),
)
@settings(max_examples=50, deadline=None)
def test_sse_bodies_parse_back_to_their_events_in_every_framing(
    items: list[SseItem], framing: str, final_newline: bool
) -> None:
    body = render_sse(items, framing, final_newline)
    assert parse_sse_body(body) == items


# ---------------------------------------------------------------------------------------------
# Done-when proof: a broken contract makes the checkers fail


def _corpus_contract(name: str) -> Any:
    return next(c for c in _all_contracts() if c.name == name)


def _mutated(contract_name: str, path: tuple[Any, ...], value: Any) -> Any:
    for file in _corpus_files():
        data = json.loads(file.read_text(encoding="utf-8"))
        for index, contract in enumerate(data["contracts"]):
            if contract["name"] == contract_name:
                broken = edited(data, ("contracts", index, *path), value)
                return next(
                    c for c in parse_contract_file(broken).contracts if c.name == contract_name
                )
    raise AssertionError(contract_name)


GET_LLMS = "get_llms lists the organization's llm types"


def _served(contract: Any) -> tuple[int, dict[str, str], bytes]:
    response = contract.interactions[0].response
    return response.status, {"Content-Type": response.content_type()}, response.body_bytes()


def test_the_unbroken_contract_passes_the_response_check() -> None:
    contract = _corpus_contract(GET_LLMS)
    assert check_response(contract.interactions[0], *_served(contract)) == []


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("interactions", 0, "response", "status"), 201, "response.status"),
        (("interactions", 0, "response", "json", 0, "name"), "gpt-5", "response.json[0].name"),
        (("interactions", 0, "response", "json", 0, "owner"), "me", "response.json[0].owner"),
    ],
)
def test_a_broken_response_makes_the_provider_check_fail(
    path: tuple[Any, ...], value: Any, where: str
) -> None:
    # What a provider following the real contract answers, judged by the broken copy.
    served = _served(_corpus_contract(GET_LLMS))
    broken = _mutated(GET_LLMS, path, value)
    mismatches = check_response(broken.interactions[0], *served)
    assert [m.path for m in mismatches] == [where]


def test_a_broken_request_makes_the_consumer_request_check_fail() -> None:
    contract = _corpus_contract(
        "create_session_id (form A) sends the params and the capability list in order"
    )
    sent = contract.interactions[0].request
    observed = ObservedRequest(
        method="POST",
        path=sent.path,
        query={},
        headers={"PersoLive-APIKey": "k", "Content-Type": "application/json"},
        body=json.dumps(sent.json).encode(),
    )
    assert check_request(contract.interactions[0], observed) == []
    broken = _mutated(
        contract.name,
        ("interactions", 0, "request", "json", "capability"),
        ["LLM", "STF_WEBRTC", "TTS", "STT"],
    )
    assert [m.path for m in check_request(broken.interactions[0], observed)] == [
        "request.json.capability[0]",
        "request.json.capability[1]",
    ]
    without_key = ObservedRequest(
        method="POST", path=sent.path, query={}, headers={}, body=observed.body
    )
    assert "request.headers.PersoLive-APIKey" in [
        m.path for m in check_request(contract.interactions[0], without_key)
    ]


def test_a_broken_expectation_makes_the_outcome_check_fail() -> None:
    contract = _corpus_contract("create_session_id with an unknown prompt raises DoesNotExistError")
    right = errors.DoesNotExistError(
        400, "does_not_exist", "Object with prompt_id=p-404 does not exist.", "prompt"
    )
    assert check_outcome(contract.expect, error=right) == []
    wrong_attr = errors.DoesNotExistError(400, "does_not_exist", right.detail, "document")
    assert "raises.attr" in [m.path for m in check_outcome(contract.expect, error=wrong_attr)]
    too_generic = errors.SessionCreationError(400, "does_not_exist", right.detail, "prompt")
    assert [m.path for m in check_outcome(contract.expect, error=too_generic)] == ["raises.class"]
    assert [m.path for m in check_outcome(contract.expect, result="s-1")] == ["raises"]


def test_a_broken_contract_fails_the_consumer_runner() -> None:
    from perso_sync.contracts._consumer import run_consumer

    assert run_consumer(_corpus_contract(GET_LLMS)) == []
    wrong_field = _mutated(GET_LLMS, ("expect", "result", 0, "name"), "gpt-5")
    assert [m.path for m in run_consumer(wrong_field)] == ["result[0].name"]
    wrong_status = _mutated(GET_LLMS, ("interactions", 0, "response", "status"), 500)
    assert [m.path for m in run_consumer(wrong_status)] == ["result"]
    wrong_path = _mutated(GET_LLMS, ("interactions", 0, "request", "path"), "/api/v1/llm/")
    found = [str(m) for m in run_consumer(wrong_path)]
    assert any("unexpected request GET /api/v1/settings/llm_type/" in m for m in found)
    assert any("GET /api/v1/llm/ was never sent" in m for m in found)


def test_a_broken_contract_fails_the_provider_runner(perso_mock: Any) -> None:
    from perso_sync.contracts._provider import run_provider

    assert run_provider(_corpus_contract(GET_LLMS), perso_mock) == []
    perso_mock.reset()
    wrong_status = _mutated(GET_LLMS, ("interactions", 0, "response", "status"), 201)
    assert [m.path for m in run_provider(wrong_status, perso_mock)] == [
        "interactions[0].response.status"
    ]
    perso_mock.reset()
    wrong_field = _mutated(
        GET_LLMS, ("interactions", 0, "response", "json", 1, "service"), "anthropic"
    )
    assert [m.path for m in run_provider(wrong_field, perso_mock)] == [
        "interactions[0].response.json[1].service"
    ]
