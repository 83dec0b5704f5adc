"""Mock sessions: their status, the events they received and their per-session settings.

Status moves CREATED → EXCHANGED (``exchange`` answered) → IN_PROGRESS (the WebRTC answerer
reports ``connected``; for a REST-only session, a ``SESSION_START`` event) → TERMINATED with a
``termination_reason``: ``GRACEFUL_TERMINATION`` (peer closed, or a ``SESSION_END`` event),
``SESSION_LOST_AFTER_CONNECTION`` (peer lost / failed), ``SESSION_EXPIRED_BEFORE_CONNECTION``
(not connected within ``settings["session_expiry_sec"]``; checked whenever the session is read).
Tests may also call :meth:`MockSession.terminate` with any reason.
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from mock_server.llm_script import LlmScript

CREATED = "CREATED"
EXCHANGED = "EXCHANGED"
IN_PROGRESS = "IN_PROGRESS"
TERMINATED = "TERMINATED"
ACTIVE_STATUSES = frozenset({CREATED, EXCHANGED, IN_PROGRESS})

GRACEFUL_TERMINATION = "GRACEFUL_TERMINATION"
SESSION_EXPIRED_BEFORE_CONNECTION = "SESSION_EXPIRED_BEFORE_CONNECTION"
SESSION_LOST_AFTER_CONNECTION = "SESSION_LOST_AFTER_CONNECTION"
SESSION_MISC_ERROR = "SESSION_MISC_ERROR"


def iso_now() -> str:
    """The current UTC time as the platform writes it: ``2024-05-02T09:05:55.395Z``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@attrs.define(kw_only=True, eq=False)
class SynthesizedSpeech:
    """A TTS result the mock produced, kept so STT can recognise it by duration."""

    text: str
    locale: str | None
    duration: float


@attrs.define(kw_only=True, eq=False)
class MockSession:
    """One session id of the mock platform. Mutable: tests may change any field.

    - ``params``: the creation body as received; ``capability``: list of capability names.
    - ``status``, ``termination_reason``, ``client_sdp`` / ``server_sdp`` (SDP text).
    - ``events``: ``[{"event", "detail", "created_at"}]`` posted to ``event/create/`` (anything
      the client sent is kept, even an unknown event name or a non-JSON body).
    - ``llm_script``: an :class:`~mock_server.llm_script.LlmScript` for this session only
      (``None`` → the server's ``llm_script``). ``llm_requests``: bodies of its LLM requests.
    - ``ice_servers``: overrides ``settings["ice_servers"]`` for this session when not None.
    - ``stt_text``: transcript for audio the mock did not synthesize (None → settings default).
    - ``peer_config``: the WebRTC answerer's ``PeerConfig`` for this session (created on first
      access; change it before ``exchange`` to e.g. stop pings or stall the file channel).
    - ``speeches``: recent TTS results (for the STT duration fallback).
    """

    session_id: str
    params: dict[str, Any]
    capability: list[str]
    created_at: str = attrs.field(factory=iso_now)
    created_monotonic: float = attrs.field(factory=time.monotonic)
    status: str = CREATED
    termination_reason: str | None = None
    client_sdp: str | None = None
    server_sdp: str | None = None
    connected_monotonic: float | None = None
    ended_monotonic: float | None = None
    events: list[dict[str, Any]] = attrs.field(factory=list)
    llm_script: LlmScript | None = None
    llm_requests: list[Any] = attrs.field(factory=list)
    ice_servers: list[dict[str, Any]] | None = None
    stt_text: str | None = None
    speeches: list[SynthesizedSpeech] = attrs.field(factory=list)
    tool_call_counter: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    _peer_config: Any = None
    _on_change: Callable[[], None] | None = attrs.field(default=None, repr=False)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    @property
    def peer_config(self) -> Any:
        """The answerer's PeerConfig (imported lazily: the WebRTC side is optional)."""
        if self._peer_config is None:
            from mock_server.webrtc import PeerConfig

            self._peer_config = PeerConfig()
        return self._peer_config

    @peer_config.setter
    def peer_config(self, value: Any) -> None:
        self._peer_config = value

    @property
    def active(self) -> bool:
        """Not TERMINATED yet."""
        return self.status in ACTIVE_STATUSES

    @property
    def is_webrtc(self) -> bool:
        """The session has a WebRTC capability (``STF_WEBRTC`` or ``STF_ONPREMISE``)."""
        return "STF_WEBRTC" in self.capability or "STF_ONPREMISE" in self.capability

    @property
    def event_names(self) -> list[str]:
        """The ``event`` of each recorded event, in order (handy in asserts)."""
        return [str(e.get("event")) for e in self.events]

    @property
    def duration_sec(self) -> int:
        """Whole seconds since the session connected (until it ended); 0 before."""
        if self.connected_monotonic is None:
            return 0
        end = self.ended_monotonic if self.ended_monotonic is not None else time.monotonic()
        return int(end - self.connected_monotonic)

    def mark_exchanged(self, client_sdp: str, server_sdp: str) -> None:
        """Keep both SDPs of the exchange; CREATED → EXCHANGED."""
        self.client_sdp = client_sdp
        self.server_sdp = server_sdp
        if self.status == CREATED:
            self.status = EXCHANGED
        self._changed()

    def mark_connected(self) -> None:
        """The peer connected: → IN_PROGRESS, and the duration starts."""
        if self.status in (CREATED, EXCHANGED):
            self.status = IN_PROGRESS
            self.connected_monotonic = time.monotonic()
            self._changed()

    def terminate(self, reason: str = GRACEFUL_TERMINATION) -> None:
        """Move to TERMINATED with ``reason`` (no effect when already terminated)."""
        if self.status == TERMINATED:
            return
        self.status = TERMINATED
        self.termination_reason = reason
        self.ended_monotonic = time.monotonic()
        self._changed()

    def expire_if_due(self, expiry_sec: float | None) -> None:
        """Terminate a session never connected within ``expiry_sec`` seconds of its creation."""
        if expiry_sec is None or self.status not in (CREATED, EXCHANGED):
            return
        if time.monotonic() - self.created_monotonic >= expiry_sec:
            self.terminate(SESSION_EXPIRED_BEFORE_CONNECTION)

    def remember_speech(self, speech: SynthesizedSpeech) -> None:
        """Keep what TTS synthesized for this session (the newest 50)."""
        self.speeches.append(speech)
        del self.speeches[:-50]


class SessionStore:
    """Session id → :class:`MockSession`; a read-only mapping for tests, thread-safe.

    ``server.sessions[sid]``, ``sid in server.sessions``, ``len(...)``, ``list(...)``,
    ``server.sessions.values()``, ``server.sessions.active()``.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._sessions: dict[str, MockSession] = {}
        self.expiry_sec: float | None = None

    def new_id(self) -> str:
        """A fresh session id shaped like the platform's."""
        # Shaped like the platform's ids: a prefix and URL-safe random text.
        return "plp-" + secrets.token_hex(12)

    def add(self, session: MockSession) -> None:
        """Store ``session`` under its id; waiters on a status are woken by its changes."""
        session._on_change = self._notify
        with self._lock:
            self._sessions[session.session_id] = session
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for_status(self, session_id: str, status: str, timeout: float) -> MockSession:
        """Block until the session has ``status``; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                session = self[session_id]
                if session.status == status:
                    return session
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"session status is {session.status}, not {status}, after {timeout}s"
                    )
                # Woken by every status change; the cap re-checks time-based expiry, which
                # happens on read without a notification.
                self._changed.wait(min(remaining, 0.1))

    def get(self, session_id: str) -> MockSession | None:
        """The session (expiry applied first), or None."""
        with self._lock:
            session = self._sessions.get(session_id)
        if session is not None:
            session.expire_if_due(self.expiry_sec)
        return session

    def __getitem__(self, session_id: str) -> MockSession:
        session = self.get(session_id)
        if session is None:
            raise KeyError(session_id)
        return session

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._sessions

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._sessions))

    def values(self) -> list[MockSession]:
        """Every session, expiry applied first."""
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.expire_if_due(self.expiry_sec)
        return sessions

    def active(self) -> list[MockSession]:
        """Sessions not yet TERMINATED (expiry applied first)."""
        return [s for s in self.values() if s.active]

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self._sessions.clear()
