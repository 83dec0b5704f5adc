"""Hostile LLM events (issue 16 rows 5 and 6): tool-call arguments nested hundreds of levels
deep, and an unknown event type whose content is not text. The turn ends in an ``ErrorChunk``
naming the problem, or ignores what it need not understand; never a raw exception."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import perso_sync
from mock_server import LlmScript, MockPersoServer, Rule

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def session_id(perso_mock: MockPersoServer, no_leaks: Any) -> str:
    return perso_mock.create_session_id()


@pytest.fixture
def processor(perso_mock: MockPersoServer, session_id: str) -> Iterator[perso_sync.LlmProcessor]:
    echo = perso_sync.ChatTool(
        name="echo",
        description="Returns its arguments",
        parameters={"type": "object", "properties": {}},
        call=lambda arguments: {"ok": True},
    )
    with perso_sync.LlmProcessor(
        api_server=perso_mock.url, session_id=session_id, client_tools=[echo], timeout=5.0
    ) as made:
        yield made


def _turn(processor: perso_sync.LlmProcessor, message: str) -> list[Any]:
    with processor.process_llm(message) as stream:
        return list(stream)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize("depth", [650, 900])
def test_tool_call_arguments_nested_hundreds_deep_end_in_an_error_chunk(
    perso_mock: MockPersoServer, session_id: str, processor: Any, depth: int
) -> None:
    deep_call = {
        "status": "success",
        "type": "tool_call",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "echo", "arguments": _nested(depth)},
            }
        ],
    }
    script = LlmScript(rules=[Rule(pattern="deep", events=[deep_call])])
    perso_mock.set_llm_script(session_id, script)
    chunks = _turn(processor, "deep please")
    errors = [c for c in chunks if c.type == "error"]
    assert len(errors) == 1, chunks
    assert chunks[-1] is errors[0]
    error = errors[0].error
    assert isinstance(error, perso_sync.LLMError)
    assert isinstance(error.underlying_error, perso_sync.LLMStreamingResponseError)
    assert "nested too deeply" in str(error.underlying_error)
    assert processor.get_history() == []  # a failed turn keeps nothing
    assert _turn(processor, "hello")[-1].finish  # the processor still works


def test_an_unknown_event_whose_content_is_an_object_is_ignored(
    perso_mock: MockPersoServer, session_id: str, processor: Any
) -> None:
    events = [
        {"status": "success", "type": "message", "content": "Hello "},
        {"status": "success", "type": "usage", "content": {"prompt_tokens": 9, "total": 12}},
        {"status": "success", "type": "message", "content": "world"},
        {"status": "success", "type": "metrics", "content": [1, 2, 3]},
    ]
    perso_mock.set_llm_script(session_id, LlmScript(rules=[Rule(pattern="usage", events=events)]))
    chunks = _turn(processor, "usage report")
    assert [c.type for c in chunks if c.type != "message"] == []
    final = chunks[-1]
    assert final.finish
    assert final.message == "Hello world"
    assert [e["content"] for e in processor.get_history()] == ["usage report", "Hello ", "world"]
