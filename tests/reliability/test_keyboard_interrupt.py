"""Ctrl-C while the main thread is blocked in a perso_sync call: the call ends with
``KeyboardInterrupt``, the work on the loop is cancelled, and the runtime and the session stay
usable.

The interrupt is a real SIGINT sent to the main thread by a helper thread once the main thread
is seen blocked inside the call (its stack is inspected), so it always lands inside the call.
"""

from __future__ import annotations

from typing import Any

import pytest
from _reliability import interrupt_main_when, main_thread_blocked_in

import perso_sync
from mock_server import LlmScript, MockPersoServer

pytestmark = [pytest.mark.timeout(20), pytest.mark.usefixtures("default_sigint")]


def test_ctrl_c_during_process_llm(perso_mock: MockPersoServer, open_session: Any) -> None:
    session = open_session()
    sid = session.session_id
    # The first event comes at once, the next one only after 30 s: the turn hangs mid-stream.
    perso_mock.set_llm_script(sid, LlmScript(delay=30.0))

    with session.process_llm("hello") as stream:
        assert next(stream).type == "message"
        # The stream is read on this thread: it blocks in the socket read itself.
        helper, sent = interrupt_main_when(
            lambda: main_thread_blocked_in("read", "test_ctrl_c_during_process_llm")
        )
        with pytest.raises(KeyboardInterrupt):
            next(stream)
    helper.join(5)
    assert sent.is_set()

    # The interrupted turn was cancelled (a failed turn keeps no history); the next one runs.
    assert session.get_message_history() == []
    perso_mock.set_llm_script(sid, None)
    chunks = list(session.process_llm("hello again"))
    assert chunks[-1].type == "message"
    assert chunks[-1].finish
    assert not session.closed


def test_ctrl_c_during_process_stf(perso_mock: MockPersoServer, open_session: Any) -> None:
    session = open_session(peer={"stall_file_channel": True})
    peer_config = perso_mock.sessions[session.session_id].peer_config

    helper, sent = interrupt_main_when(lambda: main_thread_blocked_in("wait", "process_stf"))
    with pytest.raises(KeyboardInterrupt):
        session.process_stf(b"RIFF" + bytes(4000), format="wav")
    helper.join(5)
    assert sent.is_set()
    assert perso_sync.ChatState.ANALYZING not in session.chat_states  # undone on the way out

    peer_config.stall_file_channel = False
    file_ref = session.process_stf(b"RIFF" + bytes(4000), format="wav")
    assert file_ref
    assert session.wait_until_idle(timeout=8)
    assert not session.closed
