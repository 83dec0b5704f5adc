"""Turn a non-2xx HTTP answer (status + raw body) into an ``ApiError`` (docs/PROTOCOL.md §2). Pure.

The platform sends ``{"type": ..., "errors": [{"code", "detail", "attr"}]}`` and the client takes
``errors[0]``. Anything else still becomes an ``ApiError`` with ``code="UNKNOWN_ERROR"``: a body
without error entries, an HTML page from a proxy (502), an empty body (504), bytes that are not
UTF-8. No decoder exception ever escapes.
"""

from __future__ import annotations

import json
from typing import Any

from perso_sync.errors import ApiError

__all__ = ["BODY_EXCERPT_CHARS", "UNKNOWN_ERROR", "api_error_from_response"]

UNKNOWN_ERROR = "UNKNOWN_ERROR"
BODY_EXCERPT_CHARS = 200


def _no_details(status: int) -> ApiError:
    return ApiError(status, UNKNOWN_ERROR, f"Server returned status {status} with no error details")


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    # A list or number where a string belongs: keep it readable rather than fail.
    return json.dumps(value, ensure_ascii=False, default=str)


def api_error_from_response(status: int, body: bytes, content_type: str | None = None) -> ApiError:
    """Build the ``ApiError`` for an HTTP ``status`` and its raw ``body``.

    ``content_type`` is informational: the body is tried as JSON whatever the header says
    (proxies mislabel both ways). Never raises.
    """
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        return ApiError(
            status,
            UNKNOWN_ERROR,
            f"Server returned status {status} with an empty body",
        )
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        payload = None
        parsed = False
    else:
        parsed = True
    if not parsed or not isinstance(payload, dict):
        kind = "a non-JSON" if not parsed else "an unexpected JSON"
        if content_type:
            kind += f" ({content_type.split(';', 1)[0].strip()})"
        excerpt = text[:BODY_EXCERPT_CHARS]
        return ApiError(
            status,
            UNKNOWN_ERROR,
            f"Server returned status {status} with {kind} body: {excerpt!r}",
        )
    errors = payload.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return _no_details(status)
    first = errors[0]
    code = _as_text(first.get("code")) or UNKNOWN_ERROR
    detail = _as_text(first.get("detail"))
    if detail is None:
        detail = f"Server returned status {status} with no error details"
    attr = _as_text(first.get("attr")) or None
    return ApiError(status, code, detail, attr)
