"""Models: SessionParams validation before any request, open enums, NOT_GIVEN, immutability."""

from __future__ import annotations

import math
import pickle
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perso_sync import models
from perso_sync._converter import unstructure
from perso_sync.errors import InvalidInputError
from perso_sync.models import (
    NOT_GIVEN,
    CapabilityName,
    SessionEvent,
    SessionParams,
    SessionStatus,
    TerminationReason,
)

REQUIRED: dict[str, Any] = {"using_stf_webrtc": True, "model_style": "style", "prompt": "p1"}


def _params(**overrides: Any) -> SessionParams:
    return SessionParams(**{**REQUIRED, **overrides})


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_field_is_named(missing: str) -> None:
    kwargs = {key: value for key, value in REQUIRED.items() if key != missing}
    with pytest.raises(InvalidInputError, match=rf"SessionParams\.{missing} is required"):
        SessionParams(**kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("using_stf_webrtc", 1),
        ("using_stf_webrtc", "yes"),
        ("model_style", ""),
        ("model_style", "   "),
        ("prompt", None),
        ("prompt", 7),
        ("document", ""),
        ("llm_type", 5),
        ("mcp_servers", "mcp-1"),
        ("mcp_servers", ["ok", ""]),
        ("mcp_servers", [1]),
    ],
)
def test_wrong_values_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(InvalidInputError, match=rf"SessionParams\.{field}"):
        _params(**{field: value})


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [("padding_left", -1.0, 1.0), ("padding_top", 0.0, 1.0), ("padding_height", 0.0, 5.0)],
)
def test_padding_ranges_are_inclusive(field: str, low: float, high: float) -> None:
    assert getattr(_params(**{field: low}), field) == low
    assert getattr(_params(**{field: high}), field) == high
    for bad in (low - 0.001, high + 0.001, math.nan, True, "0.5"):
        with pytest.raises(InvalidInputError, match=rf"SessionParams\.{field}"):
            _params(**{field: bad})


@pytest.mark.parametrize("field", ["text_normalization_locale", "stt_text_normalization_locale"])
def test_locale_limit_and_none_versus_not_given(field: str) -> None:
    assert getattr(_params(), field) is NOT_GIVEN
    assert getattr(_params(**{field: None}), field) is None
    assert getattr(_params(**{field: "x" * 10}), field) == "x" * 10
    for bad in ("x" * 11, "", 3):
        with pytest.raises(InvalidInputError, match=rf"SessionParams\.{field}"):
            _params(**{field: bad})


def test_capabilities_in_documented_order() -> None:
    params = _params(stt_type="whisper", tts_type="jenny", llm_type="gpt")
    assert params.capabilities() == [
        CapabilityName.STF_WEBRTC,
        CapabilityName.LLM,
        CapabilityName.TTS,
        CapabilityName.STT,
    ]
    assert _params(using_stf_webrtc=False, tts_type="jenny").capabilities() == [CapabilityName.TTS]


def test_mcp_servers_is_a_copy() -> None:
    ids = ["a", "b"]
    params = _params(mcp_servers=ids)
    ids.append("c")
    assert params.mcp_servers == ["a", "b"]


def test_from_mapping_sends_unknown_keys_as_extra() -> None:
    params = SessionParams.from_mapping({**REQUIRED, "tts_type": "t", "beta": 1})
    assert params.tts_type == "t"
    assert params.extra == {"beta": 1}
    with pytest.raises(InvalidInputError, match=r"SessionParams\.prompt is required"):
        SessionParams.from_mapping({"using_stf_webrtc": True, "model_style": "m"})
    with pytest.raises(InvalidInputError):
        SessionParams.from_mapping(["not", "a", "dict"])  # type: ignore[arg-type]


def test_models_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        _params().prompt = "other"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        models.LLMType(name="x").name = "y"  # type: ignore[misc]


def test_not_given_is_falsy_with_a_clear_repr() -> None:
    assert not NOT_GIVEN
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert pickle.loads(pickle.dumps(NOT_GIVEN)) is NOT_GIVEN


@pytest.mark.parametrize(
    "enum_cls", [CapabilityName, SessionStatus, TerminationReason, SessionEvent]
)
def test_open_enums_accept_unknown_values(enum_cls: Any) -> None:
    for member in enum_cls:
        assert enum_cls(member.value) is member
        assert member.is_known
        assert str(member) == member.value
    unknown = enum_cls("ADDED_LATER")
    assert isinstance(unknown, enum_cls)
    assert unknown == "ADDED_LATER"
    assert str(unknown) == "ADDED_LATER"
    assert not unknown.is_known
    assert "ADDED_LATER" not in [member.value for member in enum_cls]
    assert pickle.loads(pickle.dumps(unknown)) == "ADDED_LATER"
    with pytest.raises(ValueError):  # noqa: PT011 - only strings are values of a str enum
        enum_cls(5)


def test_documented_enum_values() -> None:
    assert [m.value for m in SessionStatus] == ["CREATED", "EXCHANGED", "IN_PROGRESS", "TERMINATED"]
    assert {m.value for m in CapabilityName} == {"LLM", "TTS", "STT", "STF_ONPREMISE", "STF_WEBRTC"}
    assert len(TerminationReason) == 7
    assert len(SessionEvent) == 8


def test_session_info_capability_helpers() -> None:
    info = models.SessionInfo(
        session_id="s",
        capability=[models.Capability(name=CapabilityName("LLM"))],
    )
    assert info.has_capability("LLM")
    assert not info.uses_webrtc
    webrtc = attrs.evolve(info, capability=[models.Capability(name=CapabilityName.STF_ONPREMISE)])
    assert webrtc.uses_webrtc


_ids = st.none() | st.text(min_size=1, max_size=6).filter(str.strip)
_locales = st.sampled_from([NOT_GIVEN, None]) | st.text(min_size=1, max_size=10)


@given(
    using_stf_webrtc=st.booleans(),
    document=_ids,
    llm_type=_ids,
    tts_type=_ids,
    stt_type=_ids,
    padding_left=st.none() | st.floats(-1.0, 1.0),
    padding_height=st.none() | st.floats(0.0, 5.0),
    text_normalization_locale=_locales,
    stt_text_normalization_locale=_locales,
)
def test_body_has_exactly_the_given_fields(**given_fields: Any) -> None:
    params = _params(**given_fields)
    body = unstructure(params)
    for name, value in given_fields.items():
        if value is NOT_GIVEN or (value is None and not name.endswith("_locale")):
            assert name not in body
        else:
            assert body[name] == value
    for name in REQUIRED:
        assert name in body
