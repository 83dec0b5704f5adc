"""A live session whose server sends hostile ``message``-channel data, or is sent more than the
channel carries: the bad message is dropped (and reported) or refused with a clear error, and
the session lives on (real WebRTC on loopback, faults through the mock's ``Peer.send_raw``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _wait import wait_until

import perso_sync
import perso_sync._chat_state
from mock_server import MockPersoServer

pytestmark = pytest.mark.timeout(30)

SPEAKING = perso_sync.ChatState.SPEAKING


def _send_raw(perso_mock: MockPersoServer, session: perso_sync.Session, text: str) -> None:
    peer = perso_mock.peer(session.session_id)
    assert perso_mock.call(peer.send_raw, text), "the message channel is not open"


def test_a_message_nested_3000_deep_is_dropped_and_reported_and_the_session_lives(
    perso_mock: MockPersoServer, open_session: Any
) -> None:
    session = open_session()
    reported: list[BaseException] = []
    session.set_error_handler(reported.append)
    perso_mock.wait_for_status(session.session_id, "IN_PROGRESS")

    nested = "[" * 3000 + "]" * 3000
    _send_raw(perso_mock, session, '{"type": "stt", "data": {"text": ' + nested + "}}")

    wait_until(lambda: reported, what="the malformed message to reach the error handler")
    assert isinstance(reported[0], perso_sync.InvalidResponseError), reported
    assert "malformed" in str(reported[0])
    assert not session.closed
    assert session.close_status.live
    session.process_ttstf("Still here.")
    assert session.wait_until_idle(timeout=10)
    assert perso_mock.sessions[session.session_id].status == "IN_PROGRESS"


def test_an_stf_duration_of_1e300_is_clamped_so_speaking_ends_by_itself(
    perso_mock: MockPersoServer, open_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real cap is minutes long; a short one makes "ends by itself" observable here.
    # raising=False: before the clamp existed there was nothing to shorten, and SPEAKING
    # stayed on until clear_buffer().
    monkeypatch.setattr(perso_sync._chat_state, "MAX_STF_DURATION_MS", 500.0, raising=False)
    session = open_session()
    perso_mock.wait_for_status(session.session_id, "IN_PROGRESS")

    session.process_ttstf("Hello.")  # ANALYZING now, SPEAKING for >= 2 s after the mock's stf
    absurd = {"type": "stf", "data": {"message": "forever", "duration": 1e300}}
    _send_raw(perso_mock, session, json.dumps(absurd))
    wait_until(lambda: SPEAKING in session.chat_states, what="SPEAKING")

    assert session.wait_until_idle(timeout=15), session.chat_states
    assert not session.closed


@pytest.mark.parametrize("what", ["process_ttstf", "set_template"])
def test_a_300_kb_text_is_refused_with_the_data_channel_size_limit(
    perso_mock: MockPersoServer, open_session: Any, what: str
) -> None:
    session = open_session()
    big = "a" * 300_000
    call = {
        "process_ttstf": lambda: session.process_ttstf(big),
        "set_template": lambda: session.set_template(big, "dress"),
    }[what]

    with pytest.raises(perso_sync.InvalidInputError, match=r"at most \d+ bytes") as raised:
        call()
    assert "data channel" in str(raised.value)

    assert not session.closed
    assert session.get_chat_log() == []  # nothing of the refused text was kept
    assert perso_sync.ChatState.ANALYZING not in session.chat_states
    session.process_ttstf("Small enough.")
    assert session.wait_until_idle(timeout=10)
    assert [chat.text for chat in session.get_chat_log()] == ["Small enough."]
    assert session.process_chat("and a turn after it", timeout=10)
