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
from collections.abc import Mapping, Sequence
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
]

MAX_ROUNDS = 10


# -- public chunks (what process_llm yields) -----------------------------------------------


@attrs.frozen
class MessageChunk:
    """Streaming text. ``chunks``: every piece of this message so far (emoji removed);
    ``message``: their concatenation; ``finish``: True on the last chunk of the message."""

    chunks: tuple[str, ...]
    message: str
    finish: bool
    type: Literal["message"] = attrs.field(default="message", init=False)


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
    """The turn succeeded: append ``history`` to the processor's history; ``text`` is the
    assistant's last message."""

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


class LlmTurn:
    """The bookkeeping of one turn. ``tools`` maps each client tool name to its
    ``execute_only`` flag; tool calls are matched to client tools by name."""

    def __init__(
        self, message: str, tools: Mapping[str, bool], *, max_rounds: int = MAX_ROUNDS
    ) -> None:
        self._tools = dict(tools)
        self._max_rounds = max_rounds
        self.history: list[dict[str, Any]] = [{"role": "user", "content": message}]
        self.rounds = 0
        self._pieces: list[str] = []
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
        return {
            "messages": [*prior_history, *self.history],
            "tools": list(tool_schemas),
        }

    # -- stream events -----------------------------------------------------------------------

    def on_events(self, events: Sequence[LlmEvent]) -> TurnStep:
        """Events that arrived together (one network read): deltas are batched into at most one
        ``message`` chunk per run of consecutive deltas."""
        step = TurnStep()
        if self.finished:
            return step
        pending_delta = False
        for event in events:
            if isinstance(event, TextDelta):
                text = remove_emoji(event.text)
                if text:
                    self._pieces.append(text)
                    step.deltas.append(text)
                    pending_delta = True
                continue
            if isinstance(event, StreamFailed):
                self._fail(step, LLMError(LLMStreamingResponseError(event.description)))
                return step
            # Any other event ends the message so far; the batch's deltas ride on its chunk.
            self._commit_text(step)
            pending_delta = False
            if isinstance(event, ToolCalls):
                # Copies: the user's chunk and our history must not share nested dicts.
                calls = copy.deepcopy(list(event.tool_calls))
                self.history.append(
                    {
                        "role": "assistant",
                        "type": "tool_call",
                        "content": event.content,
                        "tool_calls": calls,
                    }
                )
                self._calls.extend(calls)
                step.chunks.append(ToolCallChunk(copy.deepcopy(calls)))
            elif isinstance(event, RemoteToolResult):
                self.history.append(
                    {"role": "tool", "content": event.content, "tool_call_id": event.tool_call_id}
                )
            else:
                assert isinstance(event, Unknown)  # ignored, apart from ending the message
        if pending_delta:
            pieces = tuple(self._pieces)
            step.chunks.append(MessageChunk(pieces, "".join(pieces), False))
        return step

    def on_stream_end(self, events: Sequence[LlmEvent] = ()) -> TurnStep:
        """The response ended (pass the parser's ``close()`` events): commit the text, then
        decide: run tools, follow up, or done."""
        step = self.on_events(events)
        if self.finished:
            return step
        self._commit_text(step)
        if not self._calls:
            self._succeed(step)
            return step
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
            self._follow_up_or_done(step, need_follow_up=True)
        return step

    def on_tool_results(self, results: Mapping[str, Any]) -> TurnStep:
        """Results of the :class:`RunTools` decision, by call id (all of them)."""
        step = TurnStep()
        if self.finished:
            return step
        for run in self._runs:
            result = results[run.call_id]
            try:
                content = json.dumps(result, ensure_ascii=False)
            except (TypeError, ValueError, RecursionError) as exc:
                result = {"error": f"the result of tool {run.name!r} is not JSON: {exc}"}
                content = json.dumps(result, ensure_ascii=False)
            self.history.append({"role": "tool", "content": content, "tool_call_id": run.call_id})
            step.chunks.append(ToolResultChunk(run.call_id, result))
        unmatched = len(self._calls) > len(self._runs)
        need_follow_up = unmatched or any(not self._tools[run.name] for run in self._runs)
        self._runs = ()
        self._follow_up_or_done(step, need_follow_up=need_follow_up)
        return step

    def on_abort(self) -> TurnStep:
        """Cancelled: one final ``message`` chunk with the text received (if any); no history."""
        step = TurnStep()
        if self.finished:
            return step
        self.finished = True
        if self._pieces:
            pieces = tuple(self._pieces)
            step.chunks.append(MessageChunk(pieces, "".join(pieces), True))
            self._pieces = []
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

    def _commit_text(self, step: TurnStep) -> None:
        if not self._pieces:
            return
        pieces = tuple(self._pieces)
        text = "".join(pieces)
        self._pieces = []
        self._last_text = text
        self.history.append({"role": "assistant", "type": "message", "content": text})
        step.chunks.append(MessageChunk(pieces, text, True))
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
        self.finished = True
        step.decision = Done(copy.deepcopy(self.history), self._last_text)

    def _fail(self, step: TurnStep, error: LLMError) -> None:
        self.finished = True
        self._pieces = []
        step.chunks.append(ErrorChunk(error))
        step.decision = Failed(error)
