"""Comparing what was observed with what a contract recorded, under its matchers.

Pure: no sockets, no threads, no clocks. Every check returns :class:`Mismatch` objects rather than
raising, so a runner can show every difference at once: the requests the client sent (consumer
side), the responses the mock gave (provider side), and the outcome of a client call.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from perso_sync._endpoints import SENSITIVE_HEADERS
from perso_sync.contracts._model import (
    REDACTED,
    Expectation,
    Interaction,
    Matcher,
    PathSegment,
    RaisesSpec,
    RequestSpec,
    ResponseSpec,
    parse_sse_body,
)

__all__ = [
    "Mismatch",
    "ObservedRequest",
    "check_outcome",
    "check_request",
    "check_response",
    "compare",
    "exception_view",
    "json_type",
    "parse_path",
    "request_tree",
    "response_tree",
    "select_paths",
    "to_plain",
]

# ISO-8601 date-time as the platform writes it ("2024-05-02T09:05:55.395Z"), with an optional
# zone; checked by pattern first so that e.g. "2024" alone is not accepted as a timestamp.
_TIMESTAMP_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?"
)
_PATH_TOKEN_RE: Final = re.compile(r"\.([A-Za-z_$@][\w\-$@]*)|\[(\d+|\*)\]")


# ---------------------------------------------------------------------------------------------
# Comparison


@attrs.frozen
class Mismatch:
    """One difference between a contract and what was observed."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def parse_path(path: str) -> tuple[PathSegment, ...]:
    """``"response.json[*].name"`` → ``("response", "json", "*", "name")``; ``[3]`` → ``3``."""
    match = re.match(r"[A-Za-z_]\w*", path)
    if match is None:
        raise ValueError(f"path {path!r} must start with a name")
    segments: list[PathSegment] = [match.group(0)]
    pos = match.end()
    while pos < len(path):
        token = _PATH_TOKEN_RE.match(path, pos)
        if token is None:
            raise ValueError(f"path {path!r} is malformed at offset {pos}")
        key, index = token.group(1), token.group(2)
        if key is not None:
            segments.append(key)
        elif index == "*":
            segments.append("*")
        else:
            segments.append(int(index))
        pos = token.end()
    return tuple(segments)


def _format_path(segments: Sequence[PathSegment]) -> str:
    out = str(segments[0])
    for seg in segments[1:]:
        out += f"[{seg}]" if isinstance(seg, int) else f".{seg}"
    return out


def select_paths(tree: Any, pattern: Sequence[PathSegment]) -> list[Any]:
    """Every value at ``pattern`` in ``tree`` (``*`` = every list element)."""
    values = [tree]
    for seg in pattern:
        nxt = []
        for value in values:
            if seg == "*" and isinstance(value, list):
                nxt.extend(value)
            elif isinstance(seg, int) and isinstance(value, list):
                nxt.extend(value[seg : seg + 1] if seg >= 0 else [])
            elif isinstance(seg, str) and isinstance(value, dict):
                # header names are case-insensitive
                for key in value:
                    if isinstance(key, str) and key.lower() == seg.lower():
                        nxt.append(value[key])
        values = nxt
    return values


class _Rules:
    def __init__(self, matchers: Mapping[str, Matcher]) -> None:
        self._rules = [(parse_path(path), m) for path, m in matchers.items()]

    def at(self, path: Sequence[PathSegment]) -> Matcher | None:
        for pattern, matcher in self._rules:
            if len(pattern) == len(path) and all(
                (p == "*" and isinstance(s, int)) or _seg_eq(p, s)
                for p, s in zip(pattern, path, strict=True)
            ):
                return matcher
        return None


def _seg_eq(pattern: PathSegment, seg: PathSegment) -> bool:
    if isinstance(pattern, str) and isinstance(seg, str):
        # header names are case-insensitive; JSON keys never differ only by case here
        return pattern.lower() == seg.lower()
    return pattern == seg


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or not _TIMESTAMP_RE.fullmatch(value):
        return False
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    # fromisoformat of 3.10 accepts at most 6 fraction digits; the pattern already checked shape
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    text = re.sub(r"\.(\d{1,5})(?=$|[+-])", lambda m: "." + m.group(1).ljust(6, "0"), text)
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 120 else text[:117] + "..."


def compare(
    expected: Any,
    actual: Any,
    matchers: Mapping[str, Matcher] | None = None,
    *,
    root: Sequence[PathSegment] = ("value",),
    strict_objects: bool = False,
) -> list[Mismatch]:
    """Compare ``actual`` to the ``expected`` example under ``matchers`` (keyed by path from
    ``root``). Objects: every expected key must be there; extra actual keys are allowed unless
    ``strict_objects`` (request bodies: an omitted field must stay absent). Arrays: same length
    and element-wise, unless a ``type`` matcher says "any length >= min, each like the first
    example". Without a matcher, scalars must be equal (``1`` and ``1.0`` are equal numbers)."""
    out: list[Mismatch] = []
    _compare(expected, actual, tuple(root), _Rules(matchers or {}), "exact", strict_objects, out)
    return out


def _compare(
    expected: Any,
    actual: Any,
    path: tuple[PathSegment, ...],
    rules: _Rules,
    mode: str,
    strict: bool,
    out: list[Mismatch],
) -> None:
    where = _format_path(path)
    rule = rules.at(path)
    if rule is not None:
        if rule.kind == "present":
            return
        if rule.kind == "regex":
            if not isinstance(actual, str) or not re.fullmatch(rule.regex or "", actual):
                out.append(
                    Mismatch(where, f"expected a match for /{rule.regex}/, got {_short(actual)}")
                )
            return
        if rule.kind == "timestamp":
            if not _is_timestamp(actual):
                out.append(Mismatch(where, f"expected an ISO-8601 timestamp, got {_short(actual)}"))
            return
        mode = rule.kind  # "type" cascades to descendants, "exact" stops a cascade
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            out.append(
                Mismatch(where, f"expected an object, got {json_type(actual)} {_short(actual)}")
            )
            return
        for key, value in expected.items():
            if key not in actual:
                out.append(Mismatch(f"{where}.{key}", "is missing"))
                continue
            _compare(value, actual[key], (*path, key), rules, mode, strict, out)
        if strict:
            for key in actual:
                if key not in expected:
                    out.append(Mismatch(f"{where}.{key}", f"is unexpected ({_short(actual[key])})"))
        return
    if isinstance(expected, list):
        if not isinstance(actual, list):
            out.append(
                Mismatch(where, f"expected an array, got {json_type(actual)} {_short(actual)}")
            )
            return
        if mode == "type":
            if rule is not None and len(actual) < rule.min:
                out.append(
                    Mismatch(where, f"expected at least {rule.min} element(s), got {len(actual)}")
                )
            if len(actual) != len(expected):
                # another length: each element like the first example (any, if none recorded)
                for i, item in enumerate(actual if expected else []):
                    _compare(expected[0], item, (*path, i), rules, mode, strict, out)
                return
        if len(actual) != len(expected):
            out.append(
                Mismatch(
                    where,
                    f"expected {len(expected)} element(s), got {len(actual)}: {_short(actual)}",
                )
            )
            return
        for i, (exp_item, act_item) in enumerate(zip(expected, actual, strict=True)):
            _compare(exp_item, act_item, (*path, i), rules, mode, strict, out)
        return
    if mode == "type":
        if json_type(expected) != json_type(actual):
            out.append(Mismatch(where, f"expected a {json_type(expected)}, got {_short(actual)}"))
        return
    if not _scalar_equal(expected, actual):
        out.append(Mismatch(where, f"expected {_short(expected)}, got {_short(actual)}"))


def _scalar_equal(expected: Any, actual: Any) -> bool:
    if json_type(expected) != json_type(actual):
        return False
    if isinstance(expected, float) or isinstance(actual, float):
        return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-12)
    return bool(expected == actual)


# ---------------------------------------------------------------------------------------------
# Checks used by the consumer and provider runners


@attrs.frozen
class ObservedRequest:
    """A request as it reached the (fake or mock) server."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


def request_tree(req: RequestSpec) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "method": req.method,
        "path": req.path,
        "query": dict(req.query),
        "headers": dict(req.headers),
    }
    if req.body_kind == "json":
        tree["json"] = req.json
    return tree


def response_tree(resp: ResponseSpec) -> dict[str, Any]:
    tree: dict[str, Any] = {"status": resp.status, "headers": dict(resp.headers)}
    if resp.body_kind == "json":
        tree["json"] = resp.json
    elif resp.body_kind == "text":
        tree["text"] = resp.text
    else:
        tree["sse"] = [item.to_json() for item in resp.sse]
    return tree


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def check_request(interaction: Interaction, observed: ObservedRequest) -> list[Mismatch]:
    """Did the client send what the contract records? Method, path and query exactly (or by
    matcher); listed headers (a ``<redacted>`` header must be present and non-empty); sensitive
    headers not listed must be absent (no key on session-scoped calls); the body exactly, with no
    extra JSON fields."""
    spec = interaction.request
    rules = interaction.matchers
    out: list[Mismatch] = []
    out += compare(spec.method, observed.method.upper(), rules, root=("request", "method"))
    out += compare(spec.path, observed.path, rules, root=("request", "path"))
    out += compare(
        dict(spec.query),
        dict(observed.query),
        rules,
        root=("request", "query"),
        strict_objects=True,
    )
    for name, value in spec.headers.items():
        got = _header(observed.headers, name)
        if value == REDACTED:
            if not got:
                out.append(Mismatch(f"request.headers.{name}", "must be sent (value redacted)"))
        elif got is None:
            out.append(Mismatch(f"request.headers.{name}", "is missing"))
        else:
            if name.lower() == "content-type":
                got = got.split(";")[0].strip()
            out += compare(value, got, rules, root=("request", "headers", name))
    for name in observed.headers:
        if name.lower() in SENSITIVE_HEADERS and _header(spec.headers, name) is None:
            out.append(Mismatch(f"request.headers.{name}", "must not be sent on this call"))
    out += _check_request_body(interaction, observed)
    return out


def _check_request_body(interaction: Interaction, observed: ObservedRequest) -> list[Mismatch]:
    spec = interaction.request
    if spec.body_kind == "none":
        if observed.body:
            return [Mismatch("request.body", f"expected no body, got {len(observed.body)} bytes")]
        return []
    if spec.body_kind == "json":
        try:
            body = json.loads(observed.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return [Mismatch("request.json", f"is not JSON: {observed.body[:80]!r}")]
        return compare(
            spec.json, body, interaction.matchers, root=("request", "json"), strict_objects=True
        )
    content_type = _header(observed.headers, "Content-Type") or ""
    parts = _split_multipart(content_type, observed.body)
    if parts is None:
        return [Mismatch("request.multipart", f"is not multipart/form-data ({content_type!r})")]
    out: list[Mismatch] = []
    multipart = spec.multipart or {}
    expected_names = set(multipart.get("fields", {})) | set(multipart.get("files", {}))
    for name in sorted(set(parts) - expected_names):
        out.append(Mismatch(f"request.multipart.{name}", "is an unexpected part"))
    for name, value in multipart.get("fields", {}).items():
        part = parts.get(name)
        if part is None:
            out.append(Mismatch(f"request.multipart.fields.{name}", "is missing"))
        elif part[2] != value.encode():
            out.append(
                Mismatch(
                    f"request.multipart.fields.{name}", f"expected {value!r}, got {part[2][:80]!r}"
                )
            )
    for name, file_spec in multipart.get("files", {}).items():
        part = parts.get(name)
        where = f"request.multipart.files.{name}"
        if part is None:
            out.append(Mismatch(where, "is missing"))
            continue
        filename, part_type, content = part
        expected_type = file_spec.get("content_type")
        if expected_type is not None and (part_type or "").split(";")[0].strip() != expected_type:
            out.append(
                Mismatch(f"{where}.content_type", f"expected {expected_type!r}, got {part_type!r}")
            )
        if filename != file_spec["filename"]:
            out.append(
                Mismatch(
                    f"{where}.filename", f"expected {file_spec['filename']!r}, got {filename!r}"
                )
            )
        if content != base64.b64decode(file_spec["base64"]):
            out.append(Mismatch(f"{where}.base64", f"content differs ({len(content)} bytes sent)"))
    return out


def _split_multipart(
    content_type: str, body: bytes
) -> dict[str, tuple[str | None, str | None, bytes]] | None:
    """name -> (filename, content type, content) of a multipart/form-data body; None when the
    body is not one."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or match is None:
        return None
    boundary = b"--" + match.group(1).encode()
    parts: dict[str, tuple[str | None, str | None, bytes]] = {}
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        head_text = head.decode("latin-1")
        name = re.search(r'(?<![\w-])name="([^"]*)"', head_text)
        filename = re.search(r'filename="([^"]*)"', head_text)
        part_type = re.search(r"(?im)^content-type:\s*(.+?)\s*$", head_text)
        if name is not None:
            parts[name.group(1)] = (
                filename.group(1) if filename else None,
                part_type.group(1) if part_type else None,
                content,
            )
    return parts


def check_response(
    interaction: Interaction, status: int, headers: Mapping[str, str], body: bytes
) -> list[Mismatch]:
    """Did the provider answer what the contract records? Status and listed headers, then the
    body by kind: JSON under the matchers (extra fields allowed), text exactly, SSE as the list of
    events (framing is free: the client accepts every framing)."""
    spec = interaction.response
    rules = interaction.matchers
    out = compare(spec.status, status, rules, root=("response", "status"))
    for name, value in spec.headers.items():
        got = _header(headers, name)
        if got is None:
            out.append(Mismatch(f"response.headers.{name}", "is missing"))
            continue
        if name.lower() == "content-type" and rules.get(f"response.headers.{name}") is None:
            got = got.split(";")[0].strip()
            value = value.split(";")[0].strip()
        out += compare(value, got, rules, root=("response", "headers", name))
    if spec.body_kind == "json":
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            out.append(Mismatch("response.json", f"is not JSON: {body[:120]!r}"))
            return out
        out += compare(spec.json, parsed, rules, root=("response", "json"))
    elif spec.body_kind == "text":
        out += compare(
            spec.text, body.decode("utf-8", errors="replace"), rules, root=("response", "text")
        )
    else:
        events = [item.to_json() for item in parse_sse_body(body)]
        out += compare(
            [item.to_json() for item in spec.sse], events, rules, root=("response", "sse")
        )
    return out


# ---------------------------------------------------------------------------------------------
# Client outcomes


def to_plain(value: Any) -> Any:
    """A JSON-like view of what a public call returned, for comparison with ``expect.result``:
    attrs models become objects of their fields (plus ``type`` for LLM chunks), str-enums their
    value, bytes ``{"$base64": ...}``, exceptions :func:`exception_view`."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return (
            str(value.value)
            if hasattr(value, "value") and isinstance(value.value, str)
            else str(value)
        )
    if isinstance(value, (bytes, bytearray)):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, BaseException):
        return exception_view(value)
    if attrs.has(type(value)):
        out = {
            field.name: to_plain(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if not field.name.startswith("_")  # private bookkeeping, not a model field
        }
        chunk_type = getattr(value, "type", None)
        if isinstance(chunk_type, str) and "type" not in out:
            out["type"] = chunk_type
        return out
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((to_plain(item) for item in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return repr(value)


def exception_view(exc: BaseException) -> dict[str, Any]:
    """``{"class", "message", error fields..., "underlying"?}`` of an exception."""
    out: dict[str, Any] = {"class": type(exc).__name__, "message": str(exc)}
    for name in ("error_code", "code", "detail", "attr", "description", "status"):
        if hasattr(exc, name):
            out[name] = getattr(exc, name)
    underlying = getattr(exc, "underlying_error", None)
    if isinstance(underlying, BaseException):
        out["underlying"] = exception_view(underlying)
    return out


def check_outcome(
    expect: Expectation, result: Any = None, error: BaseException | None = None
) -> list[Mismatch]:
    """Did the public call return or raise what the contract says?"""
    if expect.raises is None:
        if error is not None:
            return [
                Mismatch(
                    "result", f"expected a result, but the call raised {exception_view(error)}"
                )
            ]
        if expect.result is None:
            return []
        return compare(expect.result, to_plain(result), expect.matchers, root=("result",))
    if error is None:
        return [
            Mismatch(
                "raises",
                f"expected {expect.raises.cls}, but the call returned {_short(to_plain(result))}",
            )
        ]
    return _check_raises(expect.raises, error, ("raises",), expect.matchers)


def _check_raises(
    spec: RaisesSpec,
    error: BaseException,
    path: tuple[PathSegment, ...],
    matchers: Mapping[str, Matcher],
) -> list[Mismatch]:
    view = exception_view(error)
    where = _format_path(path)
    if view["class"] != spec.cls:
        return [Mismatch(f"{where}.class", f"expected {spec.cls}, got {view['class']}: {error}")]
    out: list[Mismatch] = []
    for name, value in spec.fields.items():
        if name not in view:
            out.append(Mismatch(f"{where}.{name}", f"{spec.cls} has no field {name!r}"))
            continue
        out += compare(value, view[name], matchers, root=(*path, name))
    if spec.underlying is not None:
        underlying = getattr(error, "underlying_error", None)
        if not isinstance(underlying, BaseException):
            out.append(Mismatch(f"{where}.underlying", f"{spec.cls} wraps no underlying error"))
        else:
            out += _check_raises(spec.underlying, underlying, (*path, "underlying"), matchers)
    return out
