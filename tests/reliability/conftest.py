"""Fixtures of the reliability suite: a client, sessions, and the leak check around each test.

Every test here goes through the public API against the ``perso_mock`` fixture's mock server.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from _reliability import Snapshot

import perso_sync

if TYPE_CHECKING:
    from mock_server import MockPersoServer

#: Small video: the mock encodes VP8 for every session on shared cores.
WIDTH, HEIGHT = 64, 48


def _warm_up(server: MockPersoServer) -> None:
    # Start the one runtime thread and fill the shared LLM connection pools before the baseline
    # (all long-lived by design; see _reliability): the process_llm iterator's (caller side)
    # and the process_chat turns' (loop side).
    from perso_sync._runtime import get_runtime

    get_runtime()
    sid = server.create_session_id()
    with perso_sync.LlmProcessor(api_server=server.url, session_id=sid) as processor:
        for _ in processor.process_llm("warm up"):
            pass
        processor.process_chat("warm up")


@pytest.fixture
def no_leaks(perso_mock: MockPersoServer) -> Iterator[Snapshot]:
    """Fails the test (at teardown) if a thread or descriptor it opened is still there once
    everything was closed and the mock dropped its side (bounded wait)."""
    _warm_up(perso_mock)
    perso_mock.reset()
    before = Snapshot.take()
    yield before
    # The mock's own peers and in-flight requests are not the client's: close them first.
    perso_mock.reset()
    before.assert_no_leaks()


@pytest.fixture
def client(perso_mock: MockPersoServer, no_leaks: Snapshot) -> Iterator[perso_sync.PersoClient]:
    """A PersoClient on the mock (no retries: fault tests count requests), closed after."""
    with perso_sync.PersoClient(
        api_key=perso_mock.api_key, api_server=perso_mock.url, max_retries=0
    ) as made:
        yield made


@pytest.fixture
def open_session(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> Iterator[Callable[..., perso_sync.Session]]:
    """``open_session(peer={...}, **options)``: a new WebRTC session on the mock (small video,
    no video decoding), stopped at teardown; ``peer`` sets mock PeerConfig fields first."""
    opened: list[perso_sync.Session] = []

    def make(*, peer: dict[str, Any] | None = None, **options: Any) -> perso_sync.Session:
        sid = perso_mock.create_session_id()
        config = perso_mock.sessions[sid].peer_config
        config.ms_per_char = 1.0
        config.fps = 5
        for key, value in (peer or {}).items():
            setattr(config, key, value)
        options.setdefault("width", WIDTH)
        options.setdefault("height", HEIGHT)
        options.setdefault("receive_video", False)
        session = client.create_session(sid, **options)
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.stop_session()


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, restored after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
