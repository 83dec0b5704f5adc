"""The shared input checks: what counts as sendable text and as a timeout."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perso_sync._validate import check_seconds, check_text, check_timeout, json_body
from perso_sync.errors import InvalidInputError


@given(st.text(min_size=1).filter(str.strip))
def test_any_encodable_text_passes_unchanged(text: str) -> None:
    assert check_text("message", text) is text


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "\udc80 tail"])
def test_a_lone_surrogate_is_refused_with_its_position(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="lone surrogate") as raised:
        check_text("message", bad)
    assert "message" in str(raised.value)


@pytest.mark.parametrize("bad", ["", "   ", None, 7, b"bytes"])
def test_empty_or_non_string_text_is_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="message"):
        check_text("message", bad)


def test_blank_text_passes_when_allowed() -> None:
    assert check_text("detail", "", allow_blank=True) == ""


@pytest.mark.parametrize("good", [0.001, 1, 2.5, 1e9])
def test_positive_finite_timeouts_pass_as_floats(good: float) -> None:
    assert check_timeout("timeout", good) == float(good)
    assert check_seconds("timeout", good) == float(good)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, -1, 0, 0.0, math.nan, "5", True, False])
def test_other_timeouts_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="timeout"):
        check_timeout("timeout", bad)


def test_none_is_no_limit_unless_a_value_is_required() -> None:
    assert check_timeout("timeout", None) is None
    with pytest.raises(InvalidInputError, match="not None"):
        check_seconds("ping_timeout", None)


def test_json_body_escapes_a_lone_surrogate_like_json_stringify() -> None:
    body = {"content": "ok é \ud800"}
    encoded = json_body(body)
    assert b"\\ud800" in encoded
    assert json.loads(encoded) == body
    assert json_body({"content": "é", "n": [1, 2]}) == '{"content":"é","n":[1,2]}'.encode()
