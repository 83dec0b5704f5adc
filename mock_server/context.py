"""What every part of the mock's HTTP side shares: the :class:`MockContext` of one server,
the route table's row type, and the keys under which the middleware hands a request's
raw body, session and armed fault to the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from aiohttp import web

from mock_server.catalog import Catalog
from mock_server.faults import Fault, FaultRegistry
from mock_server.journal import Journal
from mock_server.llm_script import LlmScript
from mock_server.speech import match_uplink
from mock_server.state import (
    GRACEFUL_TERMINATION,
    SESSION_LOST_AFTER_CONNECTION,
    SESSION_MISC_ERROR,
    MockSession,
    SessionStore,
)


@attrs.define(kw_only=True, eq=False)
class MockContext:
    """Everything the routes share; owned by one MockPersoServer (or ``python -m mock_server``)."""

    api_key: str
    catalog: Catalog
    journal: Journal
    faults: FaultRegistry = attrs.field(factory=FaultRegistry)
    sessions: SessionStore = attrs.field(factory=SessionStore)
    llm_script: LlmScript = attrs.field(factory=LlmScript)
    answerer: Any = None
    seed_catalog: Catalog | None = None
    seed_api_key: str | None = None
    inflight: set[asyncio.Task[Any]] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        if self.seed_catalog is None:
            self.seed_catalog = self.catalog.copy()
        if self.seed_api_key is None:
            self.seed_api_key = self.api_key

    async def reset(self) -> None:
        """Back to the seeded state: peers closed, no sessions, faults, journal or scripts."""
        # Requests still in flight (e.g. a delayed "never answering" exchange) belong to the
        # previous test: cancel them so they cannot act on the fresh state later.
        current = asyncio.current_task()
        stale = [task for task in self.inflight if task is not current and not task.done()]
        for task in stale:
            task.cancel()
        if stale:
            await asyncio.wait(stale, timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.close_peers(), timeout=5)
        assert self.seed_catalog is not None
        self.catalog.restore(self.seed_catalog)
        self.api_key = self.seed_api_key or self.api_key
        self.sessions.clear()
        self.faults.clear()
        self.journal.clear()
        self.llm_script = LlmScript()

    def session(self, session_id: str) -> MockSession | None:
        self.sessions.expiry_sec = as_float(self.catalog.settings.get("session_expiry_sec"))
        return self.sessions.get(session_id)

    def active_sessions(self) -> list[MockSession]:
        self.sessions.expiry_sec = as_float(self.catalog.settings.get("session_expiry_sec"))
        return self.sessions.active()

    # -- callbacks of the WebRTC answerer (mock_server.webrtc.Answerer) -----------------------
    def on_datachannel_message(
        self, session_id: str, channel: str, direction: str, payload: Any
    ) -> None:
        self.journal.record_datachannel(session_id, channel, direction, payload)

    def on_peer_state(self, session_id: str, event: str) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            return
        if event == "connected":
            session.mark_connected()
        elif event == "closed":
            session.terminate(GRACEFUL_TERMINATION)
        elif event in ("lost", "failed"):
            # A peer that never connected did not get "lost after connection".
            connected = session.connected_monotonic is not None
            session.terminate(SESSION_LOST_AFTER_CONNECTION if connected else SESSION_MISC_ERROR)

    def on_uplink_speech(self, session_id: str, voiced_seconds: float) -> str | None:
        """Legacy voice chat: the session's recent TTS text whose length the take matches."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        matched = match_uplink(voiced_seconds, list(reversed(session.speeches)))
        return None if matched is None else str(matched.text)

    def get_answerer(self) -> Any:
        if self.answerer is None:
            # Imported here: the HTTP side works without the WebRTC side (and without aiortc).
            from mock_server.webrtc import Answerer

            self.answerer = Answerer(
                on_message=self.on_datachannel_message,
                on_state=self.on_peer_state,
                on_speech=self.on_uplink_speech,
            )
        return self.answerer

    async def close_peers(self) -> None:
        if self.answerer is not None:
            await self.answerer.close_all()

    async def end_session(self, session: MockSession, reason: str) -> None:
        """The server ends a session itself: mark it and drop its peer, so that the client sees
        its connection go away as it would on the platform."""
        session.terminate(reason)
        if self.answerer is not None:
            await self.answerer.close(session.session_id)


CTX_KEY: web.AppKey[MockContext] = web.AppKey("mock_context", MockContext)


def _request_key(name: str, kind: type[Any]) -> Any:
    # Typed request keys exist in recent aiohttp only; older ones take plain strings.
    factory = getattr(web, "RequestKey", None)
    return factory(name, kind) if factory is not None else name


RAW_KEY = _request_key("mock_raw", bytes)
SESSION_KEY = _request_key("mock_session", MockSession)
FAULT_KEY = _request_key("mock_fault", Fault)
CLIENT_GONE_KEY = _request_key("mock_client_gone", bool)
#: Journal status of a stream the client closed before its end (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499


def as_float(value: Any) -> float | None:
    """A catalog setting as seconds or a count: None when unset or not a number (a bool too)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


Handler = Callable[[web.Request, MockContext], Awaitable[web.StreamResponse]]


@attrs.frozen
class Route:
    """One row of the route table (``mock_server.app.ROUTES``); ``name`` is the endpoint name
    faults and the journal use."""

    method: str
    path: str
    name: str
    scope: str  # "account" (API key), "session" (session id), "public"
    handler: Handler


#: Route name -> route, as the application serves them (set by ``build_app``).
ROUTES_KEY: web.AppKey[Mapping[str, Route]] = web.AppKey("mock_routes", Mapping)
