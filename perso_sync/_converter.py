"""The one cattrs converter: JSON payloads <-> the attrs models of ``perso_sync.models``.

Rules it enforces:

- Unknown keys are kept in the model's ``extra`` and re-emitted on unstructure; when ``extra``
  holds a key that is also a field, the field wins.
- Optional keys that were absent stay absent on the way back, and ones that came as ``null``
  (or as an empty list) go back the same way, so ``unstructure(structure(d)) == d``.
- Scalars are strict: ``5`` is not a ``str`` and ``"false"`` is not a ``bool`` (cattrs would coerce
  them by default, silently changing the data).
- Numbers pass through: a JSON ``0`` stays the int ``0`` and ``0.5`` the float ``0.5`` (a float
  field accepts an int as is), so a round trip re-emits the number as received. The one body we
  build ourselves, ``SessionParams``, writes its numbers as the official JS client does
  (``JSON.stringify``): a whole number has no fraction, so a template's ``padding_left: 0.0``
  goes back out as ``0``, exactly as the JS SDK sends it.
- ISO-8601 timestamps become aware datetimes (naive ones are read as UTC) and go back out in the
  same form, UTC written with ``Z``.
- The input is never mutated; wire renames (none are needed today) would live here only.
- No cattrs exception escapes: ``structure`` raises ``InvalidResponseError`` with readable lines.
"""

from __future__ import annotations

import datetime as _dt
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from perso_sync.errors import InvalidResponseError
from perso_sync.models import (
    NOT_GIVEN,
    SessionParams,
    _NotGivenType,
    _OpenStrEnum,
    _WireModel,
)

__all__ = [
    "converter",
    "format_timestamp",
    "js_number",
    "parse_timestamp",
    "structure",
    "unstructure",
]

T = TypeVar("T")

_MAX_ERROR_LINES = 8

# ---------------------------------------------------------------------------------------------
# Timestamps

_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<h>\d{2}):(?P<m>\d{2})"
    r"(?::(?P<s>\d{2})(?:[.,](?P<frac>\d+))?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)


def parse_timestamp(text: str) -> _dt.datetime:
    """Parse an ISO-8601 timestamp such as ``"2024-05-02T09:05:55.395Z"`` to an aware datetime.

    A timestamp without an offset is taken as UTC. Raises ``ValueError`` on anything else.
    """
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    date = _dt.date.fromisoformat(match["date"])
    # Python before 3.11 reads only 3 or 6 fraction digits: normalise to microseconds here.
    microsecond = int((match["frac"] or "0")[:6].ljust(6, "0"))
    offset = _dt.timedelta(0)
    tz_text = match["tz"]
    if tz_text and tz_text not in "Zz":
        sign = -1 if tz_text[0] == "-" else 1
        digits = tz_text[1:].replace(":", "")
        offset = sign * _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
    return _dt.datetime(
        date.year,
        date.month,
        date.day,
        int(match["h"]),
        int(match["m"]),
        int(match["s"] or 0),
        microsecond,
        tzinfo=_dt.timezone.utc if not offset else _dt.timezone(offset),
    )


def format_timestamp(value: _dt.datetime) -> str:
    """Write a datetime the way the platform does: milliseconds (microseconds when needed), and
    ``Z`` for UTC. A naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    timespec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    text = value.isoformat(timespec=timespec)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# ---------------------------------------------------------------------------------------------
# Strict leaf hooks


def _structure_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _structure_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _structure_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    return value


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return value  # an int stays an int: it is a valid float value and re-emits unchanged


def _structure_datetime(value: Any, _: Any) -> _dt.datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO-8601 timestamp string, got {type(value).__name__}")
    return parse_timestamp(value)


def _structure_open_enum(value: Any, cls: type[_OpenStrEnum]) -> _OpenStrEnum:
    if not isinstance(value, str):
        raise TypeError(f"expected a string for {cls.__name__}, got {type(value).__name__}")
    return cls(value)


def _union_args(tp: Any) -> tuple[Any, ...]:
    origin = get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return get_args(tp)
    return ()


def _is_not_given(tp: Any) -> bool:
    return get_origin(tp) is typing.Literal and get_args(tp) == (NOT_GIVEN,)


def _is_not_given_union(tp: Any) -> bool:
    return any(_is_not_given(arg) for arg in _union_args(tp))


def _not_given_union_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    # NOT_GIVEN never arrives on the wire (an absent key leaves the field at its default), so
    # structure the value as the rest of the union.
    rest = [arg for arg in _union_args(tp) if not _is_not_given(arg)]
    remaining: Any = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007

    def structure_not_given_union(value: Any, _: Any) -> Any:
        return conv.structure(value, remaining)

    return structure_not_given_union


def _is_list(tp: Any) -> bool:
    return get_origin(tp) is list or tp is list


def _strict_list_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    inner = list_structure_factory(tp, conv)

    def structure_list(value: Any, _: Any) -> Any:
        # cattrs would iterate a string character by character, or a dict over its keys.
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a JSON array, got {type(value).__name__}")
        return inner(value, tp)

    return structure_list


def _is_dict(tp: Any) -> bool:
    return get_origin(tp) is dict or tp is dict


def _strict_dict_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    inner = mapping_structure_factory(tp, conv)

    def structure_dict(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a JSON object, got {type(value).__name__}")
        return inner(value, tp)

    return structure_dict


# ---------------------------------------------------------------------------------------------
# Wire models: generated hooks wrapped to keep unknown keys


def _is_wire_model(cls: Any) -> bool:
    return isinstance(cls, type) and attrs.has(cls) and issubclass(cls, _WireModel)


def _model_fields(cls: type[Any]) -> list[attrs.Attribute[Any]]:
    return [field for field in attrs.fields(cls) if field.name not in ("extra", "_wire_keys")]


def _default_of(field: attrs.Attribute[Any]) -> Any:
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory()
    return default


def _wire_structure_hook(cls: type[T], conv: cattrs.Converter) -> Callable[[Any, Any], T]:
    generated = make_dict_structure_fn(cls, conv, extra=override(omit=True))
    known = frozenset(field.name for field in _model_fields(cls))
    optional = frozenset(
        field.name for field in _model_fields(cls) if field.default is not attrs.NOTHING
    )
    name = cls.__name__

    def structure_model(value: Any, _: Any) -> T:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a JSON object for {name}, got {type(value).__name__}")
        known_part: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, item in value.items():  # copies: the caller's dict is never touched
            (known_part if key in known else extra)[key] = item
        instance = generated(known_part, cls)
        # Frozen classes: these two are set once, here, right after construction.
        object.__setattr__(instance, "extra", extra)
        object.__setattr__(instance, "_wire_keys", optional.intersection(known_part))
        return instance

    return structure_model


def _wire_unstructure_hook(
    cls: type[Any], conv: cattrs.Converter
) -> Callable[[Any], dict[str, Any]]:
    generated = make_dict_unstructure_fn(
        cls, conv, extra=override(omit=True), _wire_keys=override(omit=True)
    )
    known = frozenset(field.name for field in _model_fields(cls))
    optional_defaults = {
        field.name: _default_of(field)
        for field in _model_fields(cls)
        if field.default is not attrs.NOTHING
    }

    def unstructure_model(instance: Any) -> dict[str, Any]:
        out = generated(instance)
        wire_keys = instance._wire_keys
        for field_name, default in optional_defaults.items():
            if field_name in wire_keys:
                continue
            value = getattr(instance, field_name)
            if value is default or (type(value) is type(default) and value == default):
                del out[field_name]
        for key, item in instance.extra.items():
            if key not in known:  # on a clash the field wins
                out[key] = conv.unstructure(item)
        return out

    return unstructure_model


# ---------------------------------------------------------------------------------------------
# SessionParams: a request body, not a response


_LOCALE_FIELDS = frozenset({"text_normalization_locale", "stt_text_normalization_locale"})
_NUMBER_FIELDS = frozenset({"padding_left", "padding_top", "padding_height"})


def js_number(value: float) -> float:
    """``value`` as JavaScript's ``JSON.stringify`` writes it: a whole float becomes an int
    (``0.0`` → ``0``, ``-0.0`` → ``0``, ``1.0`` → ``1``); other numbers are unchanged.

    JavaScript has one number type, so the official client cannot send ``0.0``: it sends ``0``.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_PARAM_FIELDS = tuple(field.name for field in attrs.fields(SessionParams) if field.name != "extra")


def _unstructure_session_params(params: SessionParams) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in _PARAM_FIELDS:
        value = getattr(params, name)
        if value is NOT_GIVEN:
            continue
        # None means "leave it out", except for the locales where null disables normalization.
        if value is None and name not in _LOCALE_FIELDS:
            continue
        if name == "mcp_servers":
            value = list(value)
        elif name in _NUMBER_FIELDS:
            value = js_number(value)
        body[name] = value
    for key, item in params.extra.items():
        if key not in body and key not in _PARAM_FIELDS:
            body[key] = converter.unstructure(item)
    return body


def _structure_session_params(value: Any, _: Any) -> SessionParams:
    return SessionParams.from_mapping(value)


# ---------------------------------------------------------------------------------------------
# Building the converter. Later registrations win in cattrs; leaf hooks go first because the
# generated model hooks look them up when they are first built.


def _build() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(_dt.datetime, _structure_datetime)
    conv.register_unstructure_hook(_dt.datetime, format_timestamp)
    # Class hooks dispatch on the MRO: the open enums need their own, more specific than str's.
    conv.register_structure_hook(_OpenStrEnum, _structure_open_enum)
    conv.register_unstructure_hook(_OpenStrEnum, lambda member: str(member._value_))
    conv.register_unstructure_hook(_NotGivenType, lambda _: None)
    conv.register_structure_hook_factory(_is_not_given_union, _not_given_union_hook)
    conv.register_structure_hook_factory(_is_list, _strict_list_hook)
    conv.register_structure_hook_factory(_is_dict, _strict_dict_hook)
    conv.register_structure_hook_factory(_is_wire_model, _wire_structure_hook)
    conv.register_unstructure_hook_factory(_is_wire_model, _wire_unstructure_hook)
    conv.register_structure_hook(SessionParams, _structure_session_params)
    conv.register_unstructure_hook(SessionParams, _unstructure_session_params)
    return conv


converter: cattrs.Converter = _build()


def _format_leaf(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    message = str(exc)
    if message:
        return message
    return f"invalid value (expected {getattr(type_, '__name__', None) or type_})"


def _readable(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        lines = cattrs.transform_error(exc, path="$", format_exception=_format_leaf)
    else:
        lines = [f"{type(exc).__name__}: {exc}"]
    shown = lines[:_MAX_ERROR_LINES]
    if len(lines) > len(shown):
        shown.append(f"... and {len(lines) - len(shown)} more")
    return "; ".join(shown)


def structure(data: Any, type_: type[T], *, what: str = "response", status: int | None = None) -> T:
    """Structure JSON ``data`` into ``type_`` (a model, or e.g. ``list[Model]``).

    Raises ``InvalidResponseError`` (naming ``what`` and every bad path) when the data does not
    fit; no cattrs or other foreign exception escapes.
    """
    try:
        return converter.structure(data, type_)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidResponseError(
            f"{what} does not have the documented shape: {_readable(exc)}", status
        ) from exc
    except RecursionError as exc:
        raise InvalidResponseError(f"{what} is nested too deeply to read", status) from exc


def unstructure(obj: Any) -> Any:
    """Turn a model (or a list of models) back into JSON-ready data, extra keys included."""
    return converter.unstructure(obj)
