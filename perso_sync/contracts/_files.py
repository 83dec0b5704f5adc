"""Contract files in and out: loading with precise errors, and writing.

Pure: no sockets, no threads, no clocks. Loading turns JSON into the typed model
(:mod:`perso_sync.contracts._model`), raising :class:`ContractFormatError` naming the file and the
field for anything malformed; writing is its inverse.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from perso_sync import errors as _errors
from perso_sync._endpoints import SENSITIVE_HEADERS
from perso_sync.contracts._match import (
    json_type,
    parse_path,
    request_tree,
    response_tree,
    select_paths,
)
from perso_sync.contracts._model import (
    CALLS,
    CONVERSE_CALLS,
    FORMAT_ID,
    HTTP_METHODS,
    MATCHER_KINDS,
    REDACTED,
    SSE_FRAMINGS,
    Contract,
    ContractFile,
    ContractFormatError,
    Expectation,
    Interaction,
    Matcher,
    ProviderState,
    RaisesSpec,
    RequestSpec,
    ResponseSpec,
    SseItem,
)

__all__ = [
    "contract_to_json",
    "decode_bytes_args",
    "dump_contract_file",
    "iter_contracts",
    "load_contract_file",
    "load_contracts",
    "parse_contract_file",
]

#: Keys of an ``llm.process_llm`` ``tools`` entry (a client tool answering ``result``).
_TOOL_ARG_KEYS: Final = frozenset({"name", "description", "parameters", "execute_only", "result"})


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
            raise self.fail(field, f"must be an object, got {json_type(value)}")
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
            raise self.fail(field, f"must be a list, got {json_type(value)}")
        return value

    def str_map(self, value: Any, field: str) -> dict[str, str]:
        mapping = self.obj(value, field)
        for key, item in mapping.items():
            if not isinstance(item, str):
                raise self.fail(f"{field}.{key}", f"must be a string, got {json_type(item)}")
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
        "request": request_tree(interaction.request),
        "response": response_tree(interaction.response),
    }
    for path, matcher in interaction.matchers.items():
        if matcher.kind != "regex" or matcher.regex is None:
            continue
        for value in select_paths(tree, parse_path(path)):
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
