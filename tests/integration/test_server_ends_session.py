"""When the platform ends a session itself, the client's session closes as not manual."""

from __future__ import annotations

from typing import Any

import _session_helpers as helpers
from _session_helpers import Recorder

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
