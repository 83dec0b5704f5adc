"""The platform's standardized error bodies (docs/PROTOCOL.md §2)."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web


def error_body(kind: str, code: str, detail: str, attr: str | None = None) -> dict[str, Any]:
    """The platform's standardized error body."""
    return {"type": kind, "errors": [{"code": code, "detail": detail, "attr": attr}]}


def error_response(
    status: int, kind: str, code: str, detail: str, attr: str | None = None
) -> web.Response:
    return web.json_response(error_body(kind, code, detail, attr), status=status)


def standard_error_for(status: int, retry_after: float | None = None) -> dict[str, Any]:
    """The error body the platform would send with ``status`` (used by faults)."""
    if status == 401:
        return error_body(
            "client_error", "not_authenticated", "Authentication credentials were not provided."
        )
    if status == 403:
        return error_body(
            "client_error", "permission_denied", "You do not have permission to do this."
        )
    if status == 404:
        return error_body("client_error", "not_found", "Not found.")
    if status == 429:
        wait = math.ceil(retry_after or 1)
        return error_body(
            "client_error",
            "throttled",
            f"Request was throttled. Expected available in {wait} seconds.",
        )
    if status >= 500:
        return error_body("server_error", "error", "A server error occurred.")
    return error_body("client_error", "invalid", "Invalid request.")


def not_found() -> web.Response:
    return error_response(404, "client_error", "not_found", "Not found.")
