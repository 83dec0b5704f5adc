"""Session: chat, avatar speech, chat states, chat log and callbacks (public API, mock server,
real WebRTC)."""

from __future__ import annotations

import threading
from typing import Any

import _session_helpers as helpers
import pytest
from _session_helpers import (
    IDLE,
    A,
    Recorder,
    S,
    StateRecorder,
    sent_messages,
    wait_sent,
    wait_until,
)

import perso_sync
from mock_server import LlmScript, Rule
from mock_server.llm_script import split_deltas
from perso_sync.models import ChatState

client = helpers.client
open_session = helpers.open_session

REPLY = "Nice to meet you. How are you today?"


def _script(reply: str = REPLY, **kwargs: Any) -> LlmScript:
    return LlmScript(rules=[Rule(pattern=r"(?i)hello", reply=reply)], words_per_delta=3, **kwargs)


def test_full_lifecycle_with_chat(perso_mock: Any, open_session: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.set_llm_script(sid, _script())
    closes = Recorder()
    logs = Recorder()
    states = StateRecorder()

    with open_session(sid) as session:
        assert session.session_id == sid == session.get_session_id()
        assert session.close_status == perso_sync.CloseStatus(True, None, None)
        session.on_close(closes)
        session.subscribe_chat_log(logs)
        session.subscribe_chat_states(states)

        answer = session.process_chat("Hello there")

        assert answer == REPLY

        # Every delta went to the avatar as it arrived, in order, trimmed, nothing lost.
        def spoken() -> list[str]:
            return [data["message"] for data in sent_messages(perso_mock, sid, "ttstf")]

        deltas = [piece.strip() for piece in split_deltas(REPLY, 3)]
        wait_until(lambda: spoken() == deltas, what="the whole reply at the avatar")
        assert len(spoken()) >= 2
        logs.wait_for(lambda calls: calls and len(calls[-1]) == 2)
        assistant, user = logs.snapshot()[-1]  # newest first
        assert (user.is_user, user.text) == (True, "Hello there")
        assert (assistant.is_user, assistant.text) == (False, REPLY)
        # process_chat keeps the session's chat history, not the process_llm one
        assert session.get_message_history() == []
        states.wait_for(lambda calls: any(ChatState.LLM in active for active in calls))
        states.wait_for(lambda calls: any(S in active for active in calls))
        # The mock answers every ttstf with an stf: the avatar really spoke.
        perso_mock.journal.wait_for(
            session_id=sid, channel="message", direction="out", type="stf", timeout=5
        )

    closes.wait_count(1)
    assert closes.calls == [True]
    assert session.closed
    assert session.close_status == perso_sync.CloseStatus(False, 200, "OK")
    perso_mock.wait_for_status(sid, "TERMINATED")


def test_one_ttstf_turn_state_sequence(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    states = StateRecorder()
    session.subscribe_chat_states(states)

    session.process_ttstf("Good morning")

    assert session.wait_until_idle(timeout=10)
    states.wait_idle_after(S)
    assert states.snapshot() == [{A}, {S}, IDLE]
    assert [d["message"] for d in sent_messages(perso_mock, session.session_id, "ttstf")] == [
        "Good morning"
    ]


def test_two_overlapping_ttstf_turns(perso_mock: Any, open_session: Any) -> None:
    # The mock answers each ttstf 0.3 s later, so both are pending before the first stf.
    session = open_session(peer={"speech_delay": 0.3})
    states = StateRecorder()
    session.subscribe_chat_states(states)

    session.process_ttstf("First sentence.")
    session.process_ttstf("Second sentence.")

    assert session.wait_until_idle(timeout=15)
    states.wait_idle_after(S)
    assert states.snapshot() == [{A}, {A, S}, {S}, IDLE]


def test_clear_buffer_mid_speech(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    states = StateRecorder()
    session.subscribe_chat_states(states)
    session.process_ttstf("A long sentence that the avatar starts to speak.")
    states.wait_for(lambda calls: any(S in active for active in calls))

    session.clear_buffer()

    assert session.chat_states == IDLE
    assert session.wait_until_idle(timeout=1)
    states.wait_for(lambda calls: calls[-1] == IDLE)
    assert wait_sent(perso_mock, session.session_id, "clear-buffer") == [{}]


def test_clear_buffer_cancels_the_running_chat_turn(perso_mock: Any, open_session: Any) -> None:
    sid = perso_mock.create_session_id()
    words = " ".join(f"word{i}" for i in range(40))
    perso_mock.set_llm_script(sid, _script(words, delay=0.2))
    session = open_session(sid)
    result: dict[str, Any] = {}

    def chat() -> None:
        result["text"] = session.process_chat("hello, talk for a while")

    worker = threading.Thread(target=chat)
    worker.start()
    perso_mock.journal.wait_for(session_id=sid, channel="message", direction="in", type="ttstf")

    session.clear_buffer()
    worker.join(10)

    assert not worker.is_alive()
    # The turn stopped early: its caller gets what was said before the clear, not the reply.
    assert words.startswith(result["text"])
    assert result["text"] != words
    assert session.chat_states == IDLE
    wait_sent(perso_mock, sid, "clear-buffer")  # same channel: every ttstf came before it
    spoken = [d["message"] for d in sent_messages(perso_mock, sid, "ttstf")]
    assert " ".join(spoken) == " ".join(result["text"].split())  # each delta sent trimmed


def test_chat_log_entries(perso_mock: Any, open_session: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.set_llm_script(sid, _script())
    session = open_session(sid)
    logs = Recorder()
    session.subscribe_chat_log(logs)

    session.process_ttstf("Welcome 👋 to the demo")
    session.process_chat("hello")

    logs.wait_count(3)
    entries = [(c.is_user, c.text) for c in logs.snapshot()[-1]]
    # newest first; process_ttstf logs its message as given, as the official SDK does
    assert entries == [(False, REPLY), (True, "hello"), (False, "Welcome 👋 to the demo")]
    assert [len(log) for log in logs.snapshot()] == [1, 2, 3]
    assert [(c.is_user, c.text) for c in session.get_chat_log()] == entries
    # the avatar was sent the text with emoji removed ...
    assert sent_messages(perso_mock, sid, "ttstf")[0] == {"message": "Welcome  to the demo"}
    # ... and process_chat sent the message itself as history, as the official client does
    (request,) = perso_mock.journal.requests(endpoint="llm", session_id=sid)
    assert request.body["messages"] == [
        {"role": "assistant", "type": "message", "content": "Welcome 👋 to the demo"},
        {"role": "user", "content": "hello"},
    ]
    assert session.get_message_history() == []


def test_process_custom_chat_warns_and_keeps_no_history(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    with pytest.warns(DeprecationWarning, match="process_ttstf"):
        session.process_custom_chat("Custom words")
    assert wait_sent(perso_mock, session.session_id, "ttstf") == [{"message": "Custom words"}]
    assert session.get_message_history() == []
    assert session.get_chat_log() == []


def test_chat_error_is_raised_and_given_to_the_error_handler(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session()
    errors = Recorder()
    session.set_error_handler(errors)

    with pytest.raises(perso_sync.LLMError) as raised:
        session.process_chat("please fail")

    errors.wait_count(1)
    assert errors.calls == [raised.value]
    assert "The mock LLM was asked to fail." in str(raised.value)
    assert ChatState.LLM not in session.chat_states


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_empty_messages_are_refused_without_a_request(
    perso_mock: Any, open_session: Any, message: str
) -> None:
    session = open_session()
    with pytest.raises(perso_sync.InvalidInputError):
        session.process_chat(message)
    with pytest.raises(perso_sync.InvalidInputError):
        session.process_ttstf(message)
    assert perso_mock.journal.requests(endpoint="llm") == []
    assert sent_messages(perso_mock, session.session_id, "ttstf") == []


def test_process_llm_streams_without_driving_the_avatar(perso_mock: Any, open_session: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.set_llm_script(sid, _script())
    session = open_session(sid)

    with session.process_llm("hello") as stream:
        chunks = list(stream)

    assert chunks[-1].type == "message"
    assert chunks[-1].finish
    assert chunks[-1].message == REPLY
    assert sent_messages(perso_mock, sid, "ttstf") == []
    assert session.chat_states == IDLE


def test_callbacks_in_order_off_the_loop_errors_to_the_handler_unsubscribe(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session()
    errors = Recorder()
    session.set_error_handler(errors)
    states = StateRecorder()

    def broken(active: frozenset[ChatState]) -> None:
        raise RuntimeError("subscriber bug")

    early = StateRecorder()
    session.subscribe_chat_states(broken)
    session.subscribe_chat_states(states)
    unsubscribe = session.subscribe_chat_states(early)

    session.process_ttstf("Still speaking despite a broken subscriber")
    early.wait_count(1)
    unsubscribe()
    unsubscribe()  # idempotent

    states.wait_idle_after(S)
    assert states.snapshot() == [{A}, {S}, IDLE]
    assert early.snapshot() == [{A}]
    assert "perso-runtime" not in states.threads
    assert len(errors.snapshot()) == 3
    assert all(isinstance(e, RuntimeError) for e in errors.snapshot())
    assert not session.closed  # the loop carried on: pings, states, everything


def test_change_size_and_set_template_reach_the_avatar(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    session.change_size(128, 96)
    session.set_template("chaehee", "white_shirt")
    session.log_session_event({"action": "clicked"})

    sid = session.session_id
    assert wait_sent(perso_mock, sid, "change-size", 2)[-1] == {"width": 128, "height": 96}
    assert wait_sent(perso_mock, sid, "set-template") == [
        {"model": "chaehee", "dress": "white_shirt"}
    ]
    assert perso_mock.sessions[sid].events[-1]["event"] == "SESSION_LOG"
    with pytest.raises(perso_sync.InvalidInputError):
        session.change_size(0, 96)


def test_wait_until_idle_times_out_while_speaking(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    session.process_ttstf("Speaking now")
    assert session.wait_until_idle(timeout=0.05) is False
    assert session.chat_states


def _client_pings(perso_mock: Any, sid: str) -> int:
    return len(sent_messages(perso_mock, sid, "ping"))


def test_a_slow_callback_never_delays_pings(perso_mock: Any, open_session: Any) -> None:
    # The mock pings every 0.2 s: a loop stalled for 1 s would close the session as lost.
    session = open_session(ping_timeout=1.0, peer={"ping_interval": 0.2})
    sid = session.session_id
    entered = threading.Event()
    release = threading.Event()

    def slow_subscriber(active: frozenset[ChatState]) -> None:
        entered.set()
        release.wait(15)

    session.subscribe_chat_states(slow_subscriber)
    try:
        session.process_ttstf("Hello")
        assert entered.wait(5)
        before = _client_pings(perso_mock, sid)
        # Two more of our pings while the callback blocks; the server's pings are read too,
        # or the 1 s watchdog would have closed the session.
        wait_until(lambda: _client_pings(perso_mock, sid) >= before + 2, timeout=10)
        assert not session.closed
    finally:
        release.set()


def test_speech_from_several_threads_at_once(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    texts = [f"Sentence number {i}." for i in range(6)]
    threads = [threading.Thread(target=session.process_ttstf, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    spoken = wait_sent(perso_mock, session.session_id, "ttstf", len(texts))
    assert sorted(d["message"] for d in spoken) == sorted(texts)
    # Every ttstf raised ANALYZING once and its stf lowered it once: none is left pending.
    wait_until(lambda: A not in session.chat_states, what="no pending speech")
    assert S in session.chat_states
    # every sentence reached the chat history, which the next process_chat sends
    session.process_chat("And now?")
    (request,) = perso_mock.journal.requests(endpoint="llm", session_id=session.session_id)
    history = request.body["messages"][:-1]
    assert sorted(m["content"] for m in history) == sorted(texts)


def test_rest_only_chat_answers_and_logs_without_speech(perso_mock: Any, client: Any) -> None:
    sid = perso_mock.create_session_id(using_stf_webrtc=False)
    perso_mock.set_llm_script(sid, _script())
    with client.create_session(sid, width=160, height=120) as session:
        assert session.process_chat("hello") == REPLY
        assert [(c.is_user, c.text) for c in session.get_chat_log()] == [
            (False, REPLY),
            (True, "hello"),
        ]
        assert session.chat_states == IDLE
        with session.process_llm("hello") as stream:
            assert [c.message for c in stream if c.type == "message" and c.finish] == [REPLY]


def test_bad_client_tools_are_refused_before_any_request(perso_mock: Any, client: Any) -> None:
    sid = perso_mock.create_session_id()
    with pytest.raises(perso_sync.InvalidInputError):
        client.create_session(sid, width=160, height=120, client_tools=["not a tool"])
    assert perso_mock.journal.requests(session_id=sid) == []


def test_form_b_body_carries_template_numbers_as_the_js_client(perso_mock: Any) -> None:
    # The mock's template has "padding_left": 0.0 (a float on the wire); the official client
    # sends it back through JSON.stringify, as 0. Ours must send the same body.
    with perso_sync.PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url) as api:
        api.create_session_id(session_template_id="tmpl-webrtc-full")
    (request,) = perso_mock.journal.requests(endpoint="create_session")
    body = request.body
    assert [
        (body[key], type(body[key])) for key in ("padding_left", "padding_top", "padding_height")
    ] == [
        (0, int),
        (0.1, float),
        (1.2, float),
    ]


# ------------------------------------------------------------- low-level channel access


def test_send_message_goes_out_on_the_channel_as_given(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    sid = session.session_id

    session.send_message("set-template", {"model": "chaehee", "dress": "white_shirt"})
    session.send_message("clear-buffer")

    assert wait_sent(perso_mock, sid, "set-template") == [
        {"model": "chaehee", "dress": "white_shirt"}
    ]
    assert wait_sent(perso_mock, sid, "clear-buffer") == [{}]
    assert perso_mock.peer(sid).template == {"model": "chaehee", "dress": "white_shirt"}


def test_on_message_delivers_server_messages_off_the_loop_until_removed(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session()
    first = Recorder()
    second = Recorder()
    remove_first = session.on_message("stf", first)
    session.on_message("stf", second)

    session.process_ttstf("One")
    first.wait_count(1)
    second.wait_count(1)
    assert first.calls == [{"message": "One", "duration": 300}]
    assert second.calls == first.calls
    assert first.calls[0] is not second.calls[0]  # each callback gets its own copy
    assert all(not name.startswith("perso-runtime") for name in first.threads)
    # The session's own handling still ran: the stf moved ANALYZING to SPEAKING.
    session.wait_until_idle(timeout=10)

    remove_first()
    remove_first()  # idempotent
    session.process_ttstf("Two")
    second.wait_count(2)
    # Callbacks run in order: had the removed one still been called, it would have been first.
    assert first.calls == [{"message": "One", "duration": 300}]
    assert second.calls[1] == {"message": "Two", "duration": 300}


def test_a_raising_message_callback_goes_to_the_error_handler(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session()
    errors = Recorder()
    session.set_error_handler(errors)

    def broken(data: dict[str, Any]) -> None:
        raise RuntimeError(f"cannot handle {data['message']}")

    session.on_message("stf", broken)
    session.process_ttstf("Hi")

    errors.wait_count(1)
    assert isinstance(errors.calls[0], RuntimeError)
    assert "cannot handle Hi" in str(errors.calls[0])


def test_removing_a_replaced_error_handler_keeps_the_newer_one(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session()
    old, new = Recorder(), Recorder()
    remove_old = session.set_error_handler(old)
    remove_new = session.set_error_handler(new)  # replaces the old one
    remove_old()  # a stale remover must not drop the handler that replaced it

    def broken(data: dict[str, Any]) -> None:
        raise RuntimeError(f"cannot handle {data['message']}")

    session.on_message("stf", broken)
    session.process_ttstf("Hi")
    new.wait_count(1)
    assert old.calls == []

    remove_new()  # now the slot is empty: errors are logged, nobody is called
    session.process_ttstf("Again")
    session.wait_until_idle(timeout=10)
    assert len(new.calls) == 1


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.send_message("", {}), "msg_type"),
        (lambda s: s.send_message("   ", {}), "msg_type"),
        (lambda s: s.send_message(5, {}), "msg_type"),
        (lambda s: s.send_message("x", [1, 2]), "mapping"),
        (lambda s: s.send_message("x", {1: "a"}), "mapping"),
        (lambda s: s.send_message("x", {"a": float("nan")}), "JSON"),
        (lambda s: s.send_message("x", {"a": object()}), "JSON"),
        (lambda s: s.on_message("", print), "msg_type"),
        (lambda s: s.on_message(None, print), "msg_type"),
        (lambda s: s.on_message("stf", "not callable"), "callable"),
    ],
)
def test_low_level_channel_input_is_checked_before_sending(
    perso_mock: Any, open_session: Any, call: Any, match: str
) -> None:
    session = open_session()
    with pytest.raises(perso_sync.InvalidInputError, match=match):
        call(session)
    assert sent_messages(perso_mock, session.session_id, "x") == []


def test_low_level_channel_needs_webrtc(perso_mock: Any, client: Any) -> None:
    sid = perso_mock.create_session_id(using_stf_webrtc=False)
    with client.create_session(sid, width=160, height=120) as session:
        with pytest.raises(perso_sync.STFError, match="WebRTC"):
            session.send_message("clear-buffer", {})
        with pytest.raises(perso_sync.STFError, match="WebRTC"):
            session.on_message("stf", print)
    with pytest.raises(perso_sync.SessionClosedError):
        session.send_message("clear-buffer", {})


def _llm_bodies(perso_mock: Any, sid: str) -> list[list[dict[str, Any]]]:
    return [r.body["messages"] for r in perso_mock.journal.requests(endpoint="llm", session_id=sid)]


def _final_text(stream: Any) -> str:
    with stream:
        (final,) = [c.message for c in stream if c.type == "message" and c.finish]
    return str(final)


def test_process_llm_then_process_ttstf_does_not_repeat_the_reply(
    perso_mock: Any, open_session: Any
) -> None:
    # The reference's pattern: stream with process_llm, speak the finished text.
    session = open_session()
    sid = session.session_id
    first = _final_text(session.process_llm("First question"))
    session.process_ttstf(first)
    _final_text(session.process_llm("Second question"))
    second_request = _llm_bodies(perso_mock, sid)[-1]
    assert second_request == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "type": "message", "content": first},
        {"role": "user", "content": "Second question"},
    ]
    assert wait_sent(perso_mock, sid, "ttstf") == [{"message": first}]


def test_process_chat_turns_never_reach_process_llm_requests(perso_mock: Any, client: Any) -> None:
    sid = perso_mock.create_session_id(using_stf_webrtc=False)
    perso_mock.set_llm_script(sid, _script())
    with client.create_session(sid, width=160, height=120) as session:
        session.process_chat("hello")
        _final_text(session.process_llm("Processor question"))
        session.process_chat("hello again")
        chat_first, llm, chat_second = _llm_bodies(perso_mock, sid)
    assert llm == [{"role": "user", "content": "Processor question"}]
    assert chat_second == [
        *chat_first,
        {"role": "assistant", "type": "message", "content": REPLY},
        {"role": "user", "content": "hello again"},
    ]


def test_process_chat_speaks_each_delta_emoji_free_and_trimmed_skipping_empty_ones(
    perso_mock: Any, open_session: Any
) -> None:
    sid = perso_mock.create_session_id()
    deltas = [" Hi ", "😀", "  ", "there 👋", "!"]
    events = [{"status": "success", "type": "message", "content": d} for d in deltas]
    perso_mock.set_llm_script(sid, LlmScript(rules=[Rule(pattern="hello", events=events)]))
    session = open_session(sid)
    assert session.process_chat("hello") == " Hi   there !"
    assert wait_sent(perso_mock, sid, "ttstf", 3) == [
        {"message": "Hi"},
        {"message": "there"},
        {"message": "!"},
    ]


def test_process_llm_turns_the_llm_state_on_while_it_runs(perso_mock: Any, client: Any) -> None:
    sid = perso_mock.create_session_id(using_stf_webrtc=False)
    perso_mock.set_llm_script(sid, _script())
    with client.create_session(sid, width=160, height=120) as session:
        states = StateRecorder()
        session.subscribe_chat_states(states)
        assert _final_text(session.process_llm("hello")) == REPLY
        wait_until(lambda: ChatState.LLM not in session.chat_states, what="LLM state off")
        states.wait_for(lambda calls: calls and calls[-1] == IDLE)
        assert states.snapshot() == [{ChatState.LLM}, IDLE]
