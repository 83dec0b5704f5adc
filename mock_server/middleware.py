"""What every request of the mock goes through, in this order: CORS preflight (so a browser
running the official JS SDK can call the mock), journal the request (key redacted), auth
(account-scoped routes need the configured ``PersoLive-APIKey``: missing or wrong → 401;
session-scoped routes need a known session id: unknown → 404), the JSON nesting limit, fault
injection, then the route handler; and the CORS headers of every answer.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable

from aiohttp import web

from mock_server.context import (
    CLIENT_CLOSED_REQUEST,
    CLIENT_GONE_KEY,
    CTX_KEY,
    FAULT_KEY,
    RAW_KEY,
    ROUTES_KEY,
    SESSION_KEY,
    MockContext,
    Route,
)
from mock_server.errors import error_response, not_found, standard_error_for
from mock_server.faults import Fault
from mock_server.validation import MAX_JSON_DEPTH, json_nesting_too_deep, summarize_body

API_KEY_HEADER = "PersoLive-APIKey"


def abort_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _fault_response(request: web.Request, fault: Fault) -> web.StreamResponse:
    headers = dict(fault.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = str(math.ceil(fault.retry_after))
    status = fault.status or 500
    if not fault.has_body:
        body: bytes = json.dumps(standard_error_for(status, fault.retry_after)).encode()
        content_type = "application/json"
    elif fault.body is None:
        body, content_type = b"", "application/octet-stream"
    elif isinstance(fault.body, bytes):
        body, content_type = fault.body, "application/octet-stream"
    elif isinstance(fault.body, str):
        body = fault.body.encode("utf-8")
        content_type = "text/html" if fault.body.lstrip().startswith("<") else "text/plain"
    else:
        body, content_type = json.dumps(fault.body).encode(), "application/json"
    headers.setdefault("Content-Type", content_type)
    if fault.drop:
        return await _send_partial(request, status, headers, body)
    if not body:
        headers.pop("Content-Type", None)
    return web.Response(status=status, body=body, headers=headers)


async def _send_partial(
    request: web.Request, status: int, headers: dict[str, str], body: bytes
) -> web.StreamResponse:
    """Announce the whole body, send half of it, then drop the connection."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(body) or 1
    await response.prepare(request)
    if body[: len(body) // 2]:
        await response.write(body[: len(body) // 2])
    abort_connection(request)
    return response


@web.middleware
async def mock_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    ctx = request.app[CTX_KEY]
    if request.method == "OPTIONS":
        return web.Response(status=204)
    route_name = request.match_info.route.name
    route = request.app[ROUTES_KEY].get(route_name or "")
    raw = await request.read()
    request[RAW_KEY] = raw
    if request.path.startswith("/_mock/") and route is None:
        return await handler(request)  # the control API is not journaled
    session_id = request.match_info.get("session_id")
    seq = ctx.journal.record_http(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers=dict(request.headers),
        body=summarize_body(request.headers.get("Content-Type", ""), raw),
        endpoint=route.name if route else None,
        session_id=session_id,
    )
    status = 500
    task = asyncio.current_task()
    if task is not None:
        ctx.inflight.add(task)
    try:
        response = await _dispatch(request, ctx, route, session_id, handler)
        status = CLIENT_CLOSED_REQUEST if request.get(CLIENT_GONE_KEY) else response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if task is not None:
            ctx.inflight.discard(task)
        ctx.journal.set_status(seq, status)


async def _dispatch(
    request: web.Request,
    ctx: MockContext,
    route: Route | None,
    session_id: str | None,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    if route is None:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            # Unknown paths and wrong methods still get the standardized error body.
            if exc.status in (404, 405):
                code = "not_found" if exc.status == 404 else "method_not_allowed"
                detail = (
                    "Not found." if exc.status == 404 else f'Method "{request.method}" not allowed.'
                )
                return error_response(exc.status, "client_error", code, detail)
            raise
    if route.scope == "account":
        given = request.headers.get(API_KEY_HEADER)
        if not given:
            return error_response(
                401,
                "client_error",
                "not_authenticated",
                "Authentication credentials were not provided.",
            )
        if given != ctx.api_key:
            return error_response(401, "client_error", "authentication_failed", "Invalid API key.")
    if route.scope == "session":
        session = ctx.session(session_id or "")
        if session is None:
            return not_found()
        request[SESSION_KEY] = session
    if json_nesting_too_deep(request[RAW_KEY]):
        return error_response(
            400,
            "client_error",
            "parse_error",
            f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.",
        )
    fault = ctx.faults.take(route.name, session_id)
    if fault is not None:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            return await _fault_response(request, fault)
        request[FAULT_KEY] = fault
        if fault.drop and route.name != "llm":
            real = await handler(request)
            if isinstance(real, web.Response):
                body = real.body if isinstance(real.body, bytes) else b""
                headers = {"Content-Type": real.headers.get("Content-Type", "application/json")}
                return await _send_partial(request, real.status, headers, body)
            return real
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Allow-Headers", "*")
    response.headers.setdefault("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
    response.headers.setdefault("Access-Control-Expose-Headers", "ETag, Retry-After")
