"""LlmTurn: docs/PROTOCOL.md §6 rule by rule, with scripted events and tool outcomes (no I/O)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from perso_sync._llm_turn import (
    Done,
    ErrorChunk,
    Failed,
    FollowUp,
    LlmTurn,
    MessageChunk,
    RunTools,
    ToolCallChunk,
    ToolResultChunk,
    ToolRun,
)
from perso_sync._sse import RemoteToolResult, StreamFailed, TextDelta, ToolCalls, Unknown
from perso_sync.errors import LLMError, LLMStreamingResponseError


def call(call_id: str, name: str, arguments: Any = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_first_request_sends_prior_history_then_the_user_message() -> None:
    turn = LlmTurn("Hi", {})
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = turn.request_body([{"role": "user", "content": "before"}], tools)
    assert body == {
        "messages": [{"role": "user", "content": "before"}, {"role": "user", "content": "Hi"}],
        "tools": tools,
    }


def test_plain_reply_batches_deltas_that_arrived_together() -> None:
    turn = LlmTurn("Hi", {})
    turn.request_body([], [])
    first = turn.on_events([TextDelta("Hel"), TextDelta("lo")])
    assert first.chunks == [MessageChunk(("Hel", "lo"), "Hello", False)]
    assert first.deltas == ["Hel", "lo"]
    second = turn.on_events([TextDelta("!")])
    assert second.chunks == [MessageChunk(("Hel", "lo", "!"), "Hello!", False)]
    end = turn.on_events([Unknown("done")])  # a non-message event commits the text
    assert end.chunks == [MessageChunk(("Hel", "lo", "!"), "Hello!", True)]
    assert end.messages == ["Hello!"]
    final = turn.on_stream_end()
    assert final.chunks == []
    assert final.decision == Done(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "type": "message", "content": "Hello!"},
        ],
        "Hello!",
    )


def test_text_is_committed_at_stream_end_without_a_closing_event() -> None:
    turn = LlmTurn("Hi", {})
    turn.request_body([], [])
    turn.on_events([TextDelta("Hey")])
    step = turn.on_stream_end()
    assert step.chunks == [MessageChunk(("Hey",), "Hey", True)]
    assert isinstance(step.decision, Done)
    assert step.decision.history[-1] == {"role": "assistant", "type": "message", "content": "Hey"}


def test_emoji_are_removed_from_deltas_and_emoji_only_deltas_vanish() -> None:
    turn = LlmTurn("Hi", {})
    turn.request_body([], [])
    step = turn.on_events([TextDelta("Hi 👋"), TextDelta("😀"), TextDelta(" 안녕")])
    assert step.chunks == [MessageChunk(("Hi ", " 안녕"), "Hi  안녕", False)]


def test_a_client_tool_runs_with_decoded_arguments_then_a_follow_up() -> None:
    turn = LlmTurn("weather?", {"get_weather": False})
    turn.request_body([], [])
    weather = call("c1", "get_weather", json.dumps({"location": "Seoul"}))
    step = turn.on_events([TextDelta("Checking"), ToolCalls("", (weather,)), Unknown("done")])
    assert step.chunks == [
        MessageChunk(("Checking",), "Checking", True),
        ToolCallChunk([weather]),
    ]
    step = turn.on_stream_end()
    assert step.decision == RunTools((ToolRun("c1", "get_weather", {"location": "Seoul"}),))
    step = turn.on_tool_results({"c1": {"temp": "30℃"}})
    assert step.chunks == [ToolResultChunk("c1", {"temp": "30℃"})]
    assert step.decision == FollowUp()
    body = turn.request_body([], [])
    assert body["messages"][-1] == {
        "role": "tool",
        "content": '{"temp": "30℃"}',
        "tool_call_id": "c1",
    }
    assert body["messages"][-2]["tool_calls"] == [weather]
    turn.on_events([TextDelta("Sunny")])
    step = turn.on_stream_end()
    assert isinstance(step.decision, Done)
    assert step.decision.text == "Sunny"
    assert [m["role"] for m in step.decision.history] == [
        "user",
        "assistant",
        "assistant",
        "tool",
        "assistant",
    ]


def test_execute_only_tools_end_the_turn() -> None:
    turn = LlmTurn("lights off", {"lights": True})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "lights"),))])
    assert isinstance(turn.on_stream_end().decision, RunTools)
    step = turn.on_tool_results({"c1": {"ok": True}})
    assert isinstance(step.decision, Done)


def test_execute_only_mixed_with_a_normal_tool_follows_up() -> None:
    turn = LlmTurn("x", {"lights": True, "lookup": False})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "lights"), call("c2", "lookup")))])
    runs = turn.on_stream_end().decision
    assert isinstance(runs, RunTools)
    assert [r.name for r in runs.runs] == ["lights", "lookup"]
    assert turn.on_tool_results({"c1": 1, "c2": 2}).decision == FollowUp()


def test_remote_mcp_results_mixed_with_client_tools_trigger_the_follow_up() -> None:
    turn = LlmTurn("x", {"lights": True})
    turn.request_body([], [])
    step = turn.on_events(
        [
            ToolCalls("", (call("c1", "lights"), call("c2", "search_docs"))),
            RemoteToolResult("c2", '{"hits": 3}'),
        ]
    )
    assert step.chunks == [ToolCallChunk([call("c1", "lights"), call("c2", "search_docs")])]
    runs = turn.on_stream_end().decision
    assert runs == RunTools((ToolRun("c1", "lights", {}),))
    # execute_only, but c2 had no client tool: the LLM must still answer
    assert turn.on_tool_results({"c1": "done"}).decision == FollowUp()
    messages = turn.request_body([], [])["messages"]
    assert {"role": "tool", "content": '{"hits": 3}', "tool_call_id": "c2"} in messages


def test_unknown_tool_names_run_nothing_and_follow_up() -> None:
    turn = LlmTurn("x", {"known": False})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "nobody"),))])
    assert turn.on_stream_end().decision == FollowUp()


def test_bad_arguments_become_an_error_run_not_a_crash() -> None:
    turn = LlmTurn("x", {"f": False})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "f", "{not json"), call("c2", "f", "[1]")))])
    decision = turn.on_stream_end().decision
    assert isinstance(decision, RunTools)
    assert all(run.arguments_error for run in decision.runs)


def test_a_result_that_is_not_json_becomes_an_error_result() -> None:
    turn = LlmTurn("x", {"f": True})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "f"),))])
    turn.on_stream_end()
    step = turn.on_tool_results({"c1": object()})
    (chunk,) = step.chunks
    assert isinstance(chunk, ToolResultChunk)
    assert "not JSON" in chunk.result["error"]


def test_ten_rounds_at_most() -> None:
    turn = LlmTurn("loop", {"f": False})
    decision: object = None
    for round_no in range(1, 11):
        turn.request_body([], [])
        turn.on_events([ToolCalls("", (call(f"c{round_no}", "f"),))])
        assert isinstance(turn.on_stream_end().decision, RunTools)
        step = turn.on_tool_results({f"c{round_no}": {}})
        decision = step.decision
        if round_no < 10:
            assert decision == FollowUp()
    assert isinstance(decision, Failed)
    assert str(decision.error.underlying_error) == (
        "Tool follow-up loop exceeded maximum rounds (10)"
    )
    assert isinstance(step.chunks[-1], ErrorChunk)


def test_a_fail_event_ends_the_turn_with_an_error_chunk_and_no_history() -> None:
    turn = LlmTurn("x", {})
    turn.request_body([], [])
    step = turn.on_events([TextDelta("partial"), StreamFailed("quota exceeded")])
    (chunk,) = step.chunks
    assert isinstance(chunk, ErrorChunk)
    assert isinstance(chunk.error, LLMError)
    assert isinstance(chunk.error.underlying_error, LLMStreamingResponseError)
    assert chunk.error.underlying_error.description == "quota exceeded"
    assert isinstance(step.decision, Failed)
    assert turn.on_stream_end().chunks == []  # nothing after the end


def test_abort_yields_one_final_chunk_with_what_was_received() -> None:
    turn = LlmTurn("x", {})
    turn.request_body([], [])
    turn.on_events([TextDelta("Hel"), TextDelta("lo")])
    step = turn.on_abort()
    assert step.chunks == [MessageChunk(("Hel", "lo"), "Hello", True)]
    assert step.decision is None
    assert turn.on_abort().chunks == []


def test_abort_with_nothing_received_yields_nothing() -> None:
    turn = LlmTurn("x", {})
    turn.request_body([], [])
    assert turn.on_abort().chunks == []


@settings(max_examples=100, deadline=None)
@given(
    deltas=st.lists(st.text(max_size=6), max_size=12),
    batches=st.lists(st.integers(1, 4), max_size=12),
)
def test_any_batching_gives_the_same_final_message(deltas: list[str], batches: list[int]) -> None:
    turn = LlmTurn("x", {})
    turn.request_body([], [])
    events = [TextDelta(d) for d in deltas]
    last_partial: MessageChunk | None = None
    i = 0
    sizes = iter(batches)
    while i < len(events):
        size = next(sizes, 1)
        step = turn.on_events(events[i : i + size])
        assert len(step.chunks) <= 1
        for chunk in step.chunks:
            assert isinstance(chunk, MessageChunk)
            assert not chunk.finish
            last_partial = chunk
        i += size
    end = turn.on_stream_end()
    assert isinstance(end.decision, Done)
    text = end.decision.text
    if last_partial is not None:
        assert end.chunks == [MessageChunk(last_partial.chunks, text, True)]
        assert last_partial.message == text


def test_absurdly_deep_tool_arguments_are_an_error_run_not_a_crash() -> None:
    turn = LlmTurn("x", {"f": False})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "f", "[" * 50_000),))])
    decision = turn.on_stream_end().decision
    assert isinstance(decision, RunTools)
    (run,) = decision.runs
    assert run.arguments_error is not None
    assert "not JSON" in run.arguments_error
