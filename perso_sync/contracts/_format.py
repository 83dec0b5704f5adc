"""The contract format: load, validate, render and compare recorded interactions.

A contract file is JSON (see ``contracts/README.md`` for the full, documented format)::

    {"format": "perso-contract/1",
     "contracts": [{"name": ..., "provider_states": [...], "interactions": [...], "expect": {...}}]}

This module is pure: no sockets, no threads, no clocks. It turns files into typed objects
(raising :class:`ContractFormatError` naming the file and the field for anything malformed),
renders a response body the way a server would send it, and compares observed values against the
recorded examples under the contract's matchers, returning :class:`Mismatch` objects rather than
raising, so a caller can show every difference at once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import attrs

from perso_sync import errors as _errors
from perso_sync._endpoints import SENSITIVE_HEADERS

__all__ = [
    "BODY_KINDS",
    "CALLS",
    "FORMAT_ID",
    "MATCHER_KINDS",
    "REDACTED",
    "Contract",
    "ContractFile",
    "ContractFormatError",
    "Expectation",
    "Interaction",
    "Matcher",
    "Mismatch",
    "ObservedRequest",
    "ProviderState",
    "RaisesSpec",
    "RequestSpec",
    "ResponseSpec",
    "SseItem",
    "check_outcome",
    "check_request",
    "check_response",
    "compare",
    "contract_to_json",
    "decode_bytes_args",
    "dump_contract_file",
    "exception_view",
    "iter_contracts",
    "load_contract_file",
    "load_contracts",
    "parse_contract_file",
    "parse_path",
    "parse_sse_body",
    "render_sse",
    "to_plain",
]

FORMAT_ID: Final = "perso-contract/1"
#: The only value a sensitive header (the API key, ``Authorization``, ``Cookie``) may have in a
#: contract. On the wire it means "present, with any non-empty value".
REDACTED: Final = "<redacted>"
MATCHER_KINDS: Final = frozenset({"exact", "type", "regex", "timestamp", "present"})
BODY_KINDS: Final = frozenset({"json", "text", "sse"})
SSE_FRAMINGS: Final = frozenset({"lines", "sse", "crlf"})
HTTP_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

#: The public calls a contract may ask the client to make, and the argument names each accepts.
#: ``client.*`` runs on a :class:`perso_sync.PersoClient`; ``session.*`` on a REST-only
#: :class:`perso_sync.Session` opened for ``target.session_id``; ``llm.*`` on an
#: :class:`perso_sync.LlmProcessor` for ``target.session_id``.
CALLS: Final[Mapping[str, frozenset[str]]] = {
    "client.get_llms": frozenset(),
    "client.get_ttss": frozenset(),
    "client.get_stts": frozenset(),
    "client.get_model_styles": frozenset(),
    "client.get_prompts": frozenset(),
    "client.get_documents": frozenset(),
    "client.get_background_images": frozenset(),
    "client.get_mcp_servers": frozenset(),
    "client.get_text_normalizations": frozenset(),
    "client.get_text_normalization": frozenset({"config_id"}),
    "client.get_all_settings": frozenset(),
    "client.get_intro_message": frozenset({"prompt_id"}),
    "client.get_session_templates": frozenset(),
    "client.get_session_template": frozenset({"session_template_id"}),
    "client.create_session_id": frozenset({"params", "session_template_id"}),
    "client.get_session_info": frozenset({"session_id"}),
    "client.get_ice_servers": frozenset({"session_id"}),
    "client.exchange_sdp": frozenset({"session_id", "offer"}),
    "client.create_session_event": frozenset({"session_id", "event", "detail"}),
    "client.log_session_event": frozenset({"session_id", "detail"}),
    "client.make_tts": frozenset({"session_id", "text", "locale", "output_format"}),
    "client.transcribe": frozenset({"session_id", "wav", "language"}),
    "client.create_session": frozenset({"session_id", "width", "height", "connect_timeout"}),
    "session.transcribe_audio": frozenset({"audio", "language"}),
    "session.transcribe_audio_detailed": frozenset({"audio", "language"}),
    "session.process_tts": frozenset({"message", "resample", "locale", "output_format"}),
    "session.log_session_event": frozenset({"detail"}),
    "session.converse": frozenset({"turns"}),
    "llm.process_llm": frozenset({"message", "earlier", "tools"}),
}

#: ``session.converse`` turns: the session methods a turn may call.
CONVERSE_CALLS: Final = frozenset({"process_chat", "process_llm"})
#: Keys of an ``llm.process_llm`` ``tools`` entry (a client tool answering ``result``).
_TOOL_ARG_KEYS: Final = frozenset({"name", "description", "parameters", "execute_only", "result"})

# ISO-8601 date-time as the platform writes it ("2024-05-02T09:05:55.395Z"), with an optional
# zone; checked by pattern first so that e.g. "2024" alone is not accepted as a timestamp.
_TIMESTAMP_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?"
)
_PATH_TOKEN_RE: Final = re.compile(r"\.([A-Za-z_$@][\w\-$@]*)|\[(\d+|\*)\]")


class ContractFormatError(_errors.PersoError, ValueError):
    """A contract file is malformed; the message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        super().__init__(f"{source}: {field}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


# ---------------------------------------------------------------------------------------------
# The typed model


PathSegment: TypeAlias = "str | int"


@attrs.frozen
class Matcher:
    """How a value at one path is compared (the default, without a matcher, is ``exact``)."""

    kind: str
    regex: str | None = None
    min: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"match": self.kind}
        if self.regex is not None:
            out["regex"] = self.regex
        if self.min:
            out["min"] = self.min
        return out


@attrs.frozen
class ProviderState:
    """A precondition the provider must set up before the interaction, e.g.
    ``ProviderState("prompt does not exist", {"prompt_id": "p-404"})``."""

    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class SseItem:
    """One line of an event stream: a ``data:`` event (``data``) or a raw line (``raw``)."""

    data: Any = None
    raw: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"raw": self.raw} if self.raw is not None else {"data": self.data}


@attrs.frozen
class RequestSpec:
    method: str
    path: str
    query: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body_kind: Literal["none", "json", "multipart"] = "none"
    json: Any = None
    #: multipart: ``{"fields": {name: str}, "files": {name: {"filename", "content_type"?,
    #: "base64"}}}``
    multipart: Mapping[str, Any] | None = None


@attrs.frozen
class ResponseSpec:
    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body_kind: Literal["json", "text", "sse"] = "json"
    json: Any = None
    text: str = ""
    sse: tuple[SseItem, ...] = ()
    sse_framing: str = "lines"
    sse_final_newline: bool = True

    def body_bytes(self) -> bytes:
        """The body exactly as a server following this contract sends it."""
        if self.body_kind == "json":
            return json.dumps(self.json).encode()
        if self.body_kind == "text":
            return self.text.encode()
        return render_sse(self.sse, self.sse_framing, self.sse_final_newline)

    def content_type(self) -> str:
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        return {
            "json": "application/json",
            "text": "text/html; charset=utf-8",
            "sse": "text/event-stream",
        }[self.body_kind]


@attrs.frozen
class Interaction:
    request: RequestSpec
    response: ResponseSpec
    #: path -> matcher; paths start with ``request.`` or ``response.``
    matchers: Mapping[str, Matcher] = attrs.field(factory=dict)
    description: str = ""


@attrs.frozen
class RaisesSpec:
    """The exception the call must raise: exact class name from :mod:`perso_sync.errors`, the
    fields to check (``error_code``, ``code``, ``detail``, ``attr``, ``description``,
    ``message`` = ``str(exc)``), and for wrappers the ``underlying`` exception."""

    cls: str
    fields: Mapping[str, Any] = attrs.field(factory=dict)
    underlying: RaisesSpec | None = None


@attrs.frozen
class Expectation:
    call: str
    args: Mapping[str, Any] = attrs.field(factory=dict)
    #: ``{"session_id": ...}`` for ``session.*`` and ``llm.*`` calls
    target: Mapping[str, Any] = attrs.field(factory=dict)
    has_result: bool = False
    result: Any = None
    raises: RaisesSpec | None = None
    #: path -> matcher; paths start with ``result`` or ``raises``
    matchers: Mapping[str, Matcher] = attrs.field(factory=dict)


@attrs.frozen
class Contract:
    name: str
    source: str
    interactions: tuple[Interaction, ...]
    expect: Expectation
    provider_states: tuple[ProviderState, ...] = ()
    description: str = ""
    #: requests may reach the server in any order (e.g. get_all_settings fetches concurrently)
    unordered: bool = False

    @property
    def id(self) -> str:
        """``file-stem::name``: a stable test id."""
        return f"{Path(self.source).stem}::{self.name}"


@attrs.frozen
class ContractFile:
    source: str
    contracts: tuple[Contract, ...]


# ---------------------------------------------------------------------------------------------
# Loading and validation


class _Reader:
    """Typed access to a parsed JSON tree that names the file and field in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> ContractFormatError:
        return ContractFormatError(self.source, field, problem)

    def obj(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be an object, got {_json_type(value)}")
        return value

    def only(self, value: Mapping[str, Any], field: str, allowed: Iterable[str]) -> None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(field, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")

    def req(self, value: Mapping[str, Any], key: str, field: str) -> Any:
        if key not in value:
            raise self.fail(f"{field}.{key}", "is required")
        return value[key]

    def str_(self, value: Any, field: str, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(field, f"must be a non-empty string, got {value!r}")
        return value

    def list_(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(field, f"must be a list, got {_json_type(value)}")
        return value

    def str_map(self, value: Any, field: str) -> dict[str, str]:
        mapping = self.obj(value, field)
        for key, item in mapping.items():
            if not isinstance(item, str):
                raise self.fail(f"{field}.{key}", f"must be a string, got {_json_type(item)}")
        return dict(mapping)


def load_contract_file(path: str | Path) -> ContractFile:
    """Read and validate one contract file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractFormatError(source, "<file>", f"cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractFormatError(
            source, "<file>", f"is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    return parse_contract_file(data, source)


def parse_contract_file(data: Any, source: str = "<memory>") -> ContractFile:
    """Validate an already-parsed contract file (e.g. a mutated copy in a test)."""
    r = _Reader(source)
    top = r.obj(data, "<file>")
    r.only(top, "<file>", {"format", "description", "contracts"})
    if top.get("format") != FORMAT_ID:
        raise r.fail("format", f"must be {FORMAT_ID!r}, got {top.get('format')!r}")
    items = r.list_(r.req(top, "contracts", "<file>"), "contracts")
    if not items:
        raise r.fail("contracts", "must not be empty")
    contracts = tuple(_parse_contract(r, item, f"contracts[{i}]") for i, item in enumerate(items))
    seen: set[str] = set()
    for i, contract in enumerate(contracts):
        if contract.name in seen:
            raise r.fail(f"contracts[{i}].name", f"duplicate name {contract.name!r}")
        seen.add(contract.name)
    return ContractFile(source=source, contracts=contracts)


def load_contracts(directory: str | Path) -> list[ContractFile]:
    """Load and validate every ``*.json`` file of a directory (sorted by name)."""
    files = sorted(Path(directory).glob("*.json"))
    return [load_contract_file(path) for path in files]


def iter_contracts(directory: str | Path) -> Iterator[Contract]:
    for contract_file in load_contracts(directory):
        yield from contract_file.contracts


def _parse_contract(r: _Reader, raw: Any, field: str) -> Contract:
    obj = r.obj(raw, field)
    r.only(
        obj,
        field,
        {"name", "description", "provider_states", "interactions", "expect", "unordered"},
    )
    name = r.str_(r.req(obj, "name", field), f"{field}.name")
    field = f"{field}({name!r})"
    states = tuple(
        _parse_state(r, item, f"{field}.provider_states[{i}]")
        for i, item in enumerate(
            r.list_(obj.get("provider_states", []), f"{field}.provider_states")
        )
    )
    raw_interactions = r.list_(r.req(obj, "interactions", field), f"{field}.interactions")
    interactions = tuple(
        _parse_interaction(r, item, f"{field}.interactions[{i}]")
        for i, item in enumerate(raw_interactions)
    )
    unordered = obj.get("unordered", False)
    if not isinstance(unordered, bool):
        raise r.fail(f"{field}.unordered", "must be true or false")
    expect = _parse_expect(r, r.req(obj, "expect", field), f"{field}.expect")
    if not interactions and expect.raises is None:
        raise r.fail(f"{field}.interactions", "must not be empty for a call that succeeds")
    return Contract(
        name=name,
        source=r.source,
        interactions=interactions,
        expect=expect,
        provider_states=states,
        description=r.str_(obj.get("description", ""), f"{field}.description", empty=True),
        unordered=unordered,
    )


def _parse_state(r: _Reader, raw: Any, field: str) -> ProviderState:
    obj = r.obj(raw, field)
    r.only(obj, field, {"state", "params"})
    params = r.obj(obj.get("params", {}), f"{field}.params")
    return ProviderState(name=r.str_(r.req(obj, "state", field), f"{field}.state"), params=params)


def _parse_interaction(r: _Reader, raw: Any, field: str) -> Interaction:
    obj = r.obj(raw, field)
    r.only(obj, field, {"description", "request", "response", "matchers"})
    request = _parse_request(r, r.req(obj, "request", field), f"{field}.request")
    response = _parse_response(r, r.req(obj, "response", field), f"{field}.response")
    matchers = _parse_matchers(
        r, obj.get("matchers", {}), f"{field}.matchers", roots=("request", "response")
    )
    interaction = Interaction(
        request=request,
        response=response,
        matchers=matchers,
        description=r.str_(obj.get("description", ""), f"{field}.description", empty=True),
    )
    _check_matcher_targets(r, interaction, f"{field}.matchers")
    return interaction


def _parse_request(r: _Reader, raw: Any, field: str) -> RequestSpec:
    obj = r.obj(raw, field)
    r.only(obj, field, {"method", "path", "query", "headers", "json", "multipart"})
    method = r.str_(r.req(obj, "method", field), f"{field}.method")
    if method not in HTTP_METHODS:
        raise r.fail(f"{field}.method", f"must be one of {sorted(HTTP_METHODS)}, got {method!r}")
    path = r.str_(r.req(obj, "path", field), f"{field}.path")
    if not path.startswith("/") or "?" in path:
        raise r.fail(f"{field}.path", "must start with '/' and carry no query (use 'query')")
    headers = _parse_headers(r, obj.get("headers", {}), f"{field}.headers")
    if "json" in obj and "multipart" in obj:
        raise r.fail(field, "has both 'json' and 'multipart'; a request has at most one body")
    body_kind: Literal["none", "json", "multipart"] = "none"
    multipart = None
    if "json" in obj:
        body_kind = "json"
    elif "multipart" in obj:
        body_kind = "multipart"
        multipart = _parse_multipart(r, obj["multipart"], f"{field}.multipart")
    return RequestSpec(
        method=method,
        path=path,
        query=r.str_map(obj.get("query", {}), f"{field}.query"),
        headers=headers,
        body_kind=body_kind,
        json=obj.get("json"),
        multipart=multipart,
    )


def _parse_headers(r: _Reader, raw: Any, field: str) -> dict[str, str]:
    headers = r.str_map(raw, field)
    for name, value in headers.items():
        # The key must never be written down: a sensitive header is only ever "<redacted>".
        if name.lower() in SENSITIVE_HEADERS and value != REDACTED:
            raise r.fail(f"{field}.{name}", f"a sensitive header must be {REDACTED!r}")
    return headers


def _parse_multipart(r: _Reader, raw: Any, field: str) -> Mapping[str, Any]:
    obj = r.obj(raw, field)
    r.only(obj, field, {"fields", "files"})
    r.str_map(obj.get("fields", {}), f"{field}.fields")
    files = r.obj(obj.get("files", {}), f"{field}.files")
    for name, spec in files.items():
        sub = f"{field}.files.{name}"
        file_obj = r.obj(spec, sub)
        r.only(file_obj, sub, {"filename", "content_type", "base64"})
        r.str_(r.req(file_obj, "filename", sub), f"{sub}.filename")
        _b64(r, r.req(file_obj, "base64", sub), f"{sub}.base64")
    return obj


def _b64(r: _Reader, value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise r.fail(field, "must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise r.fail(field, f"is not valid base64 ({exc})") from exc


def _parse_response(r: _Reader, raw: Any, field: str) -> ResponseSpec:
    obj = r.obj(raw, field)
    r.only(obj, field, {"status", "headers", "json", "text", "sse"})
    status = r.req(obj, "status", field)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise r.fail(f"{field}.status", f"must be an HTTP status 100..599, got {status!r}")
    kinds = [kind for kind in ("json", "text", "sse") if kind in obj]
    if len(kinds) != 1:
        raise r.fail(field, f"needs exactly one body of 'json', 'text' or 'sse', got {kinds}")
    kind = kinds[0]
    headers = _parse_headers(r, obj.get("headers", {}), f"{field}.headers")
    if kind == "json":
        return ResponseSpec(status=status, headers=headers, body_kind="json", json=obj["json"])
    if kind == "text":
        text = obj["text"]
        if not isinstance(text, str):
            raise r.fail(f"{field}.text", 'must be a string (use "" for an empty body)')
        return ResponseSpec(status=status, headers=headers, body_kind="text", text=text)
    sse = r.obj(obj["sse"], f"{field}.sse")
    r.only(sse, f"{field}.sse", {"framing", "final_newline", "events"})
    framing = sse.get("framing", "lines")
    if framing not in SSE_FRAMINGS:
        raise r.fail(f"{field}.sse.framing", f"must be one of {sorted(SSE_FRAMINGS)}")
    final_newline = sse.get("final_newline", True)
    if not isinstance(final_newline, bool):
        raise r.fail(f"{field}.sse.final_newline", "must be true or false")
    items = []
    for i, item in enumerate(r.list_(r.req(sse, "events", f"{field}.sse"), f"{field}.sse.events")):
        sub = f"{field}.sse.events[{i}]"
        item_obj = r.obj(item, sub)
        if set(item_obj) == {"data"}:
            items.append(SseItem(data=item_obj["data"]))
        elif set(item_obj) == {"raw"}:
            raw_line = r.str_(item_obj["raw"], f"{sub}.raw", empty=True)
            if "\n" in raw_line or "\r" in raw_line:
                raise r.fail(f"{sub}.raw", "must be a single line")
            items.append(SseItem(raw=raw_line))
        else:
            raise r.fail(sub, 'must be {"data": <json>} or {"raw": "<line>"}')
    return ResponseSpec(
        status=status,
        headers=headers,
        body_kind="sse",
        sse=tuple(items),
        sse_framing=framing,
        sse_final_newline=final_newline,
    )


def _parse_matchers(
    r: _Reader, raw: Any, field: str, *, roots: Sequence[str]
) -> dict[str, Matcher]:
    obj = r.obj(raw, field)
    out: dict[str, Matcher] = {}
    for path, spec in obj.items():
        sub = f"{field}[{path!r}]"
        try:
            segments = parse_path(path)
        except ValueError as exc:
            raise r.fail(sub, str(exc)) from exc
        if segments[0] not in roots:
            raise r.fail(sub, f"a path here must start with one of {list(roots)}")
        matcher_obj = r.obj(spec, sub)
        r.only(matcher_obj, sub, {"match", "regex", "min"})
        kind = matcher_obj.get("match")
        if kind not in MATCHER_KINDS:
            raise r.fail(f"{sub}.match", f"must be one of {sorted(MATCHER_KINDS)}, got {kind!r}")
        regex = matcher_obj.get("regex")
        if kind == "regex":
            regex = r.str_(regex, f"{sub}.regex")
            try:
                re.compile(regex)
            except re.error as exc:
                raise r.fail(f"{sub}.regex", f"does not compile: {exc}") from exc
        elif regex is not None:
            raise r.fail(f"{sub}.regex", "only a 'regex' matcher takes a regex")
        minimum = matcher_obj.get("min", 0)
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
            raise r.fail(f"{sub}.min", "must be a non-negative integer")
        out[path] = Matcher(kind=kind, regex=regex, min=minimum)
    return out


def _check_matcher_targets(r: _Reader, interaction: Interaction, field: str) -> None:
    """A regex matcher must accept its own example, or the contract contradicts itself."""
    tree = {
        "request": _request_tree(interaction.request),
        "response": _response_tree(interaction.response),
    }
    for path, matcher in interaction.matchers.items():
        if matcher.kind != "regex" or matcher.regex is None:
            continue
        for value in _select(tree, parse_path(path)):
            if not isinstance(value, str) or not re.fullmatch(matcher.regex, value):
                raise r.fail(
                    f"{field}[{path!r}]", f"the example {value!r} does not match its own regex"
                )


def _parse_expect(r: _Reader, raw: Any, field: str) -> Expectation:
    obj = r.obj(raw, field)
    r.only(obj, field, {"call", "args", "target", "result", "raises", "matchers"})
    call = r.str_(r.req(obj, "call", field), f"{field}.call")
    if call not in CALLS:
        raise r.fail(f"{field}.call", f"unknown call {call!r}; known: {sorted(CALLS)}")
    args = r.obj(obj.get("args", {}), f"{field}.args")
    unknown = sorted(set(args) - CALLS[call])
    if unknown:
        raise r.fail(f"{field}.args", f"{call} takes no argument(s) {unknown}")
    try:
        decode_bytes_args(args)
    except ValueError as exc:
        raise r.fail(f"{field}.args", str(exc)) from exc
    _check_llm_args(r, args, f"{field}.args")
    target = r.obj(obj.get("target", {}), f"{field}.target")
    r.only(target, f"{field}.target", {"session_id"})
    if call.startswith(("session.", "llm.")):
        r.str_(r.req(target, "session_id", f"{field}.target"), f"{field}.target.session_id")
    elif target:
        raise r.fail(f"{field}.target", "only session.* and llm.* calls take a target")
    raises = None
    if "raises" in obj:
        raises = _parse_raises(r, obj["raises"], f"{field}.raises")
    if ("result" in obj) == ("raises" in obj):
        raise r.fail(field, "needs exactly one of 'result' or 'raises'")
    return Expectation(
        call=call,
        args=args,
        target=target,
        has_result="result" in obj,
        result=obj.get("result"),
        raises=raises,
        matchers=_parse_matchers(
            r, obj.get("matchers", {}), f"{field}.matchers", roots=("result", "raises")
        ),
    )


def _check_llm_args(r: _Reader, args: Mapping[str, Any], field: str) -> None:
    """The structured arguments of ``session.converse`` and ``llm.process_llm``."""
    for index, turn in enumerate(r.list_(args.get("turns", []), f"{field}.turns")):
        where = f"{field}.turns[{index}]"
        turn = r.obj(turn, where)
        r.only(turn, where, {"call", "message"})
        call = r.str_(r.req(turn, "call", where), f"{where}.call")
        if call not in CONVERSE_CALLS:
            raise r.fail(f"{where}.call", f"one of {sorted(CONVERSE_CALLS)}")
        r.str_(r.req(turn, "message", where), f"{where}.message")
    for index, message in enumerate(r.list_(args.get("earlier", []), f"{field}.earlier")):
        r.str_(message, f"{field}.earlier[{index}]")
    for index, tool in enumerate(r.list_(args.get("tools", []), f"{field}.tools")):
        where = f"{field}.tools[{index}]"
        tool = r.obj(tool, where)
        r.only(tool, where, _TOOL_ARG_KEYS)
        r.str_(r.req(tool, "name", where), f"{where}.name")
        r.str_(r.req(tool, "description", where), f"{where}.description", empty=True)
        r.obj(r.req(tool, "parameters", where), f"{where}.parameters")
        r.req(tool, "result", where)
        if not isinstance(tool.get("execute_only", False), bool):
            raise r.fail(f"{where}.execute_only", "must be a boolean")


_RAISES_FIELDS: Final = frozenset(
    {"error_code", "code", "detail", "attr", "description", "message", "status"}
)


def _parse_raises(r: _Reader, raw: Any, field: str) -> RaisesSpec:
    obj = r.obj(raw, field)
    r.only(obj, field, {"class", "underlying", *_RAISES_FIELDS})
    cls = r.str_(r.req(obj, "class", field), f"{field}.class")
    found = getattr(_errors, cls, None)
    if not (isinstance(found, type) and issubclass(found, _errors.PersoError)):
        raise r.fail(f"{field}.class", f"{cls!r} is not an exception of perso_sync.errors")
    underlying = None
    if "underlying" in obj:
        underlying = _parse_raises(r, obj["underlying"], f"{field}.underlying")
    fields = {key: value for key, value in obj.items() if key in _RAISES_FIELDS}
    return RaisesSpec(cls=cls, fields=fields, underlying=underlying)


def decode_bytes_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments with every ``{"$base64": "..."}`` value turned into ``bytes``."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, dict) and set(value) == {"$base64"}:
            try:
                out[key] = base64.b64decode(value["$base64"], validate=True)
            except (binascii.Error, ValueError, TypeError) as exc:
                raise ValueError(f"argument {key!r} is not valid base64 ({exc})") from exc
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Writing


def contract_to_json(contract: Contract) -> dict[str, Any]:
    """The JSON form of a contract (inverse of the loader)."""
    out: dict[str, Any] = {"name": contract.name}
    if contract.description:
        out["description"] = contract.description
    if contract.provider_states:
        out["provider_states"] = [
            {"state": state.name, "params": dict(state.params)}
            for state in contract.provider_states
        ]
    if contract.unordered:
        out["unordered"] = True
    out["interactions"] = [_interaction_to_json(item) for item in contract.interactions]
    expect = contract.expect
    expect_out: dict[str, Any] = {"call": expect.call, "args": dict(expect.args)}
    if expect.target:
        expect_out["target"] = dict(expect.target)
    if expect.raises is not None:
        expect_out["raises"] = _raises_to_json(expect.raises)
    else:
        expect_out["result"] = expect.result
    if expect.matchers:
        expect_out["matchers"] = {path: m.to_json() for path, m in expect.matchers.items()}
    out["expect"] = expect_out
    return out


def _raises_to_json(spec: RaisesSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"class": spec.cls, **spec.fields}
    if spec.underlying is not None:
        out["underlying"] = _raises_to_json(spec.underlying)
    return out


def _interaction_to_json(interaction: Interaction) -> dict[str, Any]:
    req = interaction.request
    request: dict[str, Any] = {"method": req.method, "path": req.path}
    if req.query:
        request["query"] = dict(req.query)
    if req.headers:
        request["headers"] = dict(req.headers)
    if req.body_kind == "json":
        request["json"] = req.json
    elif req.body_kind == "multipart":
        request["multipart"] = req.multipart
    resp = interaction.response
    response: dict[str, Any] = {"status": resp.status}
    if resp.headers:
        response["headers"] = dict(resp.headers)
    if resp.body_kind == "json":
        response["json"] = resp.json
    elif resp.body_kind == "text":
        response["text"] = resp.text
    else:
        response["sse"] = {
            "framing": resp.sse_framing,
            "final_newline": resp.sse_final_newline,
            "events": [item.to_json() for item in resp.sse],
        }
    out: dict[str, Any] = {}
    if interaction.description:
        out["description"] = interaction.description
    out["request"] = request
    out["response"] = response
    if interaction.matchers:
        out["matchers"] = {path: m.to_json() for path, m in interaction.matchers.items()}
    return out


def dump_contract_file(contracts: Sequence[Contract], description: str = "") -> str:
    """Serialize contracts as one file's JSON text (stable key order, 2-space indent)."""
    top: dict[str, Any] = {"format": FORMAT_ID}
    if description:
        top["description"] = description
    top["contracts"] = [contract_to_json(c) for c in contracts]
    return json.dumps(top, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# SSE bodies


def render_sse(
    items: Sequence[SseItem], framing: str = "lines", final_newline: bool = True
) -> bytes:
    """Render events as a server sends them: ``lines`` = one ``data:`` line per event (what the
    platform sends), ``sse`` = standard framing with a blank line after each event, ``crlf`` =
    standard framing with ``\\r\\n`` line ends."""
    eol = "\r\n" if framing == "crlf" else "\n"
    sep = eol if framing == "lines" else eol * 2
    lines = [
        item.raw if item.raw is not None else "data: " + json.dumps(item.data, ensure_ascii=False)
        for item in items
    ]
    text = sep.join(lines)
    if final_newline and lines:
        text += sep
    return text.encode()


def parse_sse_body(body: bytes) -> list[SseItem]:
    """Split an event-stream body back into items, whatever its framing: blank lines and ``:``
    comments are framing; a ``data:`` line holding JSON is an event; anything else is raw."""
    items: list[SseItem] = []
    for line in body.decode("utf-8", errors="replace").split("\n"):
        line = line.rstrip("\r")
        if not line.strip() or line.startswith(":"):
            continue
        if line.startswith("data:"):
            try:
                items.append(SseItem(data=json.loads(line[5:].strip())))
                continue
            except json.JSONDecodeError:
                pass
        items.append(SseItem(raw=line))
    return items


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


def _select(tree: Any, pattern: Sequence[PathSegment]) -> list[Any]:
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


def _json_type(value: Any) -> str:
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
                Mismatch(where, f"expected an object, got {_json_type(actual)} {_short(actual)}")
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
                Mismatch(where, f"expected an array, got {_json_type(actual)} {_short(actual)}")
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
        if _json_type(expected) != _json_type(actual):
            out.append(Mismatch(where, f"expected a {_json_type(expected)}, got {_short(actual)}"))
        return
    if not _scalar_equal(expected, actual):
        out.append(Mismatch(where, f"expected {_short(expected)}, got {_short(actual)}"))


def _scalar_equal(expected: Any, actual: Any) -> bool:
    if _json_type(expected) != _json_type(actual):
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


def _request_tree(req: RequestSpec) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "method": req.method,
        "path": req.path,
        "query": dict(req.query),
        "headers": dict(req.headers),
    }
    if req.body_kind == "json":
        tree["json"] = req.json
    return tree


def _response_tree(resp: ResponseSpec) -> dict[str, Any]:
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
