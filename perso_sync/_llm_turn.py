"""One LLM turn as a pure state machine (docs/PROTOCOL.md §6): events in, chunks and decisions out.

:class:`LlmTurn` owns the turn's history, the text accumulation (emoji removed), the batching of
deltas into ``message`` chunks, the tool-call bookkeeping, the follow-up decision and the
10-round limit. It does no I/O: the async core in ``llm.py`` sends the requests it asks for,
runs the tools it names and feeds back what happened::

    turn = LlmTurn(message, tools={"get_weather": False})
    body = turn.request_body(prior_history, tool_schemas)       # round 1
    step = turn.on_events(parser.feed(data))                    # yield step.chunks
    step = turn.on_stream_end(parser.close())                   # step.decision: RunTools | ...
    step = turn.on_tool_results({call_id: result, ...})         # FollowUp | Done
    ...
    Done.history -> appended to the processor's history (only on success)

The public chunk classes live here because the turn produces them; ``perso_sync.llm`` exports
them.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

from perso_sync._emoji import remove_emoji
from perso_sync._sse import (
    LlmEvent,
    RemoteToolResult,
    StreamFailed,
    TextDelta,
    ToolCalls,
    Unknown,
)
from perso_sync.errors import LLMError, LLMStreamingResponseError

__all__ = [
    "MAX_ROUNDS",
    "Done",
    "ErrorChunk",
    "Failed",
    "FollowUp",
    "LlmChunk",
    "LlmTurn",
    "MessageChunk",
    "RunTools",
    "ToolCallChunk",
    "ToolResultChunk",
    "ToolRun",
    "TurnStep",
    "js_number",
    "js_stringify",
]

MAX_ROUNDS = 10


# -- public chunks (what process_llm yields) -----------------------------------------------


@attrs.frozen
class MessageChunk:
    """Streaming text of the whole turn (every round, across tool calls).

    ``chunks``: every text piece of the turn so far (emoji removed; deltas that arrived
    together are batched into one chunk); ``message``: their concatenation; ``finish``: True on
    exactly one chunk, the last of a successful turn (even when its text is empty) or of an
    aborted turn that received text. Speak or store ``message`` of the ``finish`` chunk."""

    chunks: tuple[str, ...]
    message: str
    finish: bool
    type: Literal["message"] = attrs.field(default="message", init=False)


class _Pieces(list[str]):
    """The turn's append-only list of text pieces, with the text of its first ``text_count``
    pieces kept joined: a reader who reads ``message`` of every chunk in order pays for each
    new piece once, as when each chunk was built with its text."""

    __slots__ = ("text", "text_count")

    def __init__(self) -> None:
        super().__init__()
        self.text_count = 0
        self.text = ""

    def text_of(self, count: int) -> str:
        """The first ``count`` pieces joined."""
        if count < self.text_count:
            return "".join(self[:count])
        if count > self.text_count:
            self.text += "".join(self[self.text_count : count])
            self.text_count = count
        return self.text


class _PiecesSoFar:
    """What a chunk made by the turn holds in its ``chunks`` and ``message`` slots until they
    are read: the turn's pieces and how many of them the chunk carries. Building every chunk's
    tuple and text when it is made would cost O(n^2) over a turn (each holds all the pieces so
    far), and most readers only look at the ``message`` of the ``finish`` chunk; each is built
    (once) when read."""

    __slots__ = ("count", "source")

    def __init__(self, source: _Pieces) -> None:
        self.source = source
        self.count = len(source)


class _LazyField:
    """A ``MessageChunk`` slot whose ``_PiecesSoFar`` is turned into its value when read, so
    that users, equality, hashing, repr, pickling and ``attrs.asdict`` only ever see a tuple
    (``chunks``) or a string (``message``)."""

    def __init__(self, slot: Any, build: Callable[[_PiecesSoFar], Any]) -> None:
        self._slot = slot
        self._build = build

    def __get__(self, chunk: object, owner: type | None = None) -> Any:
        if chunk is None:
            return self._slot
        value = self._slot.__get__(chunk, owner)
        if type(value) is _PiecesSoFar:
            value = self._build(value)
            self._slot.__set__(chunk, value)
        return value

    def __set__(self, chunk: object, value: Any) -> None:
        self._slot.__set__(chunk, value)


MessageChunk.chunks = _LazyField(  # type: ignore[assignment]
    MessageChunk.__dict__["chunks"], lambda lazy: tuple(lazy.source[: lazy.count])
)
MessageChunk.message = _LazyField(  # type: ignore[assignment]
    MessageChunk.__dict__["message"], lambda lazy: lazy.source.text_of(lazy.count)
)


# The slots' own setters: the turn makes one chunk per network read, and attrs' frozen
# __init__ would go through object.__setattr__ and the lazy fields' Python __set__ for each.
_set_chunks = MessageChunk.__dict__["chunks"]._slot.__set__
_set_message = MessageChunk.__dict__["message"]._slot.__set__
_set_finish = MessageChunk.__dict__["finish"].__set__
_set_type = MessageChunk.__dict__["type"].__set__


def _message_chunk_of(pieces: _Pieces, finish: bool) -> MessageChunk:
    """A chunk carrying the first ``len(pieces)`` pieces (``pieces`` may only grow later); the
    same as ``MessageChunk(...)`` with both lazy fields."""
    lazy = _PiecesSoFar(pieces)
    chunk: MessageChunk = object.__new__(MessageChunk)
    _set_chunks(chunk, lazy)
    _set_message(chunk, lazy)
    _set_finish(chunk, finish)
    _set_type(chunk, "message")
    return chunk


@attrs.frozen
class ToolCallChunk:
    """The LLM asked for tools (``tool_calls`` as sent: ``id``, ``function.name``,
    ``function.arguments`` as a JSON string); they are run for you."""

    tool_calls: list[dict[str, Any]]
    type: Literal["tool_call"] = attrs.field(default="tool_call", init=False)


@attrs.frozen
class ToolResultChunk:
    """A client tool finished; ``result`` is what it returned (``{"error": ...}`` if it
    raised)."""

    tool_call_id: str
    result: Any
    type: Literal["tool_result"] = attrs.field(default="tool_result", init=False)


@attrs.frozen
class ErrorChunk:
    """The turn failed; ``error`` is an :class:`~perso_sync.errors.LLMError` whose
    ``underlying_error`` says why. It is the last chunk of the turn."""

    error: LLMError
    type: Literal["error"] = attrs.field(default="error", init=False)


LlmChunk = MessageChunk | ToolCallChunk | ToolResultChunk | ErrorChunk
"""One item of an LLM turn's stream; its ``type`` field tells which of the four it is."""


# -- decisions -----------------------------------------------------------------------------


@attrs.frozen
class ToolRun:
    """Run client tool ``name`` for call ``call_id`` with the decoded ``arguments``; when the
    arguments could not be decoded, ``arguments_error`` says why and the tool is not called
    (its result is an error result, as for a raising tool)."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    arguments_error: str | None = None


@attrs.frozen
class RunTools:
    """Run these client tools concurrently, then call :meth:`LlmTurn.on_tool_results`."""

    runs: tuple[ToolRun, ...]


@attrs.frozen
class FollowUp:
    """Send another request: :meth:`LlmTurn.request_body` gives its body."""


@attrs.frozen
class Done:
    """The turn succeeded (its ``finish`` chunk was produced): append ``history`` to the
    history the turn used; ``text`` is the assistant's last message of the turn."""

    history: list[dict[str, Any]]
    text: str


@attrs.frozen
class Failed:
    """The turn failed (an ``ErrorChunk`` was produced); history is left unchanged."""

    error: LLMError


Decision = RunTools | FollowUp | Done | Failed


@attrs.define
class TurnStep:
    """What one input produced: chunks to yield in order, the text deltas (emoji removed) and
    the assistant messages completed (for avatar speech and chat log), and a decision when the
    turn needs the caller to act."""

    chunks: list[LlmChunk] = attrs.field(factory=list)
    deltas: list[str] = attrs.field(factory=list)
    messages: list[str] = attrs.field(factory=list)
    decision: Decision | None = None


def _loop_error(description: str) -> LLMError:
    return LLMError(LLMStreamingResponseError(description))


# -- tool results as JavaScript's JSON.stringify writes them --------------------------------

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def js_stringify(value: Any) -> str | None:
    """``value`` as JSON text the way JavaScript's ``JSON.stringify`` writes it (the official
    client sends tool results so): no spaces after ``,`` and ``:``, non-ASCII characters as is,
    numbers as JavaScript prints them (``1.0`` → ``1``, ``1e21`` → ``1e+21``, ``NaN`` and the
    infinities → ``null``), lone surrogates escaped (``\\ud800``). Dict keys that are ``int``,
    ``float``, ``bool`` or ``None`` become strings (JavaScript keys always are).

    Returns None when ``value`` holds something JSON cannot express (a set, an arbitrary object,
    a non-string key of another type) or is nested too deeply: the caller then reports an error
    result (``JSON.stringify`` would silently drop such values). Integers are written exactly,
    where JavaScript would round those beyond 2**53.
    """
    parts: list[str] = []
    try:
        _stringify_into(value, parts)
    except (TypeError, RecursionError):
        return None
    return "".join(parts)


def _js_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    if _LONE_SURROGATE.search(encoded) is None:
        return encoded
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", encoded)


def js_number(number: float) -> str:
    """A float as JavaScript's ``Number.prototype.toString`` prints it (``null`` for NaN and
    the infinities, as ``JSON.stringify`` writes them)."""
    if math.isnan(number) or math.isinf(number):
        return "null"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    # repr() gives the shortest digits that round-trip, as JavaScript does; only the layout
    # differs (JavaScript uses plain notation for exponents from -7 to 20).
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    significant = all_digits.lstrip("0")
    # the value is 0.<significant> x 10**point
    point = len(whole) + (int(exponent) if exponent else 0) - (len(all_digits) - len(significant))
    digits = significant.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    power = point - 1
    exponent_text = f"+{power}" if power >= 0 else str(power)
    if count == 1:
        return f"{sign}{digits}e{exponent_text}"
    return f"{sign}{digits[0]}.{digits[1:]}e{exponent_text}"


def _js_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return js_number(key)
    raise TypeError(f"a {type(key).__name__} dict key")


def _stringify_into(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(_js_string(value))
    elif value is None or isinstance(value, bool):
        parts.append(json.dumps(value))
    elif isinstance(value, int):
        parts.append(str(int(value)))
    elif isinstance(value, float):
        parts.append(js_number(value))
    elif isinstance(value, dict):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                parts.append(",")
            parts.append(_js_string(_js_key(key)))
            parts.append(":")
            _stringify_into(item, parts)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _stringify_into(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"a {type(value).__name__} is not JSON")


class LlmTurn:
    """The bookkeeping of one turn. ``tools`` maps each client tool name to its
    ``execute_only`` flag; tool calls are matched to client tools by name.

    Text pieces accumulate over the whole turn (every round): each ``message`` chunk carries
    all of them so far with ``finish=False``, and the turn's one ``finish=True`` chunk comes
    last, when it succeeds (even with no text) or is aborted after some text arrived.
    """

    def __init__(
        self, message: str, tools: Mapping[str, bool], *, max_rounds: int = MAX_ROUNDS
    ) -> None:
        self._tools = dict(tools)
        self._max_rounds = max_rounds
        self.history: list[dict[str, Any]] = [{"role": "user", "content": message}]
        self.rounds = 0
        self._pieces = _Pieces()  # every text piece of the turn (emoji removed)
        self._yielded = 0  # how many of them the last message chunk carried
        # The pieces of the current assistant message, not yet in history (joined once, when
        # committed: adding each to a string would copy it all every time).
        self._contents: list[str] = []
        self._last_text = ""
        self._calls: list[dict[str, Any]] = []  # tool calls requested in this round
        self._runs: tuple[ToolRun, ...] = ()
        self.finished = False

    # -- requests ----------------------------------------------------------------------------

    def request_body(
        self, prior_history: Sequence[Mapping[str, Any]], tool_schemas: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """The JSON body of the next request (counts a round)."""
        if self.finished:
            raise RuntimeError("request_body() after the turn finished")
        self.rounds += 1
        self._calls = []
        self._contents = []
        return {
            "messages": [*prior_history, *self.history],
            "tools": list(tool_schemas),
        }

    # -- stream events -----------------------------------------------------------------------

    def on_events(self, events: Sequence[LlmEvent]) -> TurnStep:
        """Events that arrived together (one network read): their deltas are batched into one
        ``message`` chunk, flushed before each non-message event and at the end of the batch."""
        if len(events) == 1 and type(events[0]) is TextDelta and not self.finished:
            # The usual read: one text delta. The same as the loop below, without its branches.
            text = remove_emoji(events[0].text)
            pieces = self._pieces
            pieces.append(text)
            if text:
                self._contents.append(text)
            self._yielded = len(pieces)
            return TurnStep([_message_chunk_of(pieces, False)], [text])
        step = TurnStep()
        if self.finished:
            return step
        for event in events:
            if isinstance(event, TextDelta):
                text = remove_emoji(event.text)
                self._pieces.append(text)
                if text:
                    self._contents.append(text)
                step.deltas.append(text)
                continue
            if isinstance(event, StreamFailed):
                self._fail(step, LLMError(LLMStreamingResponseError(event.description)))
                return step
            # Any other event ends the assistant message so far (as the official client does).
            if self._contents:
                self._commit_text(step)
                self._flush(step)
            if isinstance(event, ToolCalls):
                try:
                    # Copies: the user's chunk and our history must not share nested dicts.
                    calls = copy.deepcopy(list(event.tool_calls))
                    chunk_calls = copy.deepcopy(calls)
                except RecursionError:
                    self._fail(step, _loop_error("tool call nested too deeply to handle"))
                    return step
                self.history.append(
                    {
                        "role": "assistant",
                        "type": "tool_call",
                        "content": event.content,
                        "tool_calls": calls,
                    }
                )
                self._calls.extend(calls)
                step.chunks.append(ToolCallChunk(chunk_calls))
            elif isinstance(event, RemoteToolResult):
                self.history.append(
                    {
                        "role": "tool",
                        "type": event.type,
                        "content": event.content,
                        "tool_call_id": event.tool_call_id,
                    }
                )
            else:
                assert isinstance(event, Unknown)  # ignored, apart from ending the message
        self._flush(step)
        return step

    def on_stream_end(self, events: Sequence[LlmEvent] = ()) -> TurnStep:
        """The response ended (pass the parser's ``close()`` events): commit the text, then
        decide: run tools, follow up, or done."""
        step = self.on_events(events)
        if self.finished:
            return step
        if self._contents:
            self._commit_text(step)
        runs = []
        for call in self._calls:
            function = call.get("function") or {}
            name = function.get("name")
            if name in self._tools:
                runs.append(self._tool_run(str(call.get("id")), name, function.get("arguments")))
        self._runs = tuple(runs)
        if runs:
            step.decision = RunTools(self._runs)
        else:
            # No tool call, or none for a client tool (remote MCP tools only, their results
            # already in the stream): the turn is over, no follow-up request.
            self._succeed(step)
        return step

    def on_tool_results(self, results: Mapping[str, Any]) -> TurnStep:
        """Results of the :class:`RunTools` decision, by call id (all of them)."""
        step = TurnStep()
        if self.finished:
            return step
        for run in self._runs:
            result = results[run.call_id]
            content = js_stringify(result)
            if content is None:
                result = {"error": f"the result of tool {run.name!r} is not JSON-serialisable"}
                content = js_stringify(result)
            self.history.append({"role": "tool", "content": content, "tool_call_id": run.call_id})
            step.chunks.append(ToolResultChunk(run.call_id, result))
        # Follow up when client tools ran next to calls with no client tool (remote MCP tools
        # mixed in) or when any tool that ran wants the LLM to answer (not execute_only).
        mixed = bool(self._runs) and len(self._calls) != len(self._runs)
        need_follow_up = mixed or any(not self._tools[run.name] for run in self._runs)
        self._runs = ()
        self._follow_up_or_done(step, need_follow_up=need_follow_up)
        return step

    def on_abort(self) -> TurnStep:
        """Cancelled: one final ``message`` chunk with the turn's text (if any); no history."""
        step = TurnStep()
        if self.finished:
            return step
        self.finished = True
        if self._pieces:
            step.chunks.append(self._message_chunk(finish=True))
        return step

    def on_error(self, error: LLMError) -> TurnStep:
        """The request or the transport failed: an error chunk; no history."""
        step = TurnStep()
        if not self.finished:
            self._fail(step, error)
        return step

    # -- internals ---------------------------------------------------------------------------

    def _tool_run(self, call_id: str, name: str, raw_arguments: Any) -> ToolRun:
        if raw_arguments is None or raw_arguments == "":
            return ToolRun(call_id, name, {})
        if isinstance(raw_arguments, dict):  # lenient: already decoded by the server
            return ToolRun(call_id, name, dict(raw_arguments))
        try:
            decoded = json.loads(raw_arguments)
        except (TypeError, ValueError, RecursionError) as exc:  # absurdly deep nesting too
            return ToolRun(call_id, name, {}, f"invalid tool arguments (not JSON): {exc}")
        if not isinstance(decoded, dict):
            return ToolRun(call_id, name, {}, f"invalid tool arguments: a {type(decoded).__name__}")
        return ToolRun(call_id, name, decoded)

    def _message_chunk(self, *, finish: bool) -> MessageChunk:
        self._yielded = len(self._pieces)
        return _message_chunk_of(self._pieces, finish)

    def _flush(self, step: TurnStep) -> None:
        if len(self._pieces) > self._yielded:
            step.chunks.append(self._message_chunk(finish=False))

    def _commit_text(self, step: TurnStep) -> None:
        text = "".join(self._contents)
        self._contents = []
        self._last_text = text
        self.history.append({"role": "assistant", "type": "message", "content": text})
        step.messages.append(text)

    def _follow_up_or_done(self, step: TurnStep, *, need_follow_up: bool) -> None:
        if not need_follow_up:
            self._succeed(step)
        elif self.rounds >= self._max_rounds:
            self._fail(
                step,
                _loop_error(f"Tool follow-up loop exceeded maximum rounds ({self._max_rounds})"),
            )
        else:
            step.decision = FollowUp()

    def _succeed(self, step: TurnStep) -> None:
        try:
            history = copy.deepcopy(self.history)
        except RecursionError:
            self._fail(step, _loop_error("the turn's history is nested too deeply to keep"))
            return
        self.finished = True
        step.chunks.append(self._message_chunk(finish=True))
        step.decision = Done(history, self._last_text)

    def _fail(self, step: TurnStep, error: LLMError) -> None:
        self.finished = True
        step.chunks.append(ErrorChunk(error))
        step.decision = Failed(error)
