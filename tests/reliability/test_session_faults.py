"""Live sessions against a misbehaving server (real WebRTC on loopback): each fault ends in the
documented exception or ``on_close`` reason, with no hang and nothing leaked (``no_leaks``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from _wait import wait_until

import perso_sync
import perso_sync.session
from mock_server import MockPersoServer

pytestmark = pytest.mark.timeout(20)

LOST = perso_sync.CloseStatus(False, 408, "Request Timeout")


class CloseRecorder:
    """An ``on_close`` callback the test can wait for."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.done = threading.Event()

    def __call__(self, manual: bool) -> None:
        self.calls.append(manual)
        self.done.set()

    def wait(self, timeout: float = 8.0) -> list[bool]:
        assert self.done.wait(timeout), "on_close was not called"
        return self.calls


def test_message_channel_closed_by_the_server_closes_the_session_as_lost(
    perso_mock: MockPersoServer, open_session: Any
) -> None:
    session = open_session()
    closes = CloseRecorder()
    session.on_close(closes)
    sid = session.session_id
    perso_mock.wait_for_status(sid, "IN_PROGRESS")

    perso_mock.call(perso_mock.peer(sid).close_message_channel)

    assert closes.wait() == [False]
    assert session.close_status == LOST
    with pytest.raises(perso_sync.SessionClosedError):
        session.process_ttstf("nobody is listening")


def test_no_server_pings_closes_the_session_as_lost(
    perso_mock: MockPersoServer, open_session: Any
) -> None:
    session = open_session(ping_timeout=0.6)
    closes = CloseRecorder()
    session.on_close(closes)
    perso_mock.wait_for_status(session.session_id, "IN_PROGRESS")

    perso_mock.peer(session.session_id).stop_pings()

    assert closes.wait() == [False]
    assert session.close_status == LOST
    # The server sees the client go (it closed its side), not a silent vanishing.
    perso_mock.wait_for_status(session.session_id, "TERMINATED")


def test_exchange_failing_is_an_api_error(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.fail("exchange", 500)
    with pytest.raises(perso_sync.ApiError) as raised:
        client.create_session(sid, width=64, height=48)
    assert raised.value.error_code == 500


def test_exchange_dropped_mid_response_is_a_connection_error(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.drop("exchange")
    with pytest.raises(perso_sync.PersoConnectionError):
        client.create_session(sid, width=64, height=48)
    assert len(perso_mock.journal.requests(endpoint="exchange")) == 1  # POST: no retry


def test_exchange_never_answering_is_a_webrtc_timeout(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.delay("exchange", 30)
    with pytest.raises(perso_sync.Timeout, match="WebRTC connection timeout"):
        client.create_session(sid, width=64, height=48, connect_timeout=0.5)


def test_ice_servers_failing_is_an_api_error(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.empty("ice_servers", 500)
    with pytest.raises(perso_sync.ApiError):
        client.create_session(sid, width=64, height=48)
    assert perso_mock.journal.requests(endpoint="exchange") == []  # stopped before the offer


def test_stalled_file_channel_is_an_stf_error_within_the_upload_timeout(
    perso_mock: MockPersoServer, open_session: Any
) -> None:
    # The whole-transfer bound is 30 s by default (docs/PROTOCOL.md §8); a short one keeps this
    # fast.
    session = open_session(peer={"stall_file_channel": True})
    reported: list[BaseException] = []
    session.set_error_handler(reported.append)

    with pytest.raises(perso_sync.STFError, match="timed out"):
        session.process_stf(b"RIFF" + bytes(4000), format="wav", timeout=0.5)

    assert not session.closed  # an upload failing does not end the session
    assert perso_sync.ChatState.ANALYZING not in session.chat_states
    wait_until(lambda: reported, what="the error handler")
    assert isinstance(reported[0], perso_sync.STFError)
