"""Shared helpers of the Session integration tests (public API against the mock server).

Everything waits on events or with a deadline; nothing sleeps to "let it happen".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _wait import wait_until

import perso_sync
from perso_sync.models import ChatState

# Small video: the mock encodes VP8 for every session on our 2 shared cores.
WIDTH, HEIGHT = 160, 120

A = ChatState.ANALYZING
S = ChatState.SPEAKING
IDLE: frozenset[ChatState] = frozenset()


class Recorder:
    """A thread-safe callback that records its arguments and lets tests wait for them."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.threads: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, *args: Any) -> None:
        with self._cond:
            self.calls.append(args[0] if len(args) == 1 else args)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], object], timeout: float = 5.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.calls), timeout):
                pytest.fail(f"timed out after {timeout}s; calls so far: {self.calls!r}")

    def wait_count(self, count: int, timeout: float = 5.0) -> None:
        self.wait_for(lambda calls: len(calls) >= count, timeout)

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.calls)


class StateRecorder(Recorder):
    """Subscriber of chat states: ``calls`` are the active sets in delivery order."""

    def wait_idle_after(self, state: ChatState, timeout: float = 10.0) -> None:
        """Wait until ``state`` was seen and, later, the empty set."""

        def done(calls: list[Any]) -> bool:
            seen = [i for i, active in enumerate(calls) if state in active]
            return bool(seen) and any(not active for active in calls[seen[0] :])

        self.wait_for(done, timeout)


@pytest.fixture
def client(perso_mock: Any) -> Iterator[perso_sync.PersoClient]:
    """A PersoClient talking to the mock server."""
    with perso_sync.PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url) as c:
        yield c


@pytest.fixture
def open_session(perso_mock: Any, client: perso_sync.PersoClient) -> Iterator[Callable[..., Any]]:
    """``open_session(sid=None, **options)`` → an open Session, stopped at teardown.

    ``sid`` defaults to a new WebRTC session id; ``peer=`` sets mock PeerConfig fields for it
    (read by the mock when the offer arrives), e.g. ``peer={"ms_per_char": 1}``.
    """
    opened: list[Any] = []

    def make(sid: str | None = None, *, peer: dict[str, Any] | None = None, **options: Any) -> Any:
        if sid is None:
            sid = perso_mock.create_session_id()
        config = perso_mock.sessions[sid].peer_config
        config.ms_per_char = 1.0  # 300 ms clips: SPEAKING lasts ~2.3 s, not seconds per word
        for key, value in (peer or {}).items():
            setattr(config, key, value)
        options.setdefault("width", WIDTH)
        options.setdefault("height", HEIGHT)
        session = client.create_session(sid, **options)
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.stop_session()


def llm_requests(perso_mock: Any, sid: str) -> list[Any]:
    """The LLM requests the mock got for ``sid``."""
    return perso_mock.journal.requests(endpoint="llm", session_id=sid)


def sent_messages(perso_mock: Any, sid: str, msg_type: str) -> list[dict[str, Any]]:
    """``data`` of every ``msg_type`` message the client sent on the message channel."""
    return [
        entry.payload.get("data") or {}
        for entry in perso_mock.journal.messages(
            session_id=sid, channel="message", direction="in", type=msg_type
        )
    ]


def wait_sent(
    perso_mock: Any, sid: str, msg_type: str, count: int = 1, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Like :func:`sent_messages`, once the mock has received at least ``count`` of them."""
    wait_until(
        lambda: len(sent_messages(perso_mock, sid, msg_type)) >= count,
        timeout,
        what=f"{count} {msg_type!r} message(s) at the mock",
    )
    return sent_messages(perso_mock, sid, msg_type)
