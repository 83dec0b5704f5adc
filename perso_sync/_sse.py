"""Sans-IO parser of the LLM stream (docs/PROTOCOL.md §6): bytes in, typed events out.

It accepts the platform's framing (one ``data: {json}`` line per event, no blank lines) and
standard server-sent events (blank lines between events, ``\\r\\n`` or ``\\r`` line ends, ``:``
comment lines, ``event:``/``id:``/``retry:`` fields, an event's ``data:`` lines joined with
``\\n``). A UTF-8 character split across reads is safe because lines are cut as bytes and only
complete lines are decoded; a last line without a newline is handled by :meth:`SseParser.close`.

Bad peer input never raises: it becomes one :class:`StreamFailed` event, after which the parser
ignores the rest of the stream (the turn reports it as ``LLMStreamingResponseError``). Only a
caller's misuse raises (``feed`` after ``close``).

The hot path is one ``bytes.split`` per read and one UTF-8 decode plus one JSON decode per line;
a partial line is only appended, never rescanned, so feeding is O(n) whatever the read sizes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.decoder import scanstring as _c_scanstring  # type: ignore[attr-defined]
from typing import Any

import attrs

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "LlmEvent",
    "RemoteToolResult",
    "SseParser",
    "StreamFailed",
    "TextDelta",
    "ToolCalls",
    "Unknown",
]

# The largest event (one line, or the data lines of one standard-SSE event) we buffer.
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


@attrs.frozen
class TextDelta:
    """A piece of the assistant's answer (``type: "message"``), emoji not yet removed."""

    text: str


@attrs.frozen
class ToolCalls:
    """The LLM asks the client to run tools. ``tool_calls`` are the event's dicts, verbatim
    (``function.arguments`` is still a JSON string)."""

    content: str
    tool_calls: tuple[dict[str, Any], ...]


@attrs.frozen
class RemoteToolResult:
    """The result of a remote (MCP) tool the server ran itself; it goes into history with its
    ``type`` as the server sent it (``"tool_call"``)."""

    tool_call_id: str
    content: str
    type: str = "tool_call"


@attrs.frozen
class StreamFailed:
    """The stream reported a failure (``status != "success"``: description = its ``reason``)
    or could not be parsed (description says what was wrong)."""

    description: str


@attrs.frozen
class Unknown:
    """An event of a type this client does not know (e.g. the final ``done``); ignored."""

    type: str


LlmEvent = TextDelta | ToolCalls | RemoteToolResult | StreamFailed | Unknown

_IGNORED_FIELDS = (b"event", b"id", b"retry")


_decode_json = json.JSONDecoder().decode


def _loads(raw: bytes | bytearray) -> Any:
    """JSON from UTF-8 bytes (UnicodeDecodeError is a ValueError, like a JSON error)."""
    return _decode_json(raw.decode("utf-8"))


# The usual text delta, with or without spaces after separators. A line that matches is decoded
# with the C string scanner alone (exactly what a full decode gives, for this shape), about twice
# as fast as decoding the whole object. JSON whitespace only: str.isspace() is wider.
_JSON_SPACE = " \t\n\r"
scanstring: Callable[[str, int], tuple[str, int]] = _c_scanstring
_MESSAGE_PREFIX = re.compile(
    r'data: \{[ \t\n\r]*"status"[ \t\n\r]*:[ \t\n\r]*"success"[ \t\n\r]*,'
    r'[ \t\n\r]*"type"[ \t\n\r]*:[ \t\n\r]*"message"[ \t\n\r]*,'
    r'[ \t\n\r]*"content"[ \t\n\r]*:[ \t\n\r]*"'
)


def _one_line_event(line: bytes | bytearray) -> LlmEvent:
    """The event of a ``data: {...}`` line; ValueError when it is not one whole JSON value."""
    text = line.decode("utf-8")
    match = _MESSAGE_PREFIX.match(text)
    if match is not None:
        content, end = scanstring(text, match.end())
        if text[end:].strip(_JSON_SPACE) == "}":
            return TextDelta(content)
    return event_from_json(_decode_json(text[6:]))


def _preview(raw: bytes | bytearray, limit: int = 120) -> str:
    text = bytes(raw[:limit]).decode("utf-8", errors="replace")
    return text + ("..." if len(raw) > limit else "")


def event_from_json(obj: Any) -> LlmEvent:
    """Turn one decoded event object into a typed event (pure; exposed for tests)."""
    if type(obj) is dict and obj.get("type") == "message" and obj.get("status") == "success":
        content = obj.get("content")
        if type(content) is str:  # the common case, decided in three lookups
            return TextDelta(content)
    if not isinstance(obj, dict):
        return StreamFailed(f"stream event is not a JSON object: {type(obj).__name__}")
    status = obj.get("status")
    if status != "success":
        reason = obj.get("reason")
        if isinstance(reason, str) and reason:
            return StreamFailed(reason)
        return StreamFailed(f"stream event with status {status!r} and no reason")
    kind = obj.get("type")
    if kind not in ("message", "tool_call"):
        # Unknown types are ignored whatever their content (e.g. a usage report whose content
        # is an object): they must never cost the turn its text.
        return Unknown(kind if isinstance(kind, str) else "")
    content = obj.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        return StreamFailed(f"stream event content is not a string: {type(content).__name__}")
    if kind == "message":
        return TextDelta(content)
    if obj.get("role") == "tool":
        call_id = obj.get("tool_call_id")
        if not isinstance(call_id, str):
            return StreamFailed("remote tool result without a tool_call_id")
        return RemoteToolResult(call_id, content, kind)
    return _tool_calls(obj.get("tool_calls"), content)


def _tool_calls(calls: Any, content: str) -> LlmEvent:
    if not isinstance(calls, list):
        return StreamFailed("tool_call event without a tool_calls list")
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function.get("name"), str)
        ):
            return StreamFailed(f"malformed tool call: {call!r:.200}")
    return ToolCalls(content, tuple(calls))


class SseParser:
    """Incremental parser: ``feed(bytes)`` as data arrives, ``close()`` at end of stream."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._buffer = bytearray()  # the last, incomplete line
        self._cr_pending = False  # the last read ended with "\r": a following "\n" is its pair
        self._data: list[
            bytes | bytearray
        ] = []  # data lines of a standard-SSE event not yet complete
        self._data_size = 0
        self._failed = False
        self._closed = False

    @property
    def failed(self) -> bool:
        """True once a StreamFailed was returned; later input is ignored."""
        return self._failed

    def feed(self, data: bytes) -> list[LlmEvent]:
        """Take the next bytes of the stream; return the events they complete."""
        if self._closed:
            raise RuntimeError("SseParser.feed() after close()")
        if self._failed or not data:
            return []
        if self._cr_pending and data[:1] == b"\n":
            data = data[1:]
        self._cr_pending = data[-1:] == b"\r"
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in data:  # the middle of a line: keep it, never rescan it
            self._buffer += data
            if len(self._buffer) > self._max_event_bytes:
                return [self._fail(f"a stream line exceeds {self._max_event_bytes} bytes")]
            return []
        if self._buffer:
            self._buffer += data
            lines: list[bytes] | list[bytearray] = self._buffer.split(b"\n")
        else:
            lines = data.split(b"\n")
        self._buffer = bytearray(lines.pop())
        events: list[LlmEvent] = []
        for line in lines:
            # Hot path: a whole event on one line (platform framing), nothing held.
            if not self._data and line[:7] == b"data: {":
                try:
                    event = _one_line_event(line)
                except (ValueError, RecursionError):
                    pass  # the general path below holds it or reports it
                else:
                    events.append(event)
                    if type(event) is StreamFailed:
                        self._failed = True
                        self._drop_buffer()
                        return events
                    continue
            self._line(line, events)
            if self.failed:  # (a property: re-read after the call)
                self._drop_buffer()
                return events
        if len(self._buffer) > self._max_event_bytes:
            events.append(self._fail(f"a stream line exceeds {self._max_event_bytes} bytes"))
        return events

    def close(self) -> list[LlmEvent]:
        """End of stream: parse a last line without newline and any unfinished event."""
        if self._closed:
            return []
        self._closed = True
        if self._failed:
            return []
        events: list[LlmEvent] = []
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer.clear()
        if not self._failed and self._data:
            self._dispatch(events)
        return events

    def _drop_buffer(self) -> None:
        self._buffer.clear()
        self._data.clear()

    def _fail(self, description: str) -> StreamFailed:
        self._failed = True
        self._drop_buffer()
        return StreamFailed(description)

    def _line(self, line: bytes | bytearray, events: list[LlmEvent]) -> None:
        line = line.strip()
        if line.startswith(b"data:"):
            value = line[5:]
            if not self._data:
                # Platform framing (and one-line standard events): the line is the event.
                try:
                    obj = _loads(value)
                except (ValueError, RecursionError):  # incl. bad UTF-8; maybe the first of many
                    self._hold(value, events)
                    return
                events.append(event_from_json(obj))
                self._failed = isinstance(events[-1], StreamFailed)
                return
            self._continue(value, events)
        elif not line:
            if self._data:
                self._dispatch(events)
        elif line[:1] == b":":
            return  # comment (often a keep-alive)
        else:
            field = line.split(b":", 1)[0].strip()
            if field not in _IGNORED_FIELDS:
                events.append(self._fail(f"unexpected stream line: {_preview(line)!r}"))

    def _hold(self, value: bytes | bytearray, events: list[LlmEvent]) -> None:
        self._data.append(value)
        self._data_size += len(value)
        if self._data_size > self._max_event_bytes:
            events.append(self._fail(f"a stream event exceeds {self._max_event_bytes} bytes"))

    def _continue(self, value: bytes | bytearray, events: list[LlmEvent]) -> None:
        # A later data line: either the next line of a multi-line event, or (platform framing)
        # a new event, in which case the held lines were never valid JSON.
        joined = b"\n".join([*self._data, value])
        try:
            obj = _loads(joined)
        except (ValueError, RecursionError):
            if not self._starts_an_event(value):
                self._hold(value, events)
                return
            events.append(self._fail(f"unparsable stream data: {_preview(self._data[0])!r}"))
            return
        self._data.clear()
        self._data_size = 0
        events.append(event_from_json(obj))
        self._failed = isinstance(events[-1], StreamFailed)

    @staticmethod
    def _starts_an_event(value: bytes | bytearray) -> bool:
        # A complete event object on its own line (platform framing); a scalar or an object
        # without "status" is more likely a line of a pretty-printed multi-line event.
        try:
            obj = _loads(value)
        except (ValueError, RecursionError):
            return False
        return isinstance(obj, dict) and "status" in obj

    def _dispatch(self, events: list[LlmEvent]) -> None:
        joined = b"\n".join(self._data)
        self._data.clear()
        self._data_size = 0
        if not joined.strip():
            return  # a standard-SSE event with empty data (e.g. a keep-alive): nothing to say
        try:
            obj = _loads(joined)
        except (ValueError, RecursionError):
            events.append(self._fail(f"unparsable stream data: {_preview(joined)!r}"))
            return
        events.append(event_from_json(obj))
        self._failed = isinstance(events[-1], StreamFailed)
