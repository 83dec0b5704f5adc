"""The loop side of a session, driven without WebRTC: the server's messages as the WebRTC core
hands them over (on the runtime loop, through the hooks), the SPEAKING timer, the heartbeat and
closing, observed the way a user observes them (chat states, callbacks, how the session ended).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from perso_sync._runtime import get_runtime
from perso_sync._session_loop import SessionLoop
from perso_sync._session_subscribers import SessionSubscribers
from perso_sync.errors import InvalidResponseError, PersoConnectionError
from perso_sync.llm import LlmProcessor
from perso_sync.models import ChatState, SessionEvent
from tests._wait import wait_until

SESSION_ID = "sid-loop"
WAIT = 10.0


class _HeartbeatClient:
    """Stands in for the platform's session-event endpoint: records events, fails on demand."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.events: list[SessionEvent] = []

    def create_session_event(self, session_id: str, event: SessionEvent) -> None:
        self.events.append(event)
        if self.fail:
            raise PersoConnectionError("the platform is unreachable")


class _Session:
    """A loop side with its subscriber tables, as ``Session.__init__`` wires them."""

    def __init__(self, client: object = None, heartbeat_interval: float = 10.0) -> None:
        self.runtime = get_runtime()
        lock = threading.RLock()
        self.subscribers = SessionSubscribers(lock, SESSION_ID)
        # Never contacted: these tests run no LLM turn; the loop only closes it.
        processor = LlmProcessor(api_server="http://127.0.0.1:9", session_id=SESSION_ID)
        self.loop = SessionLoop(
            client=cast(Any, client),
            session_id=SESSION_ID,
            width=640,
            height=480,
            heartbeat_interval=heartbeat_interval,
            runtime=self.runtime,
            lock=lock,
            subscribers=self.subscribers,
            processor=processor,
        )
        self.states: list[frozenset[ChatState]] = []
        self.errors: list[BaseException] = []
        self.closes: list[bool] = []
        self.subscribers.add_state_subscriber(self.states.append, self._open)
        self.subscribers.error_handler.set(self.errors.append)
        self.subscribers.add_close_callback(self.closes.append, self._open)

    def _open(self) -> None:
        assert not self.loop.closing

    def on_loop(self, hook: Callable[..., None], *args: Any) -> None:
        """Call a hook on the runtime loop, as the WebRTC core does, and wait until it ran."""

        async def run() -> None:
            hook(*args)

        self.runtime.call(run, timeout=WAIT)

    def close(self) -> None:
        self.loop.finish_close(True, 200, "OK")


@pytest.fixture
def session() -> Iterator[_Session]:
    opened = _Session()
    yield opened
    opened.close()


def test_an_stf_makes_the_avatar_speaking_until_the_timer_ends_it(session: _Session) -> None:
    session.loop.spawn(session.loop.speaking_timer)
    session.loop.apply_state(lambda machine: machine.analyzing_up())  # a ttstf was sent
    session.on_loop(session.loop.on_server_message, "stf", {"duration": 0})

    assert session.loop.active_states() == {ChatState.SPEAKING}
    wait_until(lambda: session.states[-1:] == [frozenset()], WAIT, "SPEAKING to end")
    assert session.states == [
        frozenset({ChatState.ANALYZING}),
        frozenset({ChatState.SPEAKING}),
        frozenset(),
    ]


def test_an_stf_with_an_absurd_duration_still_ends_with_clear_buffer(session: _Session) -> None:
    session.loop.spawn(session.loop.speaking_timer)
    for _ in range(2):  # two ttstf sent
        session.loop.apply_state(lambda machine: machine.analyzing_up())
    session.on_loop(session.loop.on_server_message, "stf", {"duration": 10**400})
    session.on_loop(session.loop.on_server_message, "stf", {"duration": "soon"})
    assert session.loop.active_states() == {ChatState.SPEAKING}

    session.runtime.call(session.loop.clear, timeout=WAIT)  # REST-only: nothing to send

    assert session.loop.active_states() == frozenset()
    assert session.errors == []


def test_the_servers_stt_goes_to_the_stt_result_callback(session: _Session) -> None:
    heard: list[str] = []
    session.subscribers.stt_callback.set(heard.append)
    session.loop.apply_state(lambda machine: machine.analyzing_up())  # record-end-stt sent

    session.on_loop(session.loop.on_server_message, "stt", {"text": "hello there"})

    wait_until(lambda: heard, WAIT, "the STT result callback")
    assert heard == ["hello there"]
    assert session.loop.active_states() == frozenset()


def test_an_stt_error_ends_the_wait_for_a_transcript(session: _Session) -> None:
    session.loop.apply_state(lambda machine: machine.analyzing_up())
    assert session.loop.active_states() == {ChatState.ANALYZING}

    session.on_loop(session.loop.on_server_message, "stt-error", {})

    assert session.loop.active_states() == frozenset()


def test_message_watchers_each_get_their_own_copy(session: _Session) -> None:
    seen: list[dict[str, Any]] = []

    def spoil(data: dict[str, Any]) -> None:
        data["nested"]["value"] = "changed"

    session.subscribers.add_message_callback("custom", spoil)
    session.subscribers.add_message_callback("custom", seen.append)
    session.subscribers.add_message_callback("other", seen.append)

    session.on_loop(session.loop.on_server_message, "custom", {"nested": {"value": "sent"}})

    wait_until(lambda: seen, WAIT, "the watcher")
    session.subscribers.dispatcher.flush(WAIT)
    assert seen == [{"nested": {"value": "sent"}}]
    assert session.errors == []


def test_a_malformed_server_message_goes_to_the_error_handler(session: _Session) -> None:
    error = InvalidResponseError("not JSON")

    session.on_loop(session.loop.on_bad_message, error)

    wait_until(lambda: session.errors, WAIT, "the error handler")
    assert session.errors == [error]
    assert not session.loop.closed


def test_unknown_server_messages_change_nothing(session: _Session) -> None:
    session.on_loop(session.loop.on_server_message, "something-new", {"x": 1})

    session.subscribers.dispatcher.flush(WAIT)
    assert session.states == []
    assert session.errors == []


def test_a_lost_connection_closes_the_session_and_tells_on_close(session: _Session) -> None:
    session.on_loop(session.loop.on_closed, False, 408, "Request Timeout")

    wait_until(lambda: session.closes, WAIT, "on_close")
    assert session.closes == [False]
    assert session.loop.closed
    assert session.loop.closed_as == (408, "Request Timeout")
    # Closed: state changes are no longer announced, and a second close changes nothing.
    session.loop.apply_state(lambda machine: machine.analyzing_up())
    session.close()
    assert session.loop.closed_as == (408, "Request Timeout")
    assert session.states == []


def test_a_failed_heartbeat_closes_a_rest_only_session_as_lost() -> None:
    client = _HeartbeatClient(fail=True)
    session = _Session(client, heartbeat_interval=0.01)

    session.loop.spawn(session.loop.heartbeat)

    wait_until(lambda: session.closes, WAIT, "on_close")
    assert session.closes == [False]
    assert session.loop.closed_as == (408, "Request Timeout")
    assert client.events == [SessionEvent.SESSION_DURING]
    assert len(session.errors) == 1
    assert isinstance(session.errors[0], PersoConnectionError)
