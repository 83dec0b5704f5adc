"""Shared helpers of the integration tests (the mock server comes from the ``perso_mock``
fixture of ``mock_server.pytest_plugin``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mock_server import MockPersoServer
    from perso_sync.llm import LlmProcessor


@pytest.fixture
def llm_session(perso_mock: MockPersoServer) -> str:
    """A session id on the mock, ready for LLM turns."""
    return perso_mock.create_session_id()


@pytest.fixture
def make_processor(
    perso_mock: MockPersoServer, llm_session: str
) -> Iterator[Callable[..., LlmProcessor]]:
    """``make_processor(client_tools=[...], session_id=..., ...)``: an LlmProcessor on the mock,
    closed when the test ends."""
    from perso_sync import LlmProcessor

    made: list[LlmProcessor] = []

    def make(**kwargs: Any) -> LlmProcessor:
        kwargs.setdefault("api_server", perso_mock.url)
        kwargs.setdefault("session_id", llm_session)
        kwargs.setdefault("timeout", 10.0)
        processor = LlmProcessor(**kwargs)
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.close()
