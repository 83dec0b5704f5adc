"""Input checks shared by every public entry point: text, timeouts, and who may call.

One place decides what a valid text or timeout is, so that every method refuses the same bad
input with the same :class:`~perso_sync.errors.InvalidInputError` before anything is sent:

- **Text** (:func:`check_text`) must be a ``str`` that UTF-8 can encode. A lone surrogate such as
  ``"\\ud800"`` (what a bad ``bytes.decode(..., "surrogateescape")`` or a cut JSON escape leaves
  behind) cannot be sent to the server; accepted into a session's history it would make every
  later LLM request of that session fail, so it is refused where it enters.
- **Timeouts** (:func:`check_timeout`): ``None`` means no limit; anything else must be a positive,
  finite number of seconds. ``inf``, ``nan``, ``0``, negative numbers, ``True`` and strings are
  refused.
- **JSON bodies** (:func:`json_body`): the LLM request body, encoded like ``JSON.stringify``
  (compact separators); a lone surrogate that reached it anyway (inside a tool's result, say)
  is written as its ``\\uXXXX`` escape instead of breaking the request.
- **Who calls** (:func:`refuse_loop_thread`): blocking methods refuse to run on the runtime's
  event-loop thread (an ``async def`` tool or callback), where they would stall every session.

Only the standard library is imported here (``import perso_sync`` stays light).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from perso_sync.errors import InvalidInputError, RuntimeUsageError

__all__ = [
    "check_json_text",
    "check_seconds",
    "check_text",
    "check_timeout",
    "json_body",
    "refuse_loop_thread",
]


def check_text(name: str, value: object, *, allow_blank: bool = False) -> str:
    """``value`` as a str that can be sent; :class:`InvalidInputError` naming ``name`` if not.

    Refused: a non-``str``, a text UTF-8 cannot encode (a lone surrogate), and, unless
    ``allow_blank``, a text that is empty or only whitespace.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, not {type(value).__name__}")
    if not allow_blank and not value.strip():
        raise InvalidInputError(f"{name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start : exc.end]
        raise InvalidInputError(
            f"{name} contains {bad!r} at index {exc.start}, which is not valid Unicode text "
            "(a lone surrogate) and cannot be sent"
        ) from None
    return value


def check_json_text(name: str, value: object) -> None:
    """:class:`InvalidInputError` when a string anywhere inside the JSON-able ``value`` (a
    history entry, a message's data) holds a lone surrogate. Values JSON cannot write at all
    are left to the caller's own check."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{name} contains {text[exc.start : exc.end]!r}, which is not valid Unicode text "
            "(a lone surrogate) and cannot be sent"
        ) from None


def check_timeout(name: str, value: object, *, allow_none: bool = True) -> float | None:
    """``value`` as seconds (None = no limit); :class:`InvalidInputError` unless it is None
    (when allowed) or a positive, finite number."""
    if value is None:
        if allow_none:
            return None
        raise InvalidInputError(f"{name} must be a positive number of seconds, not None")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        none_ok = " or None (no limit)" if allow_none else ""
        raise InvalidInputError(
            f"{name} must be a positive, finite number of seconds{none_ok}, not {value!r}"
        )
    return float(value)


def check_seconds(name: str, value: object) -> float:
    """Like :func:`check_timeout` for a duration that must be given (None is refused too)."""
    seconds = check_timeout(name, value, allow_none=False)
    assert seconds is not None
    return seconds


def json_body(body: Any) -> bytes:
    """UTF-8 JSON of ``body`` as ``JSON.stringify`` writes it (a lone surrogate, which UTF-8
    cannot encode, becomes its ``\\uXXXX`` escape); :class:`InvalidInputError` when ``body`` is
    not JSON-able."""
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"the request body cannot be written as JSON: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Only lone surrogates fail here; ASCII mode escapes them (and everything non-ASCII).
        return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def refuse_loop_thread(what: str) -> None:
    """:class:`RuntimeUsageError` when called on the perso_sync runtime's event-loop thread.

    Cheap when the runtime was never started (its module is not even imported then).
    """
    runtime_module = sys.modules.get("perso_sync._runtime")
    if runtime_module is None:
        return
    runtime = runtime_module._runtime
    if runtime is not None and runtime.in_loop_thread():
        raise RuntimeUsageError(
            f"{what} blocks and was called on the perso_sync runtime's event-loop thread (from "
            "an async tool or async callback); it would stall every session. Call it from a "
            "plain (sync) tool or another thread instead."
        )
