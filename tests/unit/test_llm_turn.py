"""LlmTurn: docs/PROTOCOL.md §6 rule by rule, with scripted events and tool outcomes (no I/O)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perso_sync._emoji import remove_emoji
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
    js_number,
    js_stringify,
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


def test_each_message_chunk_keeps_only_the_pieces_of_its_time_when_read_later() -> None:
    # Chunks share the turn's growing list of pieces until their ``chunks`` is first read: one
    # read after the turn went on must still see the pieces of its own time, as a tuple that
    # compares, hashes, pickles and converts like one made by hand.
    import pickle

    import attrs

    turn = LlmTurn("Hi", {})
    turn.request_body([], [])
    made = [turn.on_events([TextDelta(text)]).chunks[0] for text in ("a", "b", "c")]
    made += turn.on_stream_end().chunks
    expected = [
        MessageChunk(("a",), "a", False),
        MessageChunk(("a", "b"), "ab", False),
        MessageChunk(("a", "b", "c"), "abc", False),
        MessageChunk(("a", "b", "c"), "abc", True),
    ]
    assert [hash(chunk) for chunk in made] == [hash(chunk) for chunk in expected]
    assert made == expected
    assert all(type(chunk.chunks) is tuple for chunk in made)
    late = LlmTurn("Hi", {})
    late.request_body([], [])
    first = late.on_events([TextDelta("x")]).chunks[0]
    late.on_events([TextDelta("y")])
    assert pickle.loads(pickle.dumps(first)) == MessageChunk(("x",), "x", False)
    second = late.on_events([TextDelta("z")]).chunks[0]
    assert attrs.asdict(second) == {
        "chunks": ("x", "y", "z"),
        "message": "xyz",
        "finish": False,
        "type": "message",
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
    assert end.chunks == []  # ... but finish comes only with the end of the turn
    assert end.messages == ["Hello!"]
    final = turn.on_stream_end()
    assert final.chunks == [MessageChunk(("Hel", "lo", "!"), "Hello!", True)]
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


def test_a_turn_without_text_still_ends_with_one_empty_finish_chunk() -> None:
    turn = LlmTurn("Hi", {})
    turn.request_body([], [])
    assert turn.on_events([Unknown("done")]).chunks == []
    step = turn.on_stream_end()
    assert step.chunks == [MessageChunk((), "", True)]
    assert step.decision == Done([{"role": "user", "content": "Hi"}], "")


def test_emoji_are_removed_from_deltas_and_emoji_only_deltas_stay_as_empty_pieces() -> None:
    # As the official client: every message event adds one (filtered) piece, even an empty one.
    turn = LlmTurn("Hi", {})
    turn.request_body([], [])
    step = turn.on_events([TextDelta("Hi 👋"), TextDelta("😀"), TextDelta(" 안녕")])
    assert step.chunks == [MessageChunk(("Hi ", "", " 안녕"), "Hi  안녕", False)]


def test_text_accumulates_over_the_whole_turn_across_a_tool_round() -> None:
    turn = LlmTurn("weather?", {"get_weather": False})
    turn.request_body([], [])
    weather = call("c1", "get_weather", json.dumps({"location": "Seoul"}))
    step = turn.on_events([TextDelta("Checking"), ToolCalls("", (weather,)), Unknown("done")])
    # the batch's text is flushed before the tool call, and is not final
    assert step.chunks == [
        MessageChunk(("Checking",), "Checking", False),
        ToolCallChunk([weather]),
    ]
    assert step.messages == ["Checking"]
    step = turn.on_stream_end()
    assert step.chunks == []
    assert step.decision == RunTools((ToolRun("c1", "get_weather", {"location": "Seoul"}),))
    step = turn.on_tool_results({"c1": {"temp": "30℃", "ok": 1.0}})
    assert step.chunks == [ToolResultChunk("c1", {"temp": "30℃", "ok": 1.0})]
    assert step.decision == FollowUp()
    body = turn.request_body([], [])
    # JSON.stringify text: no spaces, non-ASCII as is, 1.0 printed as 1
    assert body["messages"][-1] == {
        "role": "tool",
        "content": '{"temp":"30℃","ok":1}',
        "tool_call_id": "c1",
    }
    assert body["messages"][-2]["tool_calls"] == [weather]
    step = turn.on_events([TextDelta(" Sunny")])
    assert step.chunks == [MessageChunk(("Checking", " Sunny"), "Checking Sunny", False)]
    step = turn.on_stream_end()
    assert step.chunks == [MessageChunk(("Checking", " Sunny"), "Checking Sunny", True)]
    assert isinstance(step.decision, Done)
    assert step.decision.text == " Sunny"
    assert [m["role"] for m in step.decision.history] == [
        "user",
        "assistant",
        "assistant",
        "tool",
        "assistant",
    ]


def test_execute_only_tools_end_the_turn_with_the_finish_chunk() -> None:
    turn = LlmTurn("lights off", {"lights": True})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "lights"),))])
    assert isinstance(turn.on_stream_end().decision, RunTools)
    step = turn.on_tool_results({"c1": {"ok": True}})
    assert isinstance(step.decision, Done)
    assert step.chunks == [
        ToolResultChunk("c1", {"ok": True}),
        MessageChunk((), "", True),
    ]


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
    # the server's result keeps its type as sent
    assert {
        "role": "tool",
        "type": "tool_call",
        "content": '{"hits": 3}',
        "tool_call_id": "c2",
    } in messages


def test_mcp_only_tool_calls_end_the_turn_without_a_follow_up() -> None:
    turn = LlmTurn("search", {"lights": False})
    turn.request_body([], [])
    turn.on_events(
        [
            ToolCalls("", (call("c9", "search_docs"),)),
            RemoteToolResult("c9", '{"hits": 3}'),
            TextDelta("Found 3."),
            Unknown("done"),
        ]
    )
    step = turn.on_stream_end()
    assert step.chunks == [MessageChunk(("Found 3.",), "Found 3.", True)]
    assert isinstance(step.decision, Done)
    assert step.decision.history[1:] == [
        {
            "role": "assistant",
            "type": "tool_call",
            "content": "",
            "tool_calls": [call("c9", "search_docs")],
        },
        {"role": "tool", "type": "tool_call", "content": '{"hits": 3}', "tool_call_id": "c9"},
        {"role": "assistant", "type": "message", "content": "Found 3."},
    ]


def test_unknown_tool_names_run_nothing_and_end_the_turn() -> None:
    turn = LlmTurn("x", {"known": False})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "nobody"),))])
    step = turn.on_stream_end()
    assert isinstance(step.decision, Done)
    assert step.chunks == [MessageChunk((), "", True)]


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
    step = turn.on_tool_results({"c1": {"tags": {"a", "b"}}})
    chunk = step.chunks[0]
    assert isinstance(chunk, ToolResultChunk)
    assert "not JSON" in chunk.result["error"]
    assert isinstance(step.decision, Done)
    tool_entry = step.decision.history[-1]
    assert json.loads(tool_entry["content"]) == chunk.result


# What JavaScript's JSON.stringify writes for these values (checked with Node).
JS_STRINGIFY_CASES = [
    (1.0, "1"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (1.5e-7, "1.5e-7"),
    (1e-7, "1e-7"),
    (0.000001, "0.000001"),
    (0.001, "0.001"),
    (123.456, "123.456"),
    (-0.0, "0"),
    (-2.5, "-2.5"),
    (float("nan"), "null"),
    (float("inf"), "null"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (123e-20, "1.23e-18"),
    ({"a": [1, 2.5, "é", None, True]}, '{"a":[1,2.5,"é",null,true]}'),
    ("\ud800x", '"\\ud800x"'),
    ('\x1f\u2028"\\', '"\\u001f\u2028\\"\\\\"'),
    ({1: 2, None: 3}, '{"1":2,"null":3}'),
    ((1, "two"), '[1,"two"]'),
]


@pytest.mark.parametrize(("value", "expected"), JS_STRINGIFY_CASES)
def test_tool_results_are_written_as_json_stringify_does(value: Any, expected: str) -> None:
    assert js_stringify(value) == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_numbers_read_back_as_the_same_float(number: float) -> None:
    assert float(js_number(number)) == number


def test_values_json_cannot_express_give_none() -> None:
    assert js_stringify({1, 2}) is None
    assert js_stringify({"f": object()}) is None
    assert js_stringify({(1, 2): "tuple key"}) is None


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
    assert not any(isinstance(c, MessageChunk) and c.finish for c in step.chunks)


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


def test_abort_yields_one_final_chunk_with_the_whole_turns_text() -> None:
    turn = LlmTurn("x", {"f": False})
    turn.request_body([], [])
    turn.on_events([TextDelta("Hel"), ToolCalls("", (call("c1", "f"),))])
    turn.on_stream_end()
    turn.on_tool_results({"c1": 1})
    turn.request_body([], [])
    turn.on_events([TextDelta("lo")])
    step = turn.on_abort()
    assert step.chunks == [MessageChunk(("Hel", "lo"), "Hello", True)]
    assert step.decision is None
    assert turn.on_abort().chunks == []


def test_abort_with_nothing_received_yields_nothing() -> None:
    turn = LlmTurn("x", {})
    turn.request_body([], [])
    assert turn.on_abort().chunks == []


def test_tool_calls_nested_too_deeply_to_copy_are_an_error_chunk() -> None:
    nested: Any = "leaf"
    for _ in range(5_000):
        nested = {"n": nested}
    deep_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": nested}}
    turn = LlmTurn("x", {"f": False})
    turn.request_body([], [])
    step = turn.on_events([ToolCalls("", (deep_call,))])
    (chunk,) = step.chunks
    assert isinstance(chunk, ErrorChunk)
    assert "nested too deeply" in str(chunk.error.underlying_error)
    assert isinstance(step.decision, Failed)


# One round of a scripted turn: text deltas, then a tool call (another round follows) or not.
_rounds = st.lists(
    st.tuples(st.lists(st.text(max_size=6), max_size=8), st.booleans()), min_size=1, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(rounds=_rounds, batches=st.lists(st.integers(1, 4), max_size=40))
def test_any_batching_and_rounds_give_one_finish_chunk_with_the_whole_text(
    rounds: list[tuple[list[str], bool]], batches: list[int]
) -> None:
    turn = LlmTurn("x", {"f": False})
    chunks: list[Any] = []
    sizes = iter(batches)
    all_text = ""
    for number, (deltas, tool_call) in enumerate(rounds):
        turn.request_body([], [])
        events: list[Any] = [TextDelta(d) for d in deltas]
        if tool_call and number < len(rounds) - 1:
            events.append(ToolCalls("", (call(f"c{number}", "f"),)))
        all_text += "".join(remove_emoji(d) for d in deltas)
        i = 0
        while i < len(events):
            size = next(sizes, 1)
            step = turn.on_events(events[i : i + size])
            assert len([c for c in step.chunks if isinstance(c, MessageChunk)]) <= 2
            chunks.extend(step.chunks)
            i += size
        step = turn.on_stream_end()
        chunks.extend(step.chunks)
        if isinstance(step.decision, RunTools):
            step = turn.on_tool_results({run.call_id: {} for run in step.decision.runs})
            chunks.extend(step.chunks)
            assert step.decision == FollowUp()
            continue
        assert isinstance(step.decision, Done)
        break
    messages = [c for c in chunks if isinstance(c, MessageChunk)]
    assert [c.finish for c in messages].count(True) == 1
    assert chunks[-1] == messages[-1]
    assert messages[-1].finish
    assert messages[-1].message == all_text
    for earlier, later in itertools.pairwise(messages):
        assert later.chunks[: len(earlier.chunks)] == earlier.chunks
        assert earlier.message == "".join(earlier.chunks)


def test_absurdly_deep_tool_arguments_are_an_error_run_not_a_crash() -> None:
    turn = LlmTurn("x", {"f": False})
    turn.request_body([], [])
    turn.on_events([ToolCalls("", (call("c1", "f", "[" * 50_000),))])
    decision = turn.on_stream_end().decision
    assert isinstance(decision, RunTools)
    (run,) = decision.runs
    assert run.arguments_error is not None
    assert "not JSON" in run.arguments_error
