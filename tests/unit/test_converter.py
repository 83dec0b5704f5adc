"""The one converter: lossless round trips, unknown keys kept, bad payloads → our error."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
import types
import typing
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perso_sync import models
from perso_sync._converter import format_timestamp, structure, unstructure
from perso_sync.errors import InvalidResponseError

WIRE_MODELS: list[type[Any]] = [
    models.LLMType,
    models.TTSType,
    models.STTType,
    models.ModelFile,
    models.ModelStyleConfig,
    models.ModelStyle,
    models.Prompt,
    models.Document,
    models.BackgroundImage,
    models.MCPServer,
    models.TextNormalizationConfig,
    models.TextNormalizationDownload,
    models.Capability,
    models.SessionTemplate,
    models.SessionInfo,
    models.TTSAudio,
    models.STTResponse,
    models.AllSettings,
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)

timestamps = st.datetimes(
    min_value=dt.datetime(1990, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
    timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=9))]),
).map(format_timestamp)


def _model_fields(cls: type[Any]) -> list[attrs.Attribute[Any]]:
    return [field for field in attrs.fields(cls) if field.name not in ("extra", "_wire_keys")]


def _is_not_given(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Literal


def wire_value(tp: Any) -> st.SearchStrategy[Any]:
    """JSON values the platform could send for a field of type ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return json_values
    if tp is str:
        return st.text(max_size=8)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**31), 2**31)
    if tp is float:
        return st.integers(-1000, 1000) | st.floats(allow_nan=False, allow_infinity=False)
    if tp is dt.datetime:
        return timestamps
    if isinstance(tp, type) and issubclass(tp, models._OpenStrEnum):
        return st.sampled_from([member.value for member in tp]) | st.text(min_size=1, max_size=8)
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(st.deferred(lambda: wire_value(item)), max_size=2)
    if origin is dict:
        return st.dictionaries(st.text(max_size=4), json_values, max_size=2)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(tp) if not _is_not_given(arg)]
        return st.one_of(*[st.none() if arg is type(None) else wire_value(arg) for arg in options])
    if attrs.has(tp):
        return wire_payload(tp)
    raise AssertionError(f"no strategy for {tp!r}")


def wire_payload(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object for ``cls``: required keys, some optional keys, a few unknown keys."""
    hints = typing.get_type_hints(cls)
    fields = _model_fields(cls)
    known = {field.name for field in fields}
    required = {f.name: wire_value(hints[f.name]) for f in fields if f.default is attrs.NOTHING}
    optional = {f.name: wire_value(hints[f.name]) for f in fields if f.default is not attrs.NOTHING}
    unknown_keys = (
        st.sampled_from(["extra", "_wire_keys", "wire_keys", "new_field"])
        | st.text(min_size=1, max_size=6)
    ).filter(lambda key: key not in known)
    return st.builds(
        lambda base, unknown: {**unknown, **base},
        st.fixed_dictionaries(required, optional=optional),
        st.dictionaries(unknown_keys, json_values, max_size=2),
    )


@st.composite
def model_and_payload(draw: st.DrawFn) -> tuple[type[Any], dict[str, Any]]:
    cls = draw(st.sampled_from(WIRE_MODELS))
    return cls, draw(wire_payload(cls))


@settings(max_examples=60, deadline=None)
@given(model_and_payload())
def test_round_trip_is_lossless_and_input_untouched(case: tuple[type[Any], dict[str, Any]]) -> None:
    cls, payload = case
    before = copy.deepcopy(payload)
    model = structure(payload, cls)
    assert isinstance(model, cls)
    assert payload == before  # never mutated
    assert unstructure(model) == payload
    known = {field.name for field in _model_fields(cls)}
    assert model.extra == {key: value for key, value in payload.items() if key not in known}


@settings(max_examples=60, deadline=None)
@given(cls=st.sampled_from(WIRE_MODELS), data=json_values)
def test_arbitrary_json_gives_a_model_or_invalid_response(cls: type[Any], data: Any) -> None:
    try:
        result = structure(data, cls)
    except InvalidResponseError as exc:
        message = str(exc)
    else:
        assert isinstance(result, cls)
        return
    assert message


@st.composite
def corrupted_payload(draw: st.DrawFn) -> tuple[type[Any], dict[str, Any]]:
    cls, payload = draw(model_and_payload())
    fields = [field.name for field in _model_fields(cls)]
    victim = draw(st.sampled_from(fields))
    payload[victim] = draw(json_values)
    return cls, payload


@settings(max_examples=60, deadline=None)
@given(corrupted_payload())
def test_a_wrong_field_gives_a_model_or_a_readable_error(
    case: tuple[type[Any], dict[str, Any]],
) -> None:
    cls, payload = case
    try:
        model = structure(payload, cls, what="GET /api/v1/x/")
    except InvalidResponseError as exc:
        message = str(exc)
    else:
        assert isinstance(model, cls)
        return
    assert "GET /api/v1/x/" in message
    assert "$" in message  # names the bad path


@given(data=json_values)
def test_list_of_models_from_arbitrary_json(data: Any) -> None:
    try:
        result = structure(data, list[models.LLMType])
    except InvalidResponseError:
        return
    assert all(isinstance(item, models.LLMType) for item in result)


def test_unknown_keys_survive_nested() -> None:
    payload = {
        "name": "style",
        "model": "m",
        "style": "s",
        "model_files": [{"name": "f", "file": None, "checksum": "abc"}],
        "configs": [],
        "future": {"nested": [1, 2]},
    }
    style = structure(payload, models.ModelStyle)
    assert style.extra == {"future": {"nested": [1, 2]}}
    assert style.model_files[0].extra == {"checksum": "abc"}
    assert unstructure(style) == payload


def test_absent_and_null_optional_fields_stay_apart() -> None:
    absent = structure({"prompt_id": "p", "name": "n"}, models.Prompt)
    null = structure({"prompt_id": "p", "name": "n", "description": None}, models.Prompt)
    assert absent == null  # the same data for a user
    assert unstructure(absent) == {"prompt_id": "p", "name": "n"}
    assert unstructure(null) == {"prompt_id": "p", "name": "n", "description": None}


def test_pickled_model_keeps_its_wire_form() -> None:
    payload = {"prompt_id": "p", "name": "n", "description": None, "future": [1]}
    prompt = structure(payload, models.Prompt)
    assert unstructure(pickle.loads(pickle.dumps(prompt))) == payload
    assert unstructure(copy.deepcopy(prompt)) == payload


def test_known_field_wins_over_extra_on_clash() -> None:
    model = models.LLMType(name="real", extra={"name": "shadow", "new": 1})
    assert unstructure(model) == {"name": "real", "new": 1}


def test_models_built_in_code_leave_optional_defaults_out() -> None:
    assert unstructure(models.STTResponse(text="hi")) == {"text": "hi"}
    assert unstructure(models.STTResponse(text="hi", locale="en")) == {"text": "hi", "locale": "en"}


def test_scalars_are_not_coerced() -> None:
    with pytest.raises(InvalidResponseError, match=r"\$\.name"):
        structure({"name": 5}, models.LLMType)
    with pytest.raises(InvalidResponseError, match=r"\$\.processed"):
        structure(
            {"document_id": "d", "title": "t", "processed": "false"},
            models.Document,
        )
    with pytest.raises(InvalidResponseError):
        structure("abc", list[models.LLMType])  # not iterated character by character


def test_missing_required_field_is_named() -> None:
    with pytest.raises(InvalidResponseError, match=r"required field missing @ \$\.audio") as info:
        structure({}, models.TTSAudio, what="POST /tts/", status=200)
    assert info.value.status == 200


def test_timestamps_become_aware_datetimes() -> None:
    doc = structure(
        {
            "document_id": "d",
            "title": "t",
            "processed": True,
            "created_at": "2024-05-02T09:05:55.395Z",
            "updated_at": "2024-05-02T18:05:55.395123+09:00",
        },
        models.Document,
    )
    assert doc.created_at == dt.datetime(2024, 5, 2, 9, 5, 55, 395000, tzinfo=dt.timezone.utc)
    assert doc.updated_at is not None
    assert doc.updated_at.utcoffset() == dt.timedelta(hours=9)
    out = unstructure(doc)
    assert out["created_at"] == "2024-05-02T09:05:55.395Z"
    assert out["updated_at"] == "2024-05-02T18:05:55.395123+09:00"


def test_bad_timestamp_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponseError, match="created_at"):
        structure(
            {"backgroundimage_id": "b", "title": "t", "created_at": "yesterday"},
            models.BackgroundImage,
        )


def test_session_params_body_absent_vs_null() -> None:
    params = models.SessionParams(
        using_stf_webrtc=False,
        model_style="m",
        prompt="p",
        text_normalization_locale=None,
        extra={"prompt": "ignored", "beta_flag": True},
    )
    assert unstructure(params) == {
        "using_stf_webrtc": False,
        "model_style": "m",
        "prompt": "p",
        "text_normalization_locale": None,
        "beta_flag": True,
    }


def _number_types(data: dict[str, Any], *keys: str) -> list[tuple[Any, type[Any]]]:
    return [(data[key], type(data[key])) for key in keys]


PADDINGS = ("padding_left", "padding_top", "padding_height")


@pytest.mark.parametrize(
    ("left", "top", "height"), [(0, 0.1, 1), (0.0, 0.5, 1.25), (-1, 1, 5), (0.25, 0.0, 2.0)]
)
def test_numbers_come_back_as_received(left: float, top: float, height: float) -> None:
    # An int stays an int and a float stays a float through structure → unstructure.
    info = {
        "session_id": "s",
        "padding_left": left,
        "padding_top": top,
        "padding_height": height,
    }
    out = unstructure(structure(info, models.SessionInfo))
    assert _number_types(out, *PADDINGS) == _number_types(info, *PADDINGS)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (0, "0"),
        (1.0, "1"),
        (-1.0, "-1"),
        (0.5, "0.5"),
        (-0.25, "-0.25"),
        (0.1, "0.1"),
    ],
)
def test_session_params_write_numbers_as_the_js_client(given: float, sent: str) -> None:
    # JSON.stringify has one number type: a whole number is written without a fraction.
    params = models.SessionParams(
        using_stf_webrtc=True, model_style="m", prompt="p", padding_left=given
    )
    text = json.dumps(unstructure(params), separators=(",", ":"))
    assert f'"padding_left":{sent},' in text or text.endswith(f'"padding_left":{sent}}}')
