"""Misuse of the public API gets a clear perso_sync error at once, never a raw exception, a
stalled loop, a poisoned session or a hang: text that is not valid Unicode, blocking calls from
an async tool, closing the client under its sessions, nonsense timeouts, and a forked child
touching its parent's session."""

from __future__ import annotations

import math
import os
import select
import signal
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from _wait import wait_until

import perso_sync
from mock_server import MockPersoServer

pytestmark = pytest.mark.timeout(40)

LONE_SURROGATE = "hello \ud800 world"


def _tool(name: str, call: Callable[[dict[str, Any]], Any]) -> perso_sync.ChatTool:
    return perso_sync.ChatTool(
        name=name, description=name, parameters={"type": "object", "properties": {}}, call=call
    )


# -- row 3: text that UTF-8 cannot encode ------------------------------------------------------


def _surrogate_calls(
    session: perso_sync.Session, processor: perso_sync.LlmProcessor
) -> dict[str, Callable[[], object]]:
    def custom_chat() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            session.process_custom_chat(LONE_SURROGATE)

    return {
        "session.process_llm": lambda: list(session.process_llm(LONE_SURROGATE)),
        "session.process_chat": lambda: session.process_chat(LONE_SURROGATE, timeout=10),
        "session.process_ttstf": lambda: session.process_ttstf(LONE_SURROGATE),
        "session.process_custom_chat": custom_chat,
        "session.process_tts": lambda: session.process_tts(LONE_SURROGATE),
        "session.set_template(model)": lambda: session.set_template(LONE_SURROGATE, "dress"),
        "session.set_template(dress)": lambda: session.set_template("model", LONE_SURROGATE),
        "session.log_session_event": lambda: session.log_session_event(LONE_SURROGATE),
        "session.process_stf(message)": lambda: session.process_stf(
            b"RIFF" + bytes(100), format="wav", message=LONE_SURROGATE
        ),
        "session.send_message(data)": lambda: session.send_message(
            "custom", {"text": LONE_SURROGATE}
        ),
        "processor.process_llm": lambda: list(processor.process_llm(LONE_SURROGATE)),
        "processor.process_chat": lambda: processor.process_chat(LONE_SURROGATE),
        "processor.add_to_history": lambda: processor.add_to_history(
            {"role": "assistant", "content": LONE_SURROGATE}
        ),
    }


SURROGATE_ENTRY_POINTS = list(_surrogate_calls(None, None))  # type: ignore[arg-type]


@pytest.mark.parametrize("entry_point", SURROGATE_ENTRY_POINTS)
def test_a_lone_surrogate_is_refused_up_front_and_never_poisons_the_history(
    perso_mock: MockPersoServer, open_session: Any, entry_point: str
) -> None:
    session = open_session()
    processor = perso_sync.LlmProcessor(api_server=perso_mock.url, session_id=session.session_id)
    try:
        requests_before = len(perso_mock.journal.requests())
        with pytest.raises(perso_sync.InvalidInputError, match="lone surrogate"):
            _surrogate_calls(session, processor)[entry_point]()

        assert len(perso_mock.journal.requests()) == requests_before  # nothing was sent
        peer = perso_mock.peer(session.session_id)
        assert all(LONE_SURROGATE not in repr(message) for message in peer.received)
        assert session.get_message_history() == []
        assert session.get_chat_log() == []
        assert processor.get_history() == []
        # Both still work: nothing half-accepted broke later turns.
        assert session.process_chat("hello again", timeout=10)
        assert processor.process_chat("hello again")
    finally:
        processor.close()


def test_a_tool_result_with_a_lone_surrogate_does_not_break_the_turn_or_later_ones(
    perso_mock: MockPersoServer, open_session: Any
) -> None:
    echo = _tool("echo", lambda args: {"text": LONE_SURROGATE})
    session = open_session(client_tools=[echo])

    answer = session.process_chat("call tool echo", timeout=10)

    assert answer
    assert session.process_chat("and then?", timeout=10)
    assert len(perso_mock.sessions[session.session_id].llm_requests) == 3


# -- row 4: blocking calls from an async tool (on the runtime's loop thread) -------------------


def test_blocking_calls_from_an_async_tool_are_refused_at_once(
    perso_mock: MockPersoServer, open_session: Any, client: perso_sync.PersoClient
) -> None:
    outcomes: dict[str, str] = {}
    holder: list[perso_sync.Session] = []

    async def probe(args: dict[str, Any]) -> dict[str, Any]:
        session = holder[0]
        blocking: dict[str, Callable[[], object]] = {
            "session.process_tts": lambda: session.process_tts("Hi."),
            "session.log_session_event": lambda: session.log_session_event("from a tool"),
            "session.wait_until_idle": lambda: session.wait_until_idle(timeout=5),
            "session.process_ttstf": lambda: session.process_ttstf("Hi."),
            "session.process_chat": lambda: session.process_chat("hi", timeout=5),
            "session.stop_session": lambda: session.stop_session(),
            "client.get_llms": client.get_llms,
            "client.get_session_info": lambda: client.get_session_info(session.session_id),
        }
        for name, call in blocking.items():
            try:
                call()
                outcomes[name] = "ran"
            except perso_sync.RuntimeUsageError:
                outcomes[name] = "refused"
            except Exception as exc:  # noqa: BLE001 -- recorded for the assertion
                outcomes[name] = f"{type(exc).__name__}: {exc}"
        return {"probed": len(outcomes)}

    session = open_session(client_tools=[_tool("probe", probe)])
    holder.append(session)

    session.process_chat("call tool probe", timeout=20)

    assert outcomes == dict.fromkeys(outcomes, "refused")
    assert len(outcomes) == 8
    assert not session.closed
    assert perso_mock.journal.requests(endpoint="tts") == []


# -- row 11: closing the client while its sessions are open ------------------------------------


def test_closing_the_client_closes_its_open_sessions_cleanly(
    perso_mock: MockPersoServer, no_leaks: Any
) -> None:
    client = perso_sync.PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url)
    webrtc = client.create_session(perso_mock.create_session_id(), 64, 48, receive_video=False)
    rest_sid = perso_mock.create_session_id(using_stf_webrtc=False)
    rest_only = client.create_session(rest_sid, 64, 48)
    closes: dict[str, list[bool]] = {"webrtc": [], "rest": []}
    webrtc.on_close(closes["webrtc"].append)
    rest_only.on_close(closes["rest"].append)

    client.close()

    assert webrtc.closed
    assert rest_only.closed
    assert webrtc.close_status == perso_sync.CloseStatus(False, 200, "OK")
    assert rest_only.close_status == perso_sync.CloseStatus(False, 200, "OK")
    wait_until(lambda: closes == {"webrtc": [True], "rest": [True]}, what="on_close(True) x2")
    perso_mock.wait_for_status(webrtc.session_id, "TERMINATED")
    events = [r.body.get("event") for r in perso_mock.journal.requests(endpoint="event")]
    assert "SESSION_END" in events
    with pytest.raises(perso_sync.SessionClosedError):
        webrtc.process_tts("Too late.")
    with pytest.raises(perso_sync.SessionClosedError):
        rest_only.process_tts("Too late.")
    with pytest.raises(perso_sync.ClientClosedError):
        client.get_llms()


# -- row 12: one rule for every timeout --------------------------------------------------------

BAD_TIMEOUTS = [math.inf, -1, 0, math.nan, "x", True]


def _timeout_calls(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient, session: perso_sync.Session
) -> dict[str, Callable[[Any], object]]:
    def sid() -> str:
        return session.session_id

    return {
        "Session.process_chat": lambda t: session.process_chat("hi", timeout=t),
        "Session.wait_until_idle": lambda t: session.wait_until_idle(timeout=t),
        "Session.stop_session": lambda t: session.stop_session(timeout=t),
        "Session.start_process_stt": lambda t: session.start_process_stt(timeout=t),
        "Session.process_stf": lambda t: session.process_stf(b"RIFF" + bytes(100), timeout=t),
        "Session.frames": lambda t: session.frames(timeout=t),
        "Session.wait_voice_chat_sent": lambda t: session.wait_voice_chat_sent(timeout=t),
        "create_session(connect_timeout)": lambda t: client.create_session(
            perso_mock.create_session_id(), 64, 48, connect_timeout=t
        ),
        "create_session(ping_timeout)": lambda t: client.create_session(
            perso_mock.create_session_id(), 64, 48, ping_timeout=t
        ),
        "create_session(llm_timeout)": lambda t: client.create_session(
            perso_mock.create_session_id(), 64, 48, llm_timeout=t
        ),
        "LlmProcessor(timeout)": lambda t: perso_sync.LlmProcessor(
            api_server=perso_mock.url, session_id=sid(), timeout=t
        ),
        "LlmProcessor(turn_timeout)": lambda t: perso_sync.LlmProcessor(
            api_server=perso_mock.url, session_id=sid(), turn_timeout=t
        ),
        "LlmProcessor.process_chat": lambda t: perso_sync.LlmProcessor(
            api_server=perso_mock.url, session_id=sid()
        ).process_chat("hi", timeout=t),
        "PersoClient(timeout)": lambda t: perso_sync.PersoClient(
            api_server=perso_mock.url, timeout=t
        ),
    }


TIMEOUT_PARAMETERS = list(_timeout_calls(None, None, None))  # type: ignore[arg-type]


@pytest.mark.parametrize("parameter", TIMEOUT_PARAMETERS)
def test_every_timeout_refuses_inf_negative_zero_nan_text_and_bool(
    perso_mock: MockPersoServer,
    open_session: Any,
    client: perso_sync.PersoClient,
    parameter: str,
) -> None:
    session = open_session(receive_video=True)
    call = _timeout_calls(perso_mock, client, session)[parameter]
    sessions_before = len(perso_mock.journal.requests(endpoint="session_info"))
    for bad in BAD_TIMEOUTS:
        with pytest.raises(perso_sync.InvalidInputError, match=r"timeout|interval"):
            call(bad)
    assert len(perso_mock.journal.requests(endpoint="session_info")) == sessions_before
    assert not session.closed
    assert perso_sync.ChatState.RECORDING not in session.chat_states


def test_a_timeout_of_none_means_no_limit(open_session: Any) -> None:
    session = open_session()
    assert session.process_chat("hello", timeout=None)
    assert session.wait_until_idle(timeout=None)
    session.stop_session(timeout=None)
    assert session.closed


# -- row 13: a forked child and its parent's session -------------------------------------------

CHILD_DEADLINE = 8  # seconds; SIGALRM ends a child that hangs


def _child_uses_parent_session(session: perso_sync.Session, report: int) -> None:
    """Runs in the forked child; never returns (os._exit). Exit 0: every call was refused."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(CHILD_DEADLINE)
    code = 1
    try:
        calls: dict[str, Callable[[], object]] = {
            "process_chat": lambda: session.process_chat("from the child"),
            "process_llm": lambda: list(session.process_llm("from the child")),
            "process_ttstf": lambda: session.process_ttstf("From the child."),
            "process_tts": lambda: session.process_tts("From the child."),
            "clear_buffer": session.clear_buffer,
            "wait_until_idle": lambda: session.wait_until_idle(timeout=5),
            "stop_session": session.stop_session,
        }
        wrong = []
        for name, call in calls.items():
            try:
                call()
                wrong.append(f"{name}: ran")
            except perso_sync.RuntimeUsageError as exc:
                if "parent process" not in str(exc):
                    wrong.append(f"{name}: {exc}")
            except BaseException as exc:  # noqa: BLE001 -- reported to the parent
                wrong.append(f"{name}: {type(exc).__name__}: {exc}")
        if wrong:
            os.write(report, "\n".join(wrong).encode())
        else:
            code = 0
    except BaseException:  # noqa: BLE001 -- everything goes back to the parent
        os.write(report, traceback.format_exc().encode())
    finally:
        os.close(report)
        os._exit(code)


def test_a_forked_child_calling_its_parents_session_is_refused_at_once(
    perso_mock: MockPersoServer, open_session: Any
) -> None:
    session = open_session()
    assert session.process_chat("before the fork", timeout=10)
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child_uses_parent_session(session, write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        pidfd = os.pidfd_open(pid)
        try:
            exited, _, _ = select.select([pidfd], [], [], CHILD_DEADLINE + 5)
        finally:
            os.close(pidfd)
        if not exited:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        child_error = report.read().decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, child_error or "the child hung"

    # The parent's session is untouched.
    assert not session.closed
    assert session.process_chat("after the fork", timeout=10)
    assert perso_mock.sessions[session.session_id].status == "IN_PROGRESS"


def test_threads_are_not_affected_by_the_fork_check(open_session: Any) -> None:
    # The owner check is per process: another thread of the same process is fine.
    session = open_session()
    answers: list[str] = []
    worker = threading.Thread(target=lambda: answers.append(session.process_chat("hi", timeout=10)))
    worker.start()
    worker.join(15)
    assert answers
    assert answers[0]
