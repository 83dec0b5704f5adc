"""The mock's scripted assistant: which events an ``llm/v2`` request streams back.

Pure code (no I/O): :meth:`LlmScript.plan` turns a request into a list of event dicts; the app
frames them (one ``data:`` line each, or standard SSE) and paces them.

How a request is answered:

1. The last message has ``role == "tool"`` (the client sends tool results): a follow-up answer.
   Its text is the ``follow_up`` of the rule that matched the last user message, else the
   script's ``follow_up``; ``{results}`` in it becomes the trailing tool results joined by ``;``
   and ``{message}`` the last user message.
2. Otherwise the first rule whose ``pattern`` (``re.search``) matches the last user message (and
   whose ``times`` is not used up) decides:

   - ``events``: sent verbatim (then ``done`` unless ``done=False``); ``follow_up_events``, when
     set, answer the follow-up requests (last message ``role == "tool"``) verbatim instead;
   - ``tool_calls``: each :class:`ToolCall` whose name is a client tool of the request's
     ``tools`` → one ``tool_call`` event with all of them (ids ``call_1``, ``call_2``, ... per
     session); a name offered by an MCP server attached to the session (``catalog.mcp_tools``)
     → a ``{"role": "tool", "type": "tool_call", "content": <result JSON>, "tool_call_id"}``
     event; MCP-only → followed in the same stream by the follow-up answer; mixed → the
     ``tool_call`` event lists client and MCP calls and the stream ends (the client follows up).
     No usable tool → the default reply;
   - ``reply``: text streamed in deltas (before the tool calls, if any);
   - ``fail``: a ``{"status": "fail", "reason": fail}`` event (after ``reply``, if any).

3. No rule matches: ``default_reply`` (``{message}`` = the user message), in several deltas.

Every reply ends with ``{"status": "success", "type": "done", "content": ""}``.

Seeded rules (:func:`default_rules`): "please fail" → fail event; "call tool NAME [with {json}]"
→ that tool; "weather [in CITY]" → client tool ``get_weather`` ``{"location": CITY or "Seoul"}``;
"search ..." → MCP tool ``search_docs``; "book ... meeting" → MCP tool ``book_meeting``.

Per session: ``server.sessions[sid].llm_script = LlmScript(rules=[Rule(pattern="hi",
reply="Hey")])``
(``server.set_llm_script(sid, script)``); for every session: ``server.llm_script = ...``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import attrs

DONE_EVENT: dict[str, Any] = {"status": "success", "type": "done", "content": ""}

ArgSpec = dict[str, Any] | Callable[["re.Match[str]"], dict[str, Any]]
NameSpec = str | Callable[["re.Match[str]"], str]


@attrs.define(kw_only=True)
class ToolCall:
    """A tool the assistant asks for: ``name`` and ``arguments`` may be fixed or computed from
    the rule's regex match."""

    name: NameSpec
    arguments: ArgSpec = attrs.field(factory=dict)

    def resolve(self, match: re.Match[str]) -> tuple[str, dict[str, Any]]:
        """The ``(name, arguments)`` of this call for the rule's regex ``match``."""
        name = self.name(match) if callable(self.name) else self.name
        args = self.arguments(match) if callable(self.arguments) else dict(self.arguments)
        return name, args


@attrs.define(kw_only=True)
class Rule:
    """``pattern`` (regex searched in the last user message) → what to stream (module doc)."""

    pattern: str
    reply: str | None = None
    tool_calls: list[ToolCall] = attrs.field(factory=list)
    follow_up: str | None = None
    fail: str | None = None
    events: list[dict[str, Any]] | None = None
    follow_up_events: list[dict[str, Any]] | None = None
    done: bool = True
    times: int | None = None
    used: int = 0

    def match(self, text: str) -> re.Match[str] | None:
        """The regex match of ``pattern`` in ``text``; None when it does not match or the rule
        has been used ``times`` times."""
        if self.times is not None and self.used >= self.times:
            return None
        return re.search(self.pattern, text)


def _call_tool_args(match: re.Match[str]) -> dict[str, Any]:
    raw = match.group("args")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"input": raw}
    return value if isinstance(value, dict) else {"input": value}


def _weather_args(match: re.Match[str]) -> dict[str, Any]:
    city = (match.group("city") or "").strip().rstrip("?.!")
    return {"location": city or "Seoul"}


def _search_args(match: re.Match[str]) -> dict[str, Any]:
    return {"query": match.string}


def default_rules() -> list[Rule]:
    """The seeded rules (see the module docstring)."""
    return [
        Rule(pattern=r"(?i)\bplease fail\b", fail="The mock LLM was asked to fail."),
        Rule(
            pattern=r"(?i)\bcall (?:the )?tool (?P<name>[\w.-]+)(?: with (?P<args>\{.*\}))?",
            tool_calls=[ToolCall(name=lambda m: m.group("name"), arguments=_call_tool_args)],
            follow_up="The tool returned: {results}",
        ),
        Rule(
            pattern=r"(?i)\bweather\b(?: in (?P<city>[^\W\d_][\w ]*))?",
            tool_calls=[ToolCall(name="get_weather", arguments=_weather_args)],
            follow_up="Here is the weather report: {results}",
        ),
        Rule(
            pattern=r"(?i)\bsearch\b",
            tool_calls=[ToolCall(name="search_docs", arguments=_search_args)],
            follow_up="I searched the knowledge base and found: {results}",
        ),
        Rule(
            pattern=r"(?i)\bbook\b.*\bmeeting\b",
            tool_calls=[ToolCall(name="book_meeting", arguments={"duration_min": 30})],
            follow_up="Your meeting is booked: {results}",
        ),
    ]


def split_deltas(text: str, words_per_delta: int = 2) -> list[str]:
    """Text deltas as a streaming LLM sends them: a few words each, at least three pieces for
    any text of three characters or more (so clients see several deltas)."""
    if not text:
        return []
    tokens = re.findall(r"\s*\S+\s*", text) or [text]
    size = max(1, words_per_delta)
    pieces = ["".join(tokens[i : i + size]) for i in range(0, len(tokens), size)]
    if len(pieces) < 3 and len(text) >= 3:
        third = len(text) // 3
        pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
    return pieces


def message_event(content: str) -> dict[str, Any]:
    return {"status": "success", "type": "message", "content": content}


@attrs.define(kw_only=True)
class LlmScript:
    """A scripted assistant (module docstring). ``delay`` (seconds between events) and
    ``framing`` (``"platform"`` / ``"sse"``) default to the catalog settings when None."""

    rules: list[Rule] = attrs.field(factory=default_rules)
    default_reply: str = "Hello! I am the Perso mock assistant. You said: {message}"
    follow_up: str = "Thanks, the tool returned: {results}"
    delay: float | None = None
    framing: str | None = None
    words_per_delta: int = 2

    def plan(
        self,
        messages: list[Any],
        tools: list[Any],
        *,
        mcp_tools: Callable[[str], tuple[bool, Any]] = lambda name: (False, None),
        call_ids: Iterator[int] | None = None,
    ) -> list[dict[str, Any]]:
        """The events answering one request.

        ``mcp_tools(name) -> (found, result)`` looks a tool up in the session's MCP servers;
        ``call_ids`` numbers tool calls (per session, so ids stay unique across turns).
        """
        ids = call_ids if call_ids is not None else iter(range(1, 1_000_000))
        user_text = _last_user_text(messages)
        rule, match = self._find_rule(user_text)
        last = messages[-1] if messages else {}
        if isinstance(last, dict) and last.get("role") == "tool":
            if rule is not None and rule.follow_up_events is not None:
                return [dict(e) for e in rule.follow_up_events]
            results = _trailing_tool_results(messages)
            template = (rule.follow_up if rule and rule.follow_up else None) or self.follow_up
            text = _fill(template, user_text, "; ".join(results))
            return [*self._deltas(text), DONE_EVENT]
        if rule is None or match is None:
            return [*self._deltas(_fill(self.default_reply, user_text, "")), DONE_EVENT]
        rule.used += 1
        if rule.events is not None:
            events = [dict(e) for e in rule.events]
            return [*events, DONE_EVENT] if rule.done else events
        events = self._deltas(_fill(rule.reply, user_text, "")) if rule.reply else []
        if rule.fail is not None:
            return [*events, {"status": "fail", "reason": rule.fail}, DONE_EVENT]
        if rule.tool_calls:
            tool_events = self._tool_events(rule, match, tools, mcp_tools, ids, user_text)
            if tool_events is None:
                if not events:
                    events = self._deltas(_fill(self.default_reply, user_text, ""))
            else:
                events.extend(tool_events)
        return [*events, DONE_EVENT]

    def _find_rule(self, user_text: str) -> tuple[Rule | None, re.Match[str] | None]:
        for rule in self.rules:
            match = rule.match(user_text)
            if match is not None:
                return rule, match
        return None, None

    def _tool_events(
        self,
        rule: Rule,
        match: re.Match[str],
        tools: list[Any],
        mcp_tools: Callable[[str], tuple[bool, Any]],
        ids: Iterator[int],
        user_text: str,
    ) -> list[dict[str, Any]] | None:
        client_names = _client_tool_names(tools)
        calls: list[dict[str, Any]] = []
        mcp_results: list[dict[str, Any]] = []
        has_client_call = False
        for spec in rule.tool_calls:
            name, args = spec.resolve(match)
            call = {
                "id": f"call_{next(ids)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
            }
            if name in client_names:
                has_client_call = True
                calls.append(call)
                continue
            found, result = mcp_tools(name)
            if found:
                calls.append(call)
                mcp_results.append(
                    {
                        "status": "success",
                        "role": "tool",
                        "type": "tool_call",
                        "content": json.dumps(result, ensure_ascii=False),
                        "tool_call_id": call["id"],
                    }
                )
        if not calls:
            return None
        if has_client_call:
            tool_call = {"status": "success", "type": "tool_call", "content": ""}
            return [{**tool_call, "tool_calls": calls}, *mcp_results]
        # MCP only: the platform ran the tools itself and goes on answering in the same stream.
        results = "; ".join(str(event["content"]) for event in mcp_results)
        follow_up = _fill(rule.follow_up or self.follow_up, user_text, results)
        return [*mcp_results, *self._deltas(follow_up)]

    def _deltas(self, text: str) -> list[dict[str, Any]]:
        return [message_event(piece) for piece in split_deltas(text, self.words_per_delta)]


def _fill(template: str | None, message: str, results: str) -> str:
    if not template:
        return ""
    return template.replace("{message}", message).replace("{results}", results)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # OpenAI-style content parts: keep the text ones.
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(str(p) for p in parts)
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _trailing_tool_results(messages: list[Any]) -> list[str]:
    results: list[str] = []
    for message in reversed(messages):
        if not (isinstance(message, dict) and message.get("role") == "tool"):
            break
        results.append(_content_text(message.get("content")))
    return list(reversed(results))


def _client_tool_names(tools: list[Any]) -> set[str]:
    names: set[str] = set()
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
        elif isinstance(tool.get("name"), str):
            names.add(tool["name"])
    return names
