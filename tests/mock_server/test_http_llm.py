"""The scripted assistant behind llm/v2: both framings, tools, MCP, follow-ups, failures."""

from __future__ import annotations

import json

import pytest
from _http_helpers import create, first_error, llm, reply_text, sse_events, tool

from mock_server import LlmScript, MockPersoServer, Rule, ToolCall

DONE = {"status": "success", "type": "done", "content": ""}


@pytest.fixture
def session_id(perso_mock: MockPersoServer) -> str:
    return str(create(perso_mock, mcp_servers=["mcp-docs-search"]).json()["session_id"])


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_default_reply_in_several_deltas_on_platform_framing(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    response = llm(perso_mock, session_id, [user("Hello there")])
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    raw = response.content
    assert b"\r" not in raw
    assert b"\n\n" not in raw
    assert raw.endswith(b"\n")
    events = sse_events(raw)
    deltas = [e for e in events if e["type"] == "message"]
    assert len(deltas) >= 3
    assert all(e["status"] == "success" for e in events)
    assert "You said: Hello there" in reply_text(events)
    assert events[-1] == DONE


def test_standard_sse_framing_is_selectable(perso_mock: MockPersoServer, session_id: str) -> None:
    perso_mock.catalog.settings["llm_framing"] = "sse"
    raw = llm(perso_mock, session_id, [user("Hello")]).content
    assert b"\r\n\r\n" in raw
    assert any(line.startswith(b":") for line in raw.split(b"\r\n"))
    events = sse_events(raw)
    assert events[-1] == DONE
    assert "You said: Hello" in reply_text(events)


def test_the_same_reply_for_the_same_request(perso_mock: MockPersoServer, session_id: str) -> None:
    first = sse_events(llm(perso_mock, session_id, [user("Same")]).content)
    assert sse_events(llm(perso_mock, session_id, [user("Same")]).content) == first


def test_client_tool_call_then_follow_up_after_the_result(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    events = sse_events(
        llm(
            perso_mock, session_id, [user("What is the weather in Busan?")], [tool("get_weather")]
        ).content
    )
    assert [e["type"] for e in events] == ["tool_call", "done"]
    (call,) = events[0]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "Busan"}
    history = [
        user("What is the weather in Busan?"),
        {"role": "assistant", "type": "tool_call", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"temp": 21}', "tool_call_id": call["id"]},
    ]
    follow_up = sse_events(llm(perso_mock, session_id, history, [tool("get_weather")]).content)
    assert follow_up[-1] == DONE
    assert reply_text(follow_up) == 'Here is the weather report: {"temp": 21}'


def test_tool_not_offered_by_the_client_gets_a_plain_answer(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    events = sse_events(llm(perso_mock, session_id, [user("weather?")]).content)
    assert [e["type"] for e in events if e["type"] != "message"] == ["done"]
    assert "You said" in reply_text(events)


def test_generic_call_tool_rule_and_unique_ids(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    message = [user('call tool add with {"a": 1, "b": 2}')]
    first = sse_events(llm(perso_mock, session_id, message, [tool("add")]).content)
    second = sse_events(llm(perso_mock, session_id, message, [tool("add")]).content)
    call = first[0]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"a": 1, "b": 2}
    assert call["id"] != second[0]["tool_calls"][0]["id"]


def test_mcp_tool_result_then_the_answer_in_the_same_stream(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    events = sse_events(llm(perso_mock, session_id, [user("search opening hours")]).content)
    assert events[0]["role"] == "tool"
    assert events[0]["type"] == "tool_call"
    assert events[0]["tool_call_id"].startswith("call_")
    assert json.loads(events[0]["content"])["results"][0]["title"] == "Opening hours"
    assert "Opening hours" in reply_text(events)
    assert events[-1] == DONE


def test_mcp_tool_needs_the_server_attached_to_the_session(perso_mock: MockPersoServer) -> None:
    plain = create(perso_mock).json()["session_id"]
    events = sse_events(llm(perso_mock, plain, [user("search opening hours")]).content)
    assert not any(e.get("role") == "tool" for e in events)


def test_mixed_client_and_mcp_tools_end_the_stream_for_a_client_follow_up(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    perso_mock.set_llm_script(
        session_id,
        LlmScript(
            rules=[
                Rule(
                    pattern="both",
                    tool_calls=[ToolCall(name="get_time"), ToolCall(name="search_docs")],
                )
            ]
        ),
    )
    events = sse_events(
        llm(perso_mock, session_id, [user("both please")], [tool("get_time")]).content
    )
    assert [e["type"] for e in events] == ["tool_call", "tool_call", "done"]
    names = [c["function"]["name"] for c in events[0]["tool_calls"]]
    assert names == ["get_time", "search_docs"]
    assert events[1]["role"] == "tool"
    assert events[1]["tool_call_id"] == events[0]["tool_calls"][1]["id"]


def test_fail_event(perso_mock: MockPersoServer, session_id: str) -> None:
    events = sse_events(llm(perso_mock, session_id, [user("please fail now")]).content)
    assert {"status": "fail", "reason": "The mock LLM was asked to fail."} in events
    assert events[-1] == DONE


def test_script_per_session_with_raw_events_and_times(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    other = create(perso_mock).json()["session_id"]
    raw = [{"status": "success", "type": "message", "content": "Hi 😀"}]
    perso_mock.sessions[session_id].llm_script = LlmScript(
        rules=[Rule(pattern=".*", events=raw, times=1)], default_reply="second", delay=0
    )
    assert sse_events(llm(perso_mock, session_id, [user("x")]).content) == [*raw, DONE]
    assert reply_text(sse_events(llm(perso_mock, session_id, [user("x")]).content)) == "second"
    assert "You said" in reply_text(sse_events(llm(perso_mock, other, [user("x")]).content))


def test_server_wide_script(perso_mock: MockPersoServer, session_id: str) -> None:
    perso_mock.llm_script = LlmScript(rules=[], default_reply="Always this: {message}")
    assert reply_text(sse_events(llm(perso_mock, session_id, [user("hey")]).content)) == (
        "Always this: hey"
    )
    perso_mock.reset()
    assert perso_mock.llm_script.default_reply != "Always this: {message}"


def test_requests_are_kept_per_session(perso_mock: MockPersoServer, session_id: str) -> None:
    llm(perso_mock, session_id, [user("one")], [tool("t")])
    (body,) = perso_mock.sessions[session_id].llm_requests
    assert body["messages"] == [user("one")]
    assert body["tools"] == [tool("t")]


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": "hi"}])
def test_bad_llm_body_is_400(perso_mock: MockPersoServer, session_id: str, body: object) -> None:
    from _http_helpers import post

    response = post(perso_mock, f"/api/v1/session/{session_id}/llm/v2/", json=body)
    assert response.status_code == 400
    assert first_error(response)["attr"] == "messages"


def _function(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "f", "description": "the f tool", "parameters": {}}
    return {"type": "function", "function": {**base, **fields}}


BAD_TOOLS = {
    "not an object": "get_weather",
    "wrong type": {"type": "retrieval", "function": _function()["function"]},
    "no function": {"type": "function"},
    "extra field": {**_function(), "strict": True},
    "renamed description": {
        "type": "function",
        "function": {"name": "f", "desc": "the f tool", "parameters": {}},
    },
    "no description": {"type": "function", "function": {"name": "f", "parameters": {}}},
    "empty name": _function(name=""),
    "name not a string": _function(name=7),
    "description not a string": _function(description=None),
    "parameters not a schema": _function(parameters="{}"),
    "no parameters": {"type": "function", "function": {"name": "f", "description": "d"}},
}


@pytest.mark.parametrize("bad", list(BAD_TOOLS.values()), ids=list(BAD_TOOLS))
def test_each_tool_definition_is_validated_as_the_platform_does(
    perso_mock: MockPersoServer, session_id: str, bad: object
) -> None:
    response = llm(perso_mock, session_id, [user("hi")], [tool("ok"), bad])
    assert response.status_code == 400
    error = first_error(response)
    assert response.json()["type"] == "validation_error"
    assert error["attr"] == "tools"
    assert error["detail"].startswith("tools[1]")
    assert perso_mock.sessions[session_id].llm_requests == []  # refused, not answered


def test_a_full_tool_definition_is_accepted(perso_mock: MockPersoServer, session_id: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = llm(perso_mock, session_id, [user("hi")], [_function(parameters=schema)])
    assert response.status_code == 200


def test_follow_up_events_answer_the_follow_up_verbatim(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    call = {"status": "success", "type": "tool_call", "content": "", "tool_calls": []}
    after = [{"status": "success", "type": "message", "content": "After the tool."}]
    perso_mock.set_llm_script(
        session_id, LlmScript(rules=[Rule(pattern="", events=[call], follow_up_events=after)])
    )
    first = sse_events(llm(perso_mock, session_id, [user("go")]).content)
    assert first == [call, DONE]
    tool_result = {"role": "tool", "content": "{}", "tool_call_id": "c1"}
    assert sse_events(llm(perso_mock, session_id, [user("go"), tool_result]).content) == after


def test_a_stream_the_client_leaves_early_is_journaled_as_499(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    import socket

    perso_mock.set_llm_script(
        session_id, LlmScript(rules=[], default_reply="word " * 200, delay=0.01, words_per_delta=1)
    )
    body = json.dumps({"messages": [user("long")], "tools": []}).encode()
    request = (
        f"POST /api/v1/session/{session_id}/llm/v2/ HTTP/1.1\r\nHost: mock\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert perso_mock.port is not None
    with socket.create_connection(("127.0.0.1", perso_mock.port), timeout=5) as sock:
        sock.sendall(request + body)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
    entry = perso_mock.journal.wait_for(lambda e: e.status is not None, endpoint="llm")
    assert entry.status == 499
