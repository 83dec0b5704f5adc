"""Fault injection for the mock server's HTTP endpoints.

A fault is armed for an endpoint name (or ``"*"`` for every endpoint), optionally only for one
session id, and fires ``times`` times (``None`` = until cleared); then the endpoint behaves
normally again. The first armed fault that matches a request wins; faults are consumed in the
order they were added. ``server.reset()`` clears them all.

Endpoint names: ``llm_types``, ``tts_types``, ``stt_types``, ``model_styles``,
``background_images``, ``prompts``, ``documents``, ``mcp_servers``, ``text_normalizations``,
``text_normalization_download``, ``text_normalization_file`` (the CSV blob), ``session_templates``,
``session_template``, ``create_session``, ``session_info``, ``ice_servers``, ``exchange``,
``event``, ``stt``, ``tts``, ``llm``.

Examples::

    server.faults.fail("tts", 500)                        # standard error JSON body, once
    server.faults.fail("llm_types", 400, body={"type": "client_error", "errors": [...]})
    server.faults.html("prompts", 502)                    # an HTML proxy page
    server.faults.empty("documents", 504)                 # no body at all
    server.faults.rate_limit("llm_types", retry_after=0)  # 429 + Retry-After
    server.faults.delay("exchange", 30)                   # never answers (in a client's timeout)
    server.faults.drop("session_info")                    # connection closed mid-response
    server.faults.sse_truncate()                          # LLM stream cut mid-event
    server.faults.sse_garbage("not an sse line")          # LLM stream with a junk line
    server.faults.sse_split()                             # events split inside UTF-8 chars
    server.faults.add("stt", status=503, body="", times=2, session_id=sid)  # the general form

``fault.hits`` counts how many times a fault fired; ``server.faults.fired`` lists (endpoint, fault)
in firing order.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import attrs

_UNSET: Any = object()


@attrs.define(kw_only=True, eq=False)
class Fault:
    """One armed fault (see the module docstring). Fields:

    - ``endpoint``: route name or ``"*"``; ``session_id``: only requests of that session.
    - ``status``: answer with this status instead of the real response. ``body``: JSON-able →
      JSON; ``str`` → sent as is (``text/html`` if it starts with ``<``, else ``text/plain``);
      ``bytes`` → raw; ``None`` → empty body. Unset → the standard error JSON for the status.
    - ``headers``: extra response headers; ``retry_after``: adds ``Retry-After`` (seconds).
    - ``delay``: seconds to wait before answering (applies to the real response too when no
      status is given).
    - ``drop``: send the response headers and part of the body, then close the connection.
    - ``sse``: ``"truncate"`` (stream cut in the middle of an event, no ``done``),
      ``"garbage"`` (a junk line ``sse_line`` after the first event) or ``"split"`` (every
      event written in two pieces, cut inside a multi-byte UTF-8 character when it has one);
      LLM endpoint only.
    - ``times``: how many requests it applies to (``None`` = all until cleared).
    """

    endpoint: str
    session_id: str | None = None
    status: int | None = None
    body: Any = _UNSET
    headers: dict[str, str] = attrs.field(factory=dict)
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    sse: str | None = None
    sse_line: str = "this line is not server-sent events"
    times: int | None = 1
    hits: int = 0

    @property
    def has_body(self) -> bool:
        return self.body is not _UNSET

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class FaultRegistry:
    """Armed faults; thread-safe (tests arm them, the server's loop consumes them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.fired: list[tuple[str, Fault]] = []

    def add(self, endpoint: str, **fields: Any) -> Fault:
        """Arm a fault for ``endpoint``; keyword fields as in :class:`Fault`.

        Raises ``ValueError`` (naming the field) for a value the server could not act on, so a
        bad fault is refused when armed instead of breaking every request it matches.
        """
        if not isinstance(endpoint, str) or not endpoint:
            raise ValueError("endpoint must be a route name or '*'")
        fault = Fault(endpoint=endpoint, **fields)
        _validate(fault)
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(self, endpoint: str, status: int = 500, body: Any = _UNSET, **fields: Any) -> Fault:
        """Answer with ``status`` (and the standard error JSON unless ``body`` is given)."""
        return self.add(endpoint, status=status, body=body, **fields)

    def html(self, endpoint: str, status: int = 502, **fields: Any) -> Fault:
        """Answer with an HTML error page, as a proxy in front of the platform would."""
        page = (
            f"<html><head><title>{status} Bad Gateway</title></head>"
            f"<body><center><h1>{status} Bad Gateway</h1></center><hr>"
            "<center>nginx</center></body></html>"
        )
        return self.add(endpoint, status=status, body=page, **fields)

    def empty(self, endpoint: str, status: int = 504, **fields: Any) -> Fault:
        """Answer with ``status`` and an empty body."""
        return self.add(endpoint, status=status, body=None, **fields)

    def rate_limit(self, endpoint: str, retry_after: float = 1, **fields: Any) -> Fault:
        """Answer 429 Too Many Requests with a ``Retry-After`` header."""
        return self.add(endpoint, status=429, retry_after=retry_after, **fields)

    def delay(self, endpoint: str, seconds: float, **fields: Any) -> Fault:
        """Wait ``seconds`` before answering normally (a long delay = never answering)."""
        return self.add(endpoint, delay=seconds, **fields)

    def drop(self, endpoint: str, **fields: Any) -> Fault:
        """Close the connection in the middle of the response."""
        return self.add(endpoint, drop=True, **fields)

    def sse_truncate(self, **fields: Any) -> Fault:
        """Cut the next LLM stream in the middle of an event (no ``done`` event)."""
        return self.add("llm", sse="truncate", **fields)

    def sse_garbage(
        self, line: str = "this line is not server-sent events", **fields: Any
    ) -> Fault:
        """Insert a junk line after the first event of the next LLM stream."""
        return self.add("llm", sse="garbage", sse_line=line, **fields)

    def sse_split(self, **fields: Any) -> Fault:
        """Write each event of the next LLM stream in two pieces (inside a UTF-8 character)."""
        return self.add("llm", sse="split", **fields)

    def take(self, endpoint: str, session_id: str | None) -> Fault | None:
        """The fault that applies to this request (its hit counted), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.exhausted:
                    continue
                if fault.endpoint not in ("*", endpoint):
                    continue
                if fault.session_id is not None and fault.session_id != session_id:
                    continue
                fault.hits += 1
                self.fired.append((endpoint, fault))
                return fault
        return None

    def remove(self, fault: Fault) -> None:
        """Disarm ``fault`` (no effect when it is not armed)."""
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        """Disarm every fault and forget which fired."""
        with self._lock:
            self._faults.clear()
            self.fired.clear()

    @property
    def armed(self) -> list[Fault]:
        """Faults that will still fire."""
        with self._lock:
            return [f for f in self._faults if not f.exhausted]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate(fault: Fault) -> None:
    """``ValueError`` naming the first field of ``fault`` the server could not use."""
    if fault.session_id is not None and not isinstance(fault.session_id, str):
        raise ValueError("session_id must be a string or null")
    status = fault.status
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise ValueError(f"status must be an HTTP status (an integer 100-599), got {status!r}")
    if not isinstance(fault.headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in fault.headers.items()
    ):
        raise ValueError("headers must be an object of string names to string values")
    if fault.retry_after is not None and not (
        _number(fault.retry_after) and fault.retry_after >= 0
    ):
        raise ValueError(f"retry_after must be seconds >= 0, got {fault.retry_after!r}")
    if not (_number(fault.delay) and fault.delay >= 0):
        raise ValueError(f"delay must be seconds >= 0, got {fault.delay!r}")
    if not isinstance(fault.drop, bool):
        raise ValueError(f"drop must be true or false, got {fault.drop!r}")
    if fault.sse not in (None, "truncate", "garbage", "split"):
        raise ValueError("sse must be 'truncate', 'garbage' or 'split'")
    if not isinstance(fault.sse_line, str):
        raise ValueError("sse_line must be a string")
    times = fault.times
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be an integer >= 1 or null (until cleared), got {times!r}")
