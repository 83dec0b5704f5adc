"""pytest plugin: the ``perso_mock`` and ``perso_mock_factory`` fixtures.

Registered through the ``pytest11`` entry point, so any test suite gets these fixtures once
``perso_sync`` is installed (with its ``mock`` extra, which brings aiohttp)::

    def test_settings(perso_mock):
        client = PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url)
        assert client.get_llms()

``perso_mock`` is function-scoped: every test sees the seeded catalog, no sessions, no faults and
an empty journal. For speed, one server thread serves the whole pytest session and is ``reset()``
before each test. Its API key is ``"test-key"``.

``perso_mock_factory(**kwargs)`` starts a dedicated server (same arguments as
``MockPersoServer``, e.g. ``api_key=`` or ``catalog=``) that is stopped when the test ends.

This module imports nothing heavy at import time: pytest loads it in every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mock_server import MockPersoServer

DEFAULT_TEST_API_KEY = "test-key"
"""The API key of the ``perso_mock`` server and, unless given, of ``perso_mock_factory``'s."""


@pytest.fixture(scope="session")
def _perso_mock_shared() -> Iterator[MockPersoServer]:
    from mock_server import MockPersoServer

    server = MockPersoServer(api_key=DEFAULT_TEST_API_KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def perso_mock(_perso_mock_shared: MockPersoServer) -> Iterator[MockPersoServer]:
    """A running mock Perso server with fresh state (seeded catalog, no sessions, no faults)."""
    _perso_mock_shared.reset()
    yield _perso_mock_shared
    # Close what the test left open (peer connections, streams) before the next test starts.
    _perso_mock_shared.reset()


@pytest.fixture
def perso_mock_factory() -> Iterator[Callable[..., MockPersoServer]]:
    """A factory of dedicated mock servers, each stopped when the test ends."""
    from mock_server import MockPersoServer

    started: list[MockPersoServer] = []

    def make(**kwargs: Any) -> MockPersoServer:
        kwargs.setdefault("api_key", DEFAULT_TEST_API_KEY)
        server = MockPersoServer(**kwargs)
        server.start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(started):
            server.stop()
