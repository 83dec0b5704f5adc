"""What the mock server saw: every HTTP request and every data-channel message.

Tests query it instead of guessing::

    req = server.journal.last(endpoint="create_session")
    assert req.body["capability"] == ["STF_WEBRTC", "LLM"]
    assert req.headers["PersoLive-APIKey"] == "***"          # the key value is never stored
    msg = server.journal.wait_for(lambda e: e.kind == "datachannel" and e.type == "stf", 5)

Entries are :class:`JournalEntry` objects, appended in arrival order. Thread-safe: the server's
loop thread appends while the test thread reads. The API key is redacted from header values (every
sensitive header) and from any string in the query or body equal to it.

Bounded, so that neither a long-running ``python -m mock_server`` nor a client sending huge bodies
makes it hold unbounded memory:

- per entry: a request body or data-channel payload whose JSON form is longer than
  ``max_entry_bytes`` (default 64 KiB) is stored as ``{"truncated": True, "size": <length of its
  JSON form>, "head": <its first max_entry_bytes characters>}`` (plus ``"type"`` for a
  data-channel message that had one), after the key was redacted from the whole of it; a body
  nested deeper than ``MAX_DEPTH`` levels is stored as ``{"truncated": True, "size": ...,
  "nested_too_deep": True}``;
- in total: at most ``max_entries`` entries (default 100 000) and ``max_total_bytes`` (default
  64 MiB, estimated from each entry's stored body/payload and headers); beyond either, the oldest
  entries are dropped first. ``stored_bytes`` is the current estimate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs

REDACTED = "***"
SENSITIVE_HEADERS = frozenset({"persolive-apikey", "authorization", "cookie"})
#: Deeper structures are not kept (nor walked: redaction recurses) but summarized.
MAX_DEPTH = 100
#: What an entry costs beyond its body/payload (fields, header names), for the total budget.
_ENTRY_OVERHEAD = 256


@attrs.frozen(kw_only=True)
class JournalEntry:
    """One HTTP request (``kind="http"``) or data-channel message (``kind="datachannel"``).

    HTTP fields: ``method``, ``path``, ``query`` (dict, last value wins), ``headers`` (dict,
    sensitive values redacted), ``body`` (decoded JSON; for multipart a summary
    ``{"fields": {...}, "files": {name: {"filename", "content_type", "size"}}}``; for other
    bodies the text, or ``{"binary": size}``; ``None`` when empty), ``endpoint`` (the route
    name, e.g. ``"create_session"``, ``"llm"``; ``None`` for unknown paths), ``status`` (the
    response status, ``None`` while the response is still being written, e.g. a stream; ``499``
    when the client closed an LLM stream before its end).
    Data-channel fields: ``channel`` (``"message"`` / ``"file"``), ``direction`` (``"in"`` =
    client→server, ``"out"`` = server→client), ``payload`` (a decoded dict or a string), and
    ``type`` (the message's ``type`` when the payload is a dict).
    Both: ``kind``, ``time`` (``time.time()``), ``session_id`` (or ``None``), ``seq``.
    """

    kind: str
    seq: int
    time: float
    session_id: str | None = None
    method: str | None = None
    path: str | None = None
    query: dict[str, str] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)
    body: Any = None
    endpoint: str | None = None
    status: int | None = None
    channel: str | None = None
    direction: str | None = None
    payload: Any = None

    @property
    def type(self) -> str | None:
        """The data-channel message type (``"ping"``, ``"ttstf"`` ...) when known."""
        if isinstance(self.payload, dict):
            value = self.payload.get("type")
            return value if isinstance(value, str) else None
        return None

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["type"] = self.type
        return out


class Journal:
    """Thread-safe, append-only log of requests and data-channel messages (see module doc)."""

    def __init__(
        self,
        secrets: Callable[[], list[str]] | None = None,
        max_entries: int = 100_000,
        max_entry_bytes: int = 64 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        # Bounded (module docstring): a long-running `python -m mock_server` journals a ping per
        # session per second, and a client may send bodies of any size.
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes
        self._entries: list[JournalEntry] = []
        self._sizes: list[int] = []  # the estimated size of each entry, in step with _entries
        self.stored_bytes = 0
        self._cond = threading.Condition()
        self._seq = 0
        self._secrets = secrets or (lambda: [])

    # -- writing (server side) ------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _append(self, entry: JournalEntry, size: int) -> None:
        self._entries.append(entry)
        self._sizes.append(size)
        self.stored_bytes += size
        # The oldest go first: beyond max_entries, then while over the byte budget (the newest
        # entry always stays, whatever its size).
        drop = max(0, len(self._entries) - self.max_entries)
        dropped_bytes = sum(self._sizes[:drop])
        while (
            drop < len(self._entries) - 1
            and self.stored_bytes - dropped_bytes > self.max_total_bytes
        ):
            dropped_bytes += self._sizes[drop]
            drop += 1
        if drop:
            del self._entries[:drop]
            del self._sizes[:drop]
            self.stored_bytes -= dropped_bytes
        self._cond.notify_all()

    def _capped(self, value: Any, kind: str | None = None) -> tuple[Any, int]:
        """``value`` as stored (truncated beyond ``max_entry_bytes``) and its estimated size."""
        if value is None:
            return None, 0
        if _too_deep(value):
            return {"truncated": True, "size": None, "nested_too_deep": True}, 64
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) <= self.max_entry_bytes:
            return value, len(text)
        capped: dict[str, Any] = {"truncated": True, "size": len(text)}
        if kind is not None:
            capped["type"] = kind
        capped["head"] = text[: self.max_entry_bytes]
        return capped, self.max_entry_bytes + 64

    def redact(self, value: Any) -> Any:
        """``value`` with every string equal to (or containing) a secret replaced."""
        secrets = [s for s in self._secrets() if s]
        if _too_deep(value):
            return value  # not walked (that recurses); replaced by a summary before storing
        return _redact(value, secrets)

    def record_http(
        self,
        *,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        endpoint: str | None,
        session_id: str | None,
    ) -> int:
        """Append a request; returns its ``seq`` so the status can be set later."""
        safe_headers = {
            name: (REDACTED if name.lower() in SENSITIVE_HEADERS else value)
            for name, value in headers.items()
        }
        # Redacted whole first, then truncated: a cut can never leave part of the key.
        stored_body, body_size = self._capped(self.redact(body))
        stored_query, query_size = self._capped(self.redact(query))
        stored_path, path_size = self._capped(self.redact(path))
        stored_headers = self.redact(safe_headers)
        headers_size = sum(len(k) + len(v) for k, v in stored_headers.items())
        size = _ENTRY_OVERHEAD + body_size + query_size + path_size + headers_size
        with self._cond:
            seq = self._next_seq()
            self._append(
                JournalEntry(
                    kind="http",
                    seq=seq,
                    time=time.time(),
                    session_id=session_id,
                    method=method,
                    path=stored_path,
                    query=stored_query,
                    headers=stored_headers,
                    body=stored_body,
                    endpoint=endpoint,
                ),
                size,
            )
        return seq

    def set_status(self, seq: int, status: int) -> None:
        """Set the response status of the HTTP entry ``seq`` once it is known (server side)."""
        with self._cond:
            for index in range(len(self._entries) - 1, -1, -1):
                entry = self._entries[index]
                if entry.seq == seq:
                    self._entries[index] = attrs.evolve(entry, status=status)
                    break
            self._cond.notify_all()

    def record_datachannel(
        self, session_id: str, channel: str, direction: str, payload: Any
    ) -> None:
        """Record one data-channel message (server side): JSON text decoded, binary as its
        length, secrets redacted."""
        if isinstance(payload, str):
            # Text messages are JSON on the message channel; keep them decoded when they are.
            try:
                decoded = json.loads(payload)
            except (ValueError, RecursionError):
                decoded = payload
            payload = decoded if isinstance(decoded, dict) else payload
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            payload = {"binary": len(payload)}
        kind = payload.get("type") if isinstance(payload, dict) else None
        stored, size = self._capped(self.redact(payload), kind if isinstance(kind, str) else None)
        with self._cond:
            self._append(
                JournalEntry(
                    kind="datachannel",
                    seq=self._next_seq(),
                    time=time.time(),
                    session_id=session_id,
                    channel=channel,
                    direction=direction,
                    payload=stored,
                ),
                _ENTRY_OVERHEAD + size,
            )

    def clear(self) -> None:
        """Forget every entry."""
        with self._cond:
            self._entries.clear()
            self._sizes.clear()
            self.stored_bytes = 0
            self._cond.notify_all()

    # -- reading (tests) ------------------------------------------------------------------
    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def __iter__(self) -> Iterator[JournalEntry]:
        return iter(self.entries())

    def entries(
        self, predicate: Callable[[JournalEntry], bool] | None = None, **match: Any
    ) -> list[JournalEntry]:
        """A snapshot of the entries matching every ``field=value`` (and ``predicate``).

        Fields: any :class:`JournalEntry` attribute or ``type``; e.g.
        ``entries(kind="http", endpoint="tts", session_id=sid)``,
        ``entries(kind="datachannel", direction="in", type="ttstf")``.
        """
        with self._cond:
            snapshot = list(self._entries)
        return [e for e in snapshot if _matches(e, match) and (predicate is None or predicate(e))]

    def requests(self, **match: Any) -> list[JournalEntry]:
        """HTTP entries matching ``match`` (see :meth:`entries`)."""
        return self.entries(kind="http", **match)

    def messages(self, **match: Any) -> list[JournalEntry]:
        """Data-channel entries matching ``match`` (see :meth:`entries`)."""
        return self.entries(kind="datachannel", **match)

    def last(
        self, predicate: Callable[[JournalEntry], bool] | None = None, **match: Any
    ) -> JournalEntry | None:
        """The newest entry matching ``match`` (see :meth:`entries`), or None."""
        found = self.entries(predicate, **match)
        return found[-1] if found else None

    def wait_for(
        self,
        predicate: Callable[[JournalEntry], bool] | None = None,
        timeout: float = 5.0,
        **match: Any,
    ) -> JournalEntry:
        """Block until an entry matches (already present ones count); TimeoutError after
        ``timeout`` seconds. Use it instead of sleeping for data-channel messages."""

        def first_match() -> JournalEntry | None:
            for entry in self._entries:
                if _matches(entry, match) and (predicate is None or predicate(entry)):
                    return entry
            return None

        with self._cond:  # every append notifies
            found = self._cond.wait_for(first_match, timeout)
        if found is None:
            raise TimeoutError(f"no journal entry matched {match or predicate!r}")
        return found

    def to_list(self) -> list[dict[str, Any]]:
        """Every entry as a JSON-able dict (what ``GET /_mock/journal`` returns)."""
        return [entry.to_dict() for entry in self.entries()]


def _matches(entry: JournalEntry, match: dict[str, Any]) -> bool:
    return all(getattr(entry, key) == value for key, value in match.items())


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` (JSON-like) nests more than ``limit`` containers (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _redact(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value
