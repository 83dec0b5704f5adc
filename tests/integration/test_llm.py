"""LLM turns through the public API against the mock server over real sockets."""

from __future__ import annotations

import gc
import http.server
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import perso_sync as perso
from mock_server import LlmScript, MockPersoServer, Rule, ToolCall
from perso_sync import (
    AbortSignal,
    ApiError,
    ChatTool,
    ErrorChunk,
    LLMError,
    LlmProcessor,
    LLMStreamingResponseError,
    MessageChunk,
    ToolCallChunk,
    ToolResultChunk,
)

Make = Callable[..., LlmProcessor]
WAIT = 5.0


def llm_requests(server: MockPersoServer) -> list[Any]:
    return server.journal.requests(endpoint="llm")


def messages_of(chunks: list[Any]) -> list[MessageChunk]:
    return [c for c in chunks if isinstance(c, MessageChunk)]


def tool(name: str, call: Callable[[dict[str, Any]], Any], execute_only: bool = False) -> ChatTool:
    return ChatTool(
        name, f"the {name} tool", {"type": "object", "properties": {}}, call, execute_only
    )


def test_plain_reply(perso_mock: MockPersoServer, make_processor: Make) -> None:
    processor = make_processor()
    chunks = list(processor.process_llm("Hello there"))
    final = chunks[-1]
    assert isinstance(final, MessageChunk)
    assert final.finish
    assert final.message == "Hello! I am the Perso mock assistant. You said: Hello there"
    assert final.message == "".join(final.chunks)
    assert all(not c.finish for c in messages_of(chunks)[:-1])
    (request,) = llm_requests(perso_mock)
    assert request.body["messages"] == [{"role": "user", "content": "Hello there"}]
    assert "persolive-apikey" not in {h.lower() for h in request.headers}  # no API key sent


@pytest.fixture
def one_write_server() -> Iterator[Callable[[bytes], str]]:
    """A stand-in LLM endpoint on 127.0.0.1 that sends its whole answer in one write (the mock
    writes event by event), so that the client reads several deltas at once."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(answer: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                head = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(answer)
                )
                self.wfile.write(head + answer)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_deltas_that_arrive_together_are_batched(
    one_write_server: Callable[[bytes], str],
) -> None:
    deltas = ["one ", "two ", "three"]
    answer = b"".join(
        b"data: "
        + json.dumps({"status": "success", "type": "message", "content": d}).encode()
        + b"\n"
        for d in deltas
    )
    url = one_write_server(answer + b'data: {"status":"success","type":"done","content":""}\n')
    with LlmProcessor(api_server=url, session_id="sid", timeout=WAIT) as processor:
        chunks = list(processor.process_llm("count"))
    # one chunk for the batch (flushed before the non-message "done"), then the finish chunk
    assert chunks == [
        MessageChunk(("one ", "two ", "three"), "one two three", False),
        MessageChunk(("one ", "two ", "three"), "one two three", True),
    ]


def test_emoji_are_removed(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    perso_mock.set_llm_script(
        llm_session, LlmScript(rules=[Rule(pattern="hi", reply="안녕 👋🏽 friend 🇰🇷!")])
    )
    processor = make_processor()
    chunks = list(processor.process_llm("hi"))
    assert messages_of(chunks)[-1].message == "안녕  friend !"
    assert processor.get_history()[-1]["content"] == "안녕  friend !"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_client_tool_called_with_decoded_arguments_and_its_result_fed_back(
    perso_mock: MockPersoServer, make_processor: Make, kind: str
) -> None:
    seen: list[tuple[dict[str, Any], str]] = []

    def get_weather(args: dict[str, Any]) -> dict[str, Any]:
        seen.append((args, threading.current_thread().name))
        return {"temperature": "30℃", "city": args["location"]}

    async def get_weather_async(args: dict[str, Any]) -> dict[str, Any]:
        return get_weather(args)

    call = get_weather if kind == "sync" else get_weather_async
    processor = make_processor(client_tools=[tool("get_weather", call)])
    chunks = list(processor.process_llm("What is the weather in Busan?"))

    assert [args for args, _ in seen] == [{"location": "Busan"}]
    thread = seen[0][1]
    assert (thread == "perso-runtime") == (kind == "async")  # sync tools never on the loop
    types = [c.type for c in chunks]
    assert types.index("tool_call") < types.index("tool_result") < len(types) - 1
    (call_chunk,) = [c for c in chunks if isinstance(c, ToolCallChunk)]
    call_id = call_chunk.tool_calls[0]["id"]
    (result_chunk,) = [c for c in chunks if isinstance(c, ToolResultChunk)]
    assert result_chunk.tool_call_id == call_id
    assert result_chunk.result == {"temperature": "30℃", "city": "Busan"}
    first, follow_up = llm_requests(perso_mock)
    assert follow_up.body["messages"][-1] == {
        "role": "tool",
        "content": '{"temperature":"30℃","city":"Busan"}',  # as JSON.stringify writes it
        "tool_call_id": call_id,
    }
    assert [t["function"]["name"] for t in first.body["tools"]] == ["get_weather"]
    final = messages_of(chunks)[-1]
    assert final.finish
    assert final.message.startswith("Here is the weather report:")


def test_execute_only_tool_ends_the_turn(perso_mock: MockPersoServer, make_processor: Make) -> None:
    switched: list[dict[str, Any]] = []
    lights = tool("lights", lambda args: switched.append(args) or {"ok": True}, execute_only=True)
    processor = make_processor(client_tools=[lights])
    chunks = list(processor.process_llm('call tool lights with {"on": false}'))
    assert switched == [{"on": False}]
    assert [c.type for c in chunks] == ["tool_call", "tool_result", "message"]
    assert chunks[-1] == MessageChunk((), "", True)  # the turn's one finish chunk, empty
    assert len(llm_requests(perso_mock)) == 1  # no follow-up
    assert [e["role"] for e in processor.get_history()] == ["user", "assistant", "tool"]


def test_mcp_results_mixed_with_client_tools_trigger_the_follow_up(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    session_id = perso_mock.create_session_id(mcp_servers=["mcp-docs-search"])
    perso_mock.set_llm_script(
        session_id,
        LlmScript(
            rules=[
                Rule(
                    pattern="mixed",
                    tool_calls=[ToolCall(name="lights"), ToolCall(name="search_docs")],
                    follow_up="Done: {results}",
                )
            ]
        ),
    )
    lights = tool("lights", lambda args: {"ok": True}, execute_only=True)
    processor = make_processor(session_id=session_id, client_tools=[lights])
    chunks = list(processor.process_llm("mixed please"))
    assert len(llm_requests(perso_mock)) == 2  # execute_only, yet the MCP call needs an answer
    assert messages_of(chunks)[-1].message.startswith("Done:")
    history = processor.get_history()
    mcp_entries = [e for e in history if e["role"] == "tool" and "Opening hours" in e["content"]]
    assert len(mcp_entries) == 1  # the remote result is kept in history


def _tool_call_event(name: str, call_id: str = "call_x") -> dict[str, Any]:
    return {
        "status": "success",
        "type": "tool_call",
        "content": "",
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
        ],
    }


def test_tool_calls_without_a_client_tool_run_nothing_and_end_the_turn(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    perso_mock.set_llm_script(
        llm_session,
        LlmScript(rules=[Rule(pattern="ghost", events=[_tool_call_event("nobody")], times=1)]),
    )
    ran: list[object] = []
    processor = make_processor(client_tools=[tool("somebody", ran.append)])
    chunks = list(processor.process_llm("ghost"))
    assert ran == []
    assert not any(isinstance(c, ToolResultChunk) for c in chunks)
    assert len(llm_requests(perso_mock)) == 1  # no paid follow-up request
    assert chunks[-1] == MessageChunk((), "", True)


def test_an_mcp_only_turn_makes_one_request_and_keeps_the_servers_tool_entry(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    session_id = perso_mock.create_session_id(mcp_servers=["mcp-docs-search"])
    processor = make_processor(session_id=session_id, client_tools=[tool("lights", dict)])
    chunks = list(processor.process_llm("search the opening hours"))
    assert len(llm_requests(perso_mock)) == 1  # the server ran the tool and answered in-stream
    final = chunks[-1]
    assert isinstance(final, MessageChunk)
    assert final.finish
    assert final.message.startswith("I searched the knowledge base")
    history = processor.get_history()
    (remote,) = [e for e in history if e["role"] == "tool"]
    assert remote["type"] == "tool_call"  # kept as the server sent it
    assert list(remote) == ["role", "type", "content", "tool_call_id"]
    assert [e["role"] for e in history] == ["user", "tool", "assistant"]


def test_a_raising_tool_gives_an_error_result(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    def broken(args: dict[str, Any]) -> None:
        raise RuntimeError("the sensor is offline")

    processor = make_processor(client_tools=[tool("get_weather", broken)])
    chunks = list(processor.process_llm("weather?"))
    (result,) = [c for c in chunks if isinstance(c, ToolResultChunk)]
    assert result.result == {"error": "the sensor is offline"}
    assert isinstance(chunks[-1], MessageChunk)
    assert "the sensor is offline" in chunks[-1].message  # fed back to the LLM


def test_the_ten_round_limit(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    again = [_tool_call_event("ghost")]
    perso_mock.set_llm_script(
        llm_session,
        LlmScript(rules=[Rule(pattern="loop", events=again, follow_up_events=again)]),
    )
    processor = make_processor(client_tools=[tool("ghost", lambda args: {"again": True})])
    chunks = list(processor.process_llm("loop forever"))
    error = chunks[-1]
    assert isinstance(error, ErrorChunk)
    assert isinstance(error.error.underlying_error, LLMStreamingResponseError)
    assert str(error.error.underlying_error) == "Tool follow-up loop exceeded maximum rounds (10)"
    assert len(llm_requests(perso_mock)) == 10
    assert processor.get_history() == []


def _only_error(chunks: list[Any]) -> LLMError:
    assert isinstance(chunks[-1], ErrorChunk)
    assert sum(isinstance(c, ErrorChunk) for c in chunks) == 1
    error = chunks[-1].error
    assert isinstance(error, LLMError)
    return error


def test_a_fail_event(make_processor: Make) -> None:
    error = _only_error(list(make_processor().process_llm("please fail")))
    assert isinstance(error.underlying_error, LLMStreamingResponseError)
    assert error.underlying_error.description == "The mock LLM was asked to fail."


def test_a_garbled_line(perso_mock: MockPersoServer, make_processor: Make) -> None:
    perso_mock.faults.sse_garbage("this is not sse")
    error = _only_error(list(make_processor().process_llm("Hello")))
    assert isinstance(error.underlying_error, LLMStreamingResponseError)
    assert "this is not sse" in error.underlying_error.description


@pytest.mark.parametrize("status", [400, 503])
def test_http_error_status(perso_mock: MockPersoServer, make_processor: Make, status: int) -> None:
    perso_mock.faults.fail("llm", status)
    processor = make_processor()
    error = _only_error(list(processor.process_llm("Hello")))
    assert isinstance(error.underlying_error, ApiError)
    assert error.underlying_error.error_code == status
    assert processor.get_history() == []


def test_an_html_error_page_is_still_an_api_error(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    perso_mock.faults.html("llm", 502)
    error = _only_error(list(make_processor().process_llm("Hello")))
    assert isinstance(error.underlying_error, ApiError)
    assert error.underlying_error.code == "UNKNOWN_ERROR"


def test_a_refused_connection_is_a_connection_error(make_processor: Make) -> None:
    processor = make_processor(api_server="http://127.0.0.1:9")  # discard port: nothing listens
    error = _only_error(list(processor.process_llm("Hello")))
    assert isinstance(error.underlying_error, perso.PersoConnectionError)


def test_abort_from_another_thread_mid_stream(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    reply = " ".join(f"word{i}" for i in range(40))
    perso_mock.set_llm_script(
        llm_session,
        LlmScript(
            rules=[Rule(pattern="long", reply=reply, tool_calls=[ToolCall(name="lights")])],
            delay=0.05,
            words_per_delta=1,
        ),
    )
    ran: list[object] = []
    processor = make_processor(client_tools=[tool("lights", ran.append)])
    signal_ = AbortSignal()
    chunks: list[Any] = []
    for chunk in processor.process_llm("long story", abort=signal_):
        chunks.append(chunk)
        if len(chunks) == 1:
            aborter = threading.Thread(target=signal_.abort)
            aborter.start()
            aborter.join(WAIT)
    assert signal_.aborted
    finals = [c for c in messages_of(chunks) if c.finish]
    assert len(finals) == 1
    assert chunks[-1] is finals[0]
    assert reply.startswith(finals[0].message)
    assert finals[0].message != reply  # cut short
    assert ran == []  # the tool call never came
    assert len(llm_requests(perso_mock)) == 1  # and nothing further was requested
    assert processor.get_history() == []


def test_break_closes_the_http_stream(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    reply = " ".join(f"word{i}" for i in range(60))
    perso_mock.set_llm_script(
        llm_session,
        LlmScript(rules=[Rule(pattern="long", reply=reply)], delay=0.05, words_per_delta=1),
    )
    processor = make_processor()
    for _chunk in processor.process_llm("long story"):
        break
    # The mock's next write fails once the client is gone: the request ends with an error
    # status long before the 3 s the whole reply takes.
    entry = perso_mock.journal.wait_for(
        lambda e: e.status is not None, endpoint="llm", timeout=WAIT
    )
    assert entry.status != 200
    assert processor.get_history() == []


def test_close_from_a_with_block_stops_the_turn(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    perso_mock.set_llm_script(
        llm_session,
        LlmScript(rules=[Rule(pattern="long", reply="a b c d e f g h")], delay=0.2),
    )
    with make_processor().process_llm("long") as stream:
        first = next(stream)
    assert isinstance(first, MessageChunk)
    assert next(stream, None) is None
    entry = perso_mock.journal.wait_for(
        lambda e: e.status is not None, endpoint="llm", timeout=WAIT
    )
    assert entry.status != 200


def test_history_after_success_and_unchanged_after_failure(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    processor = make_processor()
    list(processor.process_llm("first"))
    history = processor.get_history()
    assert [e["role"] for e in history] == ["user", "assistant"]
    history.append({"role": "user", "content": "a copy, not the real thing"})
    assert len(processor.get_history()) == 2

    list(processor.process_llm("please fail"))
    assert processor.get_history() == history[:2]

    list(processor.process_llm("second"))
    assert len(processor.get_history()) == 4
    last_request = llm_requests(perso_mock)[-1]
    assert [m["content"] for m in last_request.body["messages"]] == [
        "first",
        history[1]["content"],
        "second",
    ]


def test_add_to_history_is_sent_with_the_next_turn(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    processor = make_processor()
    processor.add_to_history({"role": "assistant", "content": "Welcome!"})
    list(processor.process_llm("hi"))
    assert llm_requests(perso_mock)[0].body["messages"][0] == {
        "role": "assistant",
        "content": "Welcome!",
    }


@pytest.mark.parametrize("framing", ["platform", "sse"])
def test_both_sse_framings(perso_mock: MockPersoServer, make_processor: Make, framing: str) -> None:
    perso_mock.catalog.settings["llm_framing"] = framing
    chunks = list(make_processor().process_llm("Hello framing"))
    assert messages_of(chunks)[-1].message.endswith("You said: Hello framing")


def test_an_empty_message_is_refused_before_any_request(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    with pytest.raises(perso.InvalidInputError):
        make_processor().process_llm("   ")
    assert llm_requests(perso_mock) == []


def test_callbacks_report_state_and_errors_off_the_loop(make_processor: Make) -> None:
    events: list[tuple[Any, ...]] = []
    done = threading.Event()

    def on_state(add: Any, remove: Any) -> None:
        events.append(("state", add, remove, threading.current_thread().name))
        if remove is not None:
            done.set()

    def on_error(error: BaseException) -> None:
        events.append(("error", type(error).__name__, None, threading.current_thread().name))

    callbacks = perso.LlmProcessorCallbacks(on_chat_state_change=on_state, on_error=on_error)
    processor = make_processor(callbacks=callbacks)
    list(processor.process_llm("please fail"))
    assert done.wait(WAIT)
    assert [e[:3] for e in events] == [
        ("state", perso.ChatState.LLM, None),
        ("error", "LLMError", None),
        ("state", None, perso.ChatState.LLM),
    ]
    assert all(e[3] not in ("perso-runtime", "MainThread") for e in events)


def test_process_chat_logs_speaks_and_returns_the_text(make_processor: Make) -> None:
    log: list[tuple[str, bool]] = []
    spoken: list[str] = []
    callbacks = perso.LlmProcessorCallbacks(
        on_chat_log=lambda m, u: log.append((m, u)), on_ttstf=spoken.append
    )
    processor = make_processor(callbacks=callbacks)
    text = processor.process_chat("Hello chat")
    processor._dispatcher.flush(WAIT)
    assert text.endswith("You said: Hello chat")
    assert log == [("Hello chat", True), (text, False)]
    assert "".join(spoken) == text


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_keyboard_interrupt_mid_stream(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is delivered to the main thread")
    perso_mock.set_llm_script(
        llm_session,
        LlmScript(rules=[Rule(pattern="slow", reply="a b c d e f g h i j")], delay=0.3),
    )
    processor = make_processor()
    main_ident = threading.main_thread().ident
    assert main_ident is not None
    got: list[Any] = []

    def consume() -> None:
        with processor.process_llm("slow") as stream:
            for chunk in stream:
                got.append(chunk)
                if len(got) == 1:  # Ctrl-C while the consumer waits for the next chunk
                    threading.Thread(
                        target=signal.pthread_kill, args=(main_ident, signal.SIGINT)
                    ).start()

    # A signal handled inside a finaliser is swallowed by CPython; keep the collector (which
    # runs finalisers of old garbage at random points) out of the interrupted window.
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(KeyboardInterrupt):
            consume()
    finally:
        gc.enable()
    assert len(got) >= 1
    entry = perso_mock.journal.wait_for(
        lambda e: e.status is not None, endpoint="llm", timeout=WAIT
    )
    assert entry.status != 200  # the stream was closed, not read to the end
    assert processor.get_history() == []
    perso_mock.set_llm_script(llm_session, None)
    assert messages_of(list(processor.process_llm("again")))[-1].finish  # still usable


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_a_turn(make_processor: Make) -> None:
    processor = make_processor()
    list(processor.process_llm("parent turn"))  # the parent's runtime and HTTP client exist
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            chunks = list(processor.process_llm("child turn"))
            ok = messages_of(chunks)[-1].message.endswith("You said: child turn")
            status = 0 if ok else 2
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert messages_of(list(processor.process_llm("parent again")))[-1].finish


def test_a_stream_cut_mid_event_is_a_streaming_error(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    perso_mock.faults.sse_truncate()
    error = _only_error(list(make_processor().process_llm("Hello there friend")))
    assert isinstance(error.underlying_error, LLMStreamingResponseError)


def test_a_dropped_connection_is_a_connection_error(
    perso_mock: MockPersoServer, make_processor: Make
) -> None:
    perso_mock.faults.drop("llm")
    processor = make_processor()
    error = _only_error(list(processor.process_llm("Hello there friend")))
    assert isinstance(error.underlying_error, perso.PersoConnectionError)
    assert processor.get_history() == []


def test_a_silent_server_is_a_timeout(perso_mock: MockPersoServer, make_processor: Make) -> None:
    perso_mock.faults.delay("llm", 30)
    error = _only_error(list(make_processor(timeout=0.3).process_llm("Hello")))
    assert isinstance(error.underlying_error, perso.PersoTimeoutError)


def test_the_blocking_api_inside_an_async_tool_is_refused_not_deadlocked(
    make_processor: Make,
) -> None:
    processor = make_processor()

    async def nested(args: dict[str, Any]) -> Any:
        return list(processor.process_llm("nested"))  # on the loop thread: refused

    processor = make_processor(client_tools=[tool("get_weather", nested)])
    chunks = list(processor.process_llm("weather?"))
    (result,) = [c for c in chunks if isinstance(c, ToolResultChunk)]
    assert "loop thread" in result.result["error"]


def test_a_consumer_that_lags_does_not_trip_the_idle_timeout(
    perso_mock: MockPersoServer, make_processor: Make, llm_session: str
) -> None:
    # The stream outruns the consumer: the turn is parked on the stream's credits while the
    # user's thread is busy for longer than the idle timeout. The idle clock only runs while
    # the turn waits for the network, so the turn still ends with its whole text.
    words = [f"w{i}" for i in range(300)]  # one event per word: far more than the credits
    perso_mock.set_llm_script(
        llm_session,
        LlmScript(rules=[Rule(pattern="lag", reply=" ".join(words))], delay=0, words_per_delta=1),
    )
    processor = make_processor(timeout=0.2)
    chunks: list[Any] = []
    busy = threading.Event()
    for chunk in processor.process_llm("lag please"):
        chunks.append(chunk)
        if len(chunks) == 1:
            busy.wait(0.6)  # the user's work between two chunks, three idle timeouts long
    assert not [c for c in chunks if isinstance(c, ErrorChunk)]
    final = chunks[-1]
    assert isinstance(final, MessageChunk)
    assert final.finish
    assert final.message == " ".join(words)


@pytest.mark.parametrize("ending", ["finish", "error", "break", "close", "abort"])
def test_a_session_turn_turns_the_llm_state_on_then_off_once_however_it_ends(
    perso_mock: MockPersoServer, ending: str
) -> None:
    from _session_helpers import IDLE, StateRecorder

    sid = perso_mock.create_session_id(using_stf_webrtc=False)
    if ending != "error":  # the default script fails "please fail"
        perso_mock.set_llm_script(
            sid,
            LlmScript(rules=[Rule(pattern="long", reply="a b c d e f")], delay=0.05),
        )
    with (
        perso.PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url) as client,
        client.create_session(sid, width=160, height=120) as session,
    ):
        states = StateRecorder()
        session.subscribe_chat_states(states)
        if ending == "finish":
            assert messages_of(list(session.process_llm("long")))[-1].finish
        elif ending == "error":
            assert isinstance(list(session.process_llm("please fail"))[-1], ErrorChunk)
        elif ending == "break":
            for _chunk in session.process_llm("long"):
                break  # the stream is collected here
        elif ending == "close":
            with session.process_llm("long") as stream:
                next(stream)
        else:
            signal_ = AbortSignal()
            for _chunk in session.process_llm("long", abort=signal_):
                signal_.abort()
        # Off as soon as the stream has ended, not some time later.
        assert perso.ChatState.LLM not in session.chat_states
        states.wait_for(lambda calls: len(calls) >= 2)
        assert states.snapshot() == [{perso.ChatState.LLM}, IDLE]
