"""What the mock checks in a request before it acts, and how it reads a body: session-creation
params (like the platform), capability derivation, ``llm/v2`` tool definitions, JSON nesting,
multipart forms, and the summary of a body the journal keeps. Pure functions over the
request's raw bytes, but for ``json_body`` which takes them from the request.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
from aiohttp import web

from mock_server.catalog import CAPABILITY_DESCRIPTIONS, ID_KEYS, REFERENCE_KINDS, Catalog
from mock_server.context import RAW_KEY, SESSION_KEY, MockContext
from mock_server.errors import error_body, error_response
from mock_server.state import MockSession

CAPABILITIES = frozenset(CAPABILITY_DESCRIPTIONS)
#: A JSON request body nested deeper than this is refused with the standard 400 ``parse_error``
#: (no request of the API comes near it; walking such a body would exhaust the stack).
MAX_JSON_DEPTH = 100


class SessionParamsError(ValueError):
    """Session-creation params the platform would refuse: ``status`` and the error ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        errors = body.get("errors") or [{}]
        super().__init__(f"{status}: {errors[0].get('code')}: {errors[0].get('detail')}")
        self.status = status
        self.body = body


def derive_capability(params: dict[str, Any]) -> list[str]:
    """docs/PROTOCOL.md §3: STF_WEBRTC, LLM, TTS, STT, in that order, from the params."""
    caps = []
    if params.get("using_stf_webrtc"):
        caps.append("STF_WEBRTC")
    for key, cap in (("llm_type", "LLM"), ("tts_type", "TTS"), ("stt_type", "STT")):
        if params.get(key):
            caps.append(cap)
    return caps


_PADDINGS = {
    "padding_left": (-1.0, 1.0),
    "padding_top": (0.0, 1.0),
    "padding_height": (0.0, 5.0),
}
_STRING_FIELDS = (
    "model_style",
    "prompt",
    "document",
    "background_image",
    "llm_type",
    "tts_type",
    "stt_type",
    "text_normalization_config",
    "stt_text_normalization_config",
)
_LOCALE_FIELDS = ("text_normalization_locale", "stt_text_normalization_locale")
_FEATURE_FIELDS = {
    "document": ("document", "Document"),
    "background_image": ("background_image", "Background image"),
    "mcp_servers": ("mcp", "MCP server"),
    "text_normalization_config": ("text_normalization", "Text normalization"),
    "stt_text_normalization_config": ("text_normalization", "Text normalization"),
}
_ORG_TYPES = {"llm_type": "LLM", "tts_type": "TTS", "stt_type": "STT"}


def _field_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []

    def add(code: str, detail: str, attr: str) -> None:
        errors.append({"code": code, "detail": detail, "attr": attr})

    for name in ("using_stf_webrtc", "model_style", "prompt"):
        if body.get(name) is None:
            add("required", "This field is required.", name)
    flag = body.get("using_stf_webrtc")
    if flag is not None and not isinstance(flag, bool):
        add("invalid", "Must be a valid boolean.", "using_stf_webrtc")
    for name in _STRING_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            add("invalid", "Not a valid string.", name)
    for name, (low, high) in _PADDINGS.items():
        if name not in body or body[name] is None:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            add("invalid", "A valid number is required.", name)
        elif value < low:
            add("min_value", f"Ensure this value is greater than or equal to {low}.", name)
        elif value > high:
            add("max_value", f"Ensure this value is less than or equal to {high}.", name)
    for name in _LOCALE_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            add("invalid", "Not a valid string.", name)
        elif len(value) > 10:
            add("max_length", "Ensure this field has no more than 10 characters.", name)
    servers = body.get("mcp_servers")
    if servers is not None and (
        not isinstance(servers, list) or not all(isinstance(s, str) for s in servers)
    ):
        add("not_a_list", "Expected a list of mcpserver_id strings.", "mcp_servers")
    caps = body.get("capability")
    if caps is not None:
        if not isinstance(caps, list):
            add("not_a_list", "Expected a list of capability names.", "capability")
        else:
            for cap in caps:
                if cap not in CAPABILITIES:
                    add("invalid_choice", f'"{cap}" is not a valid choice.', "capability")
    return errors


def validate_session_params(
    body: dict[str, Any], catalog: Catalog
) -> tuple[int, dict[str, Any]] | None:
    """The platform's checks on a session-creation body: (status, error body) or None."""
    errors = _field_errors(body)
    if errors:
        return 400, {"type": "validation_error", "errors": errors}
    features = set(catalog.organization.get("features") or [])
    org = catalog.organization
    for field, kind in REFERENCE_KINDS.items():
        value = body.get(field)
        if value is None:
            continue
        feature = _FEATURE_FIELDS.get(field)
        if feature is not None and feature[0] not in features:
            return 400, error_body(
                "client_error", "invalid", f"{feature[1]} feature not found.", field
            )
        if catalog.find(kind, value) is None:
            key = ID_KEYS[kind]
            return 400, error_body(
                "client_error",
                "does_not_exist",
                f"Object with {key}={value} does not exist.",
                field,
            )
        if field in _ORG_TYPES and value not in (org.get(f"{field}s") or []):
            return 400, error_body(
                "client_error",
                "not_in_organization",
                f"{_ORG_TYPES[field]} type {value} is not in your organization.",
                field,
            )
    servers = body.get("mcp_servers") or []
    if servers and "mcp" not in features:
        return 400, error_body(
            "client_error", "invalid", "MCP server feature not found.", "mcp_servers"
        )
    for server_id in servers:
        if catalog.find("mcp_servers", server_id) is None:
            return 400, error_body(
                "client_error",
                "does_not_exist",
                f'Invalid pk "{server_id}" - object does not exist.',
                "mcp_servers",
            )
    prompt = catalog.find("prompts", body.get("prompt"))
    if prompt is not None and prompt.get("require_document") and not body.get("document"):
        return 400, error_body(
            "validation_error", "invalid", "This prompt requires a document.", "document"
        )
    return None


_TOOL_KEYS = frozenset({"type", "function"})
_FUNCTION_KEYS = frozenset({"name", "description", "parameters"})


def tool_definition_problem(tools: list[Any]) -> str | None:
    """Why the ``tools`` of an ``llm/v2`` request are not what the platform accepts, or None.

    Each entry must be ``{"type": "function", "function": {"name": <non-empty str>,
    "description": <str>, "parameters": <JSON Schema object>}}``, nothing more.
    """
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            return f"{where}: expected an object."
        if tool.get("type") != "function":
            return f'{where}.type: expected "function".'
        extra = sorted(set(tool) - _TOOL_KEYS)
        if extra:
            return f"{where}: unexpected field(s) {', '.join(extra)}."
        function = tool.get("function")
        if not isinstance(function, dict):
            return f"{where}.function: expected an object."
        extra = sorted(set(function) - _FUNCTION_KEYS)
        if extra:
            return f"{where}.function: unexpected field(s) {', '.join(extra)}."
        name = function.get("name")
        if not isinstance(name, str) or not name:
            return f"{where}.function.name: a non-empty string is required."
        if not isinstance(function.get("description"), str):
            return f"{where}.function.description: a string is required."
        parameters = function.get("parameters")
        if not isinstance(parameters, dict) or not isinstance(parameters.get("type", ""), str):
            return f"{where}.function.parameters: a JSON Schema object is required."
    return None


def json_body(request: web.Request) -> tuple[bool, Any]:
    raw: bytes = request[RAW_KEY]
    if not raw or json_nesting_too_deep(raw):
        return False, None
    try:
        return True, json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too
        return False, None


def capability_refusal(session: MockSession, ctx: MockContext, cap: str) -> web.Response | None:
    """The platform's 400 when ``strict_capabilities`` is on and ``cap`` is not the session's."""
    if ctx.catalog.settings.get("strict_capabilities") and cap not in session.capability:
        return error_response(
            400, "client_error", "invalid", f"{cap} is not enabled for this session."
        )
    return None


def capability_json_request(
    request: web.Request, ctx: MockContext, cap: str
) -> tuple[MockSession, dict[str, Any]] | web.Response:
    """The session and JSON-object body of a route that needs capability ``cap`` (TTS, LLM),
    or the 400 the platform answers instead."""
    session: MockSession = request[SESSION_KEY]
    refusal = capability_refusal(session, ctx, cap)
    if refusal is not None:
        return refusal
    ok, body = json_body(request)
    if not ok or not isinstance(body, dict):
        return error_response(400, "client_error", "parse_error", "JSON parse error.")
    return session, body


def json_nesting_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``raw`` is JSON nested more than ``limit`` levels (or too deep to parse)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the common case, decided without parsing
    try:
        value = json.loads(raw)
    except RecursionError:
        return True
    except ValueError:
        return False  # not JSON at all: the route decides what that means
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if not isinstance(item, (dict, list)):
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


@attrs.frozen
class FormPart:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormPart] | None:
    """The parts of a ``multipart/form-data`` body by name; None when it is not one."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    delimiter = b"--" + boundary.encode("latin-1")
    parts: dict[str, FormPart] = {}
    # Prefix CRLF so the first delimiter looks like every other one.
    for chunk in (b"\r\n" + body).split(b"\r\n" + delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        name = filename = part_type = None
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            header, _, value = line.partition(":")
            if header.strip().lower() == "content-disposition":
                for item in value.split(";"):
                    key, _, val = item.strip().partition("=")
                    if key == "name":
                        name = val.strip('"')
                    elif key == "filename":
                        filename = val.strip('"')
            elif header.strip().lower() == "content-type":
                part_type = value.strip()
        if name is not None:
            parts[name] = FormPart(name, filename, part_type, data)
    return parts


def summarize_body(content_type: str, raw: bytes) -> Any:
    """What the journal keeps of a request body."""
    if not raw:
        return None
    form = parse_multipart(content_type, raw)
    if form is not None:
        fields: dict[str, str] = {}
        files: dict[str, dict[str, Any]] = {}
        for part in form.values():
            if part.filename is None and part.content_type is None:
                fields[part.name] = part.text()
            else:
                files[part.name] = {
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": len(part.data),
                }
        return {"fields": fields, "files": files}
    if json_nesting_too_deep(raw):
        return {"nested_too_deep": True, "size": len(raw)}
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"binary": len(raw)}
