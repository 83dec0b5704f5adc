"""The mock Perso platform's HTTP side: the aiohttp application and its route table, every
endpoint of docs/PROTOCOL.md §3–§4.

The handlers live by concern in ``routes_settings``, ``routes_session``, ``routes_speech`` and
``routes_llm``; what every request goes through (CORS, journal, auth, faults) in
:mod:`mock_server.middleware`; the shared state in :mod:`mock_server.context`. Every error
body has the platform's standardized shape ``{"type", "errors": [{code, detail, attr}]}``
(:mod:`mock_server.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from mock_server.context import CTX_KEY, ROUTES_KEY, MockContext, Route
from mock_server.control import add_control_routes
from mock_server.errors import error_body
from mock_server.llm_script import Rule, ToolCall
from mock_server.middleware import add_cors_headers, mock_middleware
from mock_server.routes_llm import llm
from mock_server.routes_session import (
    create_event,
    create_session,
    exchange,
    get_ice_servers,
    get_session_info,
    new_session,
    session_info,
)
from mock_server.routes_settings import (
    CSV_BLOB_PATH,
    list_handler,
    model_styles,
    session_template,
    session_templates,
    text_normalization_download,
    text_normalization_file,
)
from mock_server.routes_speech import stt, tts
from mock_server.validation import SessionParamsError, parse_multipart

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/settings/llm_type/", "llm_types", "account", list_handler("llm_types")),
    Route("GET", "/api/v1/settings/tts_type/", "tts_types", "account", list_handler("tts_types")),
    Route("GET", "/api/v1/settings/stt_type/", "stt_types", "account", list_handler("stt_types")),
    Route("GET", "/api/v1/settings/modelstyle/", "model_styles", "account", model_styles),
    Route(
        "GET",
        "/api/v1/background_image/",
        "background_images",
        "account",
        list_handler("background_images"),
    ),
    Route("GET", "/api/v1/prompt/", "prompts", "account", list_handler("prompts")),
    Route("GET", "/api/v1/document/", "documents", "account", list_handler("documents")),
    Route(
        "GET", "/api/v1/settings/mcp_type/", "mcp_servers", "account", list_handler("mcp_servers")
    ),
    Route(
        "GET",
        "/api/v1/settings/text_normalization_config/",
        "text_normalizations",
        "account",
        list_handler("text_normalizations"),
    ),
    Route(
        "GET",
        "/api/v1/settings/text_normalization_config/{config_id}/download/",
        "text_normalization_download",
        "account",
        text_normalization_download,
    ),
    Route("GET", CSV_BLOB_PATH, "text_normalization_file", "public", text_normalization_file),
    Route("GET", "/api/v1/session_template/", "session_templates", "account", session_templates),
    Route(
        "GET",
        "/api/v1/session_template/{template_id}/",
        "session_template",
        "account",
        session_template,
    ),
    Route("POST", "/api/v1/session/", "create_session", "account", create_session),
    Route("GET", "/api/v1/session/{session_id}/", "session_info", "session", get_session_info),
    Route(
        "GET",
        "/api/v1/session/{session_id}/ice-servers/",
        "ice_servers",
        "session",
        get_ice_servers,
    ),
    Route("POST", "/api/v1/session/{session_id}/exchange/", "exchange", "session", exchange),
    Route("POST", "/api/v1/session/{session_id}/event/create/", "event", "session", create_event),
    Route("POST", "/api/v1/session/{session_id}/stt/", "stt", "session", stt),
    Route("POST", "/api/v1/session/{session_id}/tts/", "tts", "session", tts),
    Route("POST", "/api/v1/session/{session_id}/llm/v2/", "llm", "session", llm),
)
_ROUTES_BY_NAME = {route.name: route for route in ROUTES}


def _bind(route: Route, ctx: MockContext) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await route.handler(request, ctx)

    return handle


def build_app(ctx: MockContext) -> web.Application:
    """The aiohttp application serving ``ctx`` (routes, control API, shutdown of peers)."""
    app = web.Application(middlewares=[mock_middleware], client_max_size=64 * 1024 * 1024)
    app[CTX_KEY] = ctx
    app[ROUTES_KEY] = _ROUTES_BY_NAME
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _bind(route, ctx), name=route.name)
    add_control_routes(app, ctx, endpoints=[route.name for route in ROUTES])
    app.on_response_prepare.append(add_cors_headers)

    async def close_peers(_: web.Application) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.close_peers(), timeout=5)

    app.on_shutdown.append(close_peers)
    return app


__all__ = [
    "CTX_KEY",
    "ROUTES",
    "MockContext",
    "Route",
    "Rule",
    "SessionParamsError",
    "ToolCall",
    "build_app",
    "error_body",
    "new_session",
    "parse_multipart",
    "session_info",
]
