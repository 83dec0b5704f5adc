"""How a session ends when the platform ends it, or when its owner (module function) closes."""

from __future__ import annotations

from typing import Any

import _session_helpers as helpers
import pytest
from _session_helpers import Recorder, wait_until

import perso_sync

client = helpers.client
open_session = helpers.open_session


def test_server_side_session_end_closes_the_client_session(
    perso_mock: Any, client: Any, open_session: Any
) -> None:
    session = open_session()
    closed = Recorder()
    session.on_close(closed)
    client.create_session_event(session.session_id, "SESSION_END", "ended by the platform")
    closed.wait_count(1, timeout=15)
    assert closed.calls == [False]
    assert session.closed
    assert perso_mock.sessions[session.session_id].termination_reason == "GRACEFUL_TERMINATION"


def test_module_level_create_session_closes_its_own_client(perso_mock: Any) -> None:
    sid = perso_mock.create_session_id()
    session = perso_sync.create_session(
        session_id=sid, width=64, height=48, api_server=perso_mock.url
    )
    closed = Recorder()
    session.on_close(closed)
    session.stop_session()
    closed.wait_count(1)
    wait_until(lambda: session._client.closed, what="the session's own client to close")
    with pytest.raises(perso_sync.ClientClosedError):
        session._client.get_session_info(sid)
