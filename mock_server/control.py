"""The mock's control API over HTTP, under ``/_mock/`` (for clients in other processes or
languages, e.g. the official JS SDK run against ``python -m mock_server``).

Not journaled, no API key: the mock binds to loopback, and ``python -m mock_server`` refuses any
other address unless given ``--allow-remote`` (then it warns loudly: anyone who can reach it can
read the journal and steer the mock). Bodies and answers are JSON. Input is validated before it
is used: an unknown endpoint, a field of the wrong type (``"delay": "x"``), a rule ``pattern``
that is not a valid regular expression → 400 with the standard error body naming the field;
nothing is armed or replaced then.

| method | path | body → answer |
|---|---|---|
| GET | ``/_mock/journal`` | → every journal entry (``JournalEntry.to_dict()``) |
| DELETE | ``/_mock/journal`` | clears it |
| POST | ``/_mock/reset`` | back to the seeded state |
| GET | ``/_mock/sessions`` | → ``[{session_id, status, termination_reason, capability, events,
params}]`` |
| POST | ``/_mock/sessions/{sid}/terminate`` | ``{"reason"?}`` → terminates the session |
| POST | ``/_mock/faults`` | ``{"endpoint", ...Fault fields}`` → arms a fault |
| DELETE | ``/_mock/faults`` | disarms every fault |
| PUT | ``/_mock/llm_script`` | see below |
| GET | ``/_mock/catalog`` | → the catalog in its file shape |
| PUT | ``/_mock/catalog`` | a (partial) catalog: keys given replace the current ones |

``PUT /_mock/llm_script`` body: ``{"session_id"?, "rules": [{"pattern", "reply"?, "fail"?,
"follow_up"?, "tool_calls"?: [{"name", "arguments"}], "events"?, "follow_up_events"?, "done"?,
"times"?}], "default_reply"?, "follow_up"?, "delay"?, "framing"?, "keep_default_rules"?}``; without
``session_id`` it replaces the server-wide script.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from typing import Any

import attrs
from aiohttp import web

from mock_server.catalog import Catalog, CatalogError
from mock_server.context import RAW_KEY, MockContext
from mock_server.faults import Fault
from mock_server.llm_script import LlmScript, Rule, ToolCall, default_rules

_FAULT_FIELDS = {f.name for f in attrs.fields(Fault)} - {"endpoint", "hits"}
_RULE_FIELDS = {
    "pattern",
    "reply",
    "fail",
    "follow_up",
    "events",
    "follow_up_events",
    "done",
    "times",
}
_SCRIPT_FIELDS = {"default_reply", "follow_up", "delay", "framing", "words_per_delta"}


def _bad(detail: str) -> web.Response:
    body = {"type": "validation_error", "errors": [{"code": "invalid", "detail": detail}]}
    return web.json_response(body, status=400)


async def _json(request: web.Request) -> Any:
    raw: bytes = request.get(RAW_KEY) or await request.read()

    try:
        return json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        return None


def _optional_text(owner: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{owner} {name!r} must be a string or null, got {value!r}")


def _seconds(name: str, value: Any) -> None:
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if value is not None and not (valid and value >= 0):
        raise ValueError(f"{name!r} must be seconds >= 0 or null, got {value!r}")


def _rule_from_json(raw: Any) -> Rule:
    if not isinstance(raw, dict) or not isinstance(raw.get("pattern"), str):
        raise ValueError("each rule needs a string 'pattern'")
    unknown = set(raw) - _RULE_FIELDS - {"tool_calls"}
    if unknown:
        raise ValueError(f"unknown rule fields: {sorted(unknown)}")
    try:
        re.compile(raw["pattern"])
    except re.error as exc:
        raise ValueError(
            f"rule pattern {raw['pattern']!r} is not a valid regular expression: {exc}"
        ) from None
    for name in ("reply", "follow_up", "fail"):
        _optional_text("rule", name, raw.get(name))
    times = raw.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise ValueError(f"rule 'times' must be an integer >= 0 or null, got {times!r}")
    if not isinstance(raw.get("done", True), bool):
        raise ValueError("rule 'done' must be true or false")
    events = raw.get("events")
    if events is not None and (
        not isinstance(events, list) or not all(isinstance(e, dict) for e in events)
    ):
        raise ValueError("rule 'events' must be a list of objects or null")
    calls = raw.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ValueError("rule 'tool_calls' must be a list")
    tool_calls = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ValueError("each tool call needs a string 'name'")
        arguments = call.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise ValueError("tool call 'arguments' must be an object")
        tool_calls.append(ToolCall(name=call["name"], arguments=dict(arguments)))
    return Rule(tool_calls=tool_calls, **{k: v for k, v in raw.items() if k in _RULE_FIELDS})


def script_from_json(data: dict[str, Any]) -> LlmScript:
    """An :class:`LlmScript` from its JSON form (see the module table); ``ValueError`` naming
    the field when a value could not be used."""
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ValueError("'rules' must be a list")
    rules = [_rule_from_json(raw) for raw in raw_rules]
    if data.get("keep_default_rules"):
        rules.extend(default_rules())
    for name in ("default_reply", "follow_up"):
        if name in data and not isinstance(data[name], str):
            raise ValueError(f"script {name!r} must be a string, got {data[name]!r}")
    _seconds("delay", data.get("delay"))
    if data.get("framing") not in (None, "platform", "sse"):
        raise ValueError(f"'framing' must be 'platform', 'sse' or null, got {data['framing']!r}")
    words = data.get("words_per_delta", 2)
    if isinstance(words, bool) or not isinstance(words, int) or words < 1:
        raise ValueError(f"'words_per_delta' must be an integer >= 1, got {words!r}")
    options = {k: v for k, v in data.items() if k in _SCRIPT_FIELDS}
    return LlmScript(rules=rules, **options)


def add_control_routes(app: web.Application, ctx: MockContext, endpoints: Collection[str]) -> None:
    """Serve the control API of ``ctx`` under ``/_mock/`` in ``app``; ``endpoints`` are the
    route names a fault may target (the application's route table, given by ``build_app``)."""
    known = sorted(endpoints)

    async def get_journal(request: web.Request) -> web.StreamResponse:
        return web.json_response(ctx.journal.to_list())

    async def clear_journal(request: web.Request) -> web.StreamResponse:
        ctx.journal.clear()
        return web.json_response({})

    async def reset(request: web.Request) -> web.StreamResponse:
        await ctx.reset()
        return web.json_response({})

    async def sessions(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            [
                {
                    "session_id": s.session_id,
                    "status": s.status,
                    "termination_reason": s.termination_reason,
                    "capability": s.capability,
                    "events": s.events,
                    "params": s.params,
                }
                for s in ctx.sessions.values()
            ]
        )

    async def terminate(request: web.Request) -> web.StreamResponse:
        session = ctx.session(request.match_info["session_id"])
        if session is None:
            return web.json_response({}, status=404)
        body = await _json(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        await ctx.end_session(session, str(reason or "GRACEFUL_TERMINATION"))
        return web.json_response({"status": session.status})

    async def add_fault(request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("endpoint"), str):
            return _bad("a fault needs a string 'endpoint'")
        if body["endpoint"] not in (*known, "*"):
            return _bad(f"unknown endpoint {body['endpoint']!r}; known: '*', {', '.join(known)}")
        unknown = set(body) - _FAULT_FIELDS - {"endpoint"}
        if unknown:
            return _bad(f"unknown fault fields: {sorted(unknown)}")
        try:
            ctx.faults.add(body.pop("endpoint"), **body)
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))
        return web.json_response({}, status=201)

    async def clear_faults(request: web.Request) -> web.StreamResponse:
        ctx.faults.clear()
        return web.json_response({})

    async def put_script(request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        if not isinstance(body, dict):
            return _bad("expected a JSON object")
        try:
            script = script_from_json(body)
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))
        session_id = body.get("session_id")
        if session_id is None:
            ctx.llm_script = script
        else:
            session = ctx.session(str(session_id))
            if session is None:
                return web.json_response({}, status=404)
            session.llm_script = script
        return web.json_response({})

    async def get_catalog(request: web.Request) -> web.StreamResponse:
        return web.json_response(ctx.catalog.to_dict())

    async def put_catalog(request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        if not isinstance(body, dict):
            return _bad("expected a JSON object")
        try:
            merged = Catalog({**ctx.catalog.to_dict(), **body})
        except CatalogError as exc:
            return _bad(str(exc))
        ctx.catalog.restore(merged)
        return web.json_response({})

    router = app.router
    router.add_get("/_mock/journal", get_journal)
    router.add_delete("/_mock/journal", clear_journal)
    router.add_post("/_mock/reset", reset)
    router.add_get("/_mock/sessions", sessions)
    router.add_post("/_mock/sessions/{session_id}/terminate", terminate)
    router.add_post("/_mock/faults", add_fault)
    router.add_delete("/_mock/faults", clear_faults)
    router.add_put("/_mock/llm_script", put_script)
    router.add_get("/_mock/catalog", get_catalog)
    router.add_put("/_mock/catalog", put_catalog)
