"""Session routes (docs/PROTOCOL.md §3–§5): creation (validated like the platform), SessionInfo,
ICE servers, the SDP exchange into the WebRTC answerer, and session events.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from mock_server.catalog import CAPABILITY_DESCRIPTIONS
from mock_server.context import RAW_KEY, SESSION_KEY, MockContext
from mock_server.errors import error_body, error_response
from mock_server.state import GRACEFUL_TERMINATION, MockSession, iso_now
from mock_server.validation import (
    SessionParamsError,
    derive_capability,
    json_body,
    validate_session_params,
)

log = logging.getLogger("mock_server")


def new_session(ctx: MockContext, body: Any) -> MockSession:
    """Validate a creation body like the platform and register the session.

    Raises :class:`SessionParamsError` with the platform's status and error body.
    """
    if not isinstance(body, dict):
        raise SessionParamsError(
            400, error_body("client_error", "parse_error", "JSON parse error - expected an object.")
        )
    failure = validate_session_params(body, ctx.catalog)
    if failure is not None:
        raise SessionParamsError(*failure)
    limit = ctx.catalog.organization.get("max_active_sessions")
    if isinstance(limit, int) and len(ctx.active_sessions()) >= limit:
        raise SessionParamsError(
            400,
            error_body(
                "client_error",
                "MAX_ACTIVE_SESSION_QUOTA_EXCEEDED",
                f"The organization already has {limit} active sessions (its maximum).",
            ),
        )
    capability = body.get("capability")
    if capability is None:
        capability = derive_capability(body)
    session = MockSession(
        session_id=ctx.sessions.new_id(), params=dict(body), capability=list(capability)
    )
    ctx.sessions.add(session)
    return session


async def create_session(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    ok, body = json_body(request)
    try:
        session = new_session(ctx, body if ok else None)
    except SessionParamsError as exc:
        return web.json_response(exc.body, status=exc.status)
    return web.json_response(session_info(session, ctx), status=201)


def session_info(session: MockSession, ctx: MockContext) -> dict[str, Any]:
    """SessionInfo as docs/PROTOCOL.md §4 describes it."""
    catalog = ctx.catalog
    params = session.params

    def pick(kind: str, field: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
        item = catalog.find(kind, params.get(field)) if params.get(field) else None
        if item is None:
            return None
        return {key: item.get(key) for key in keys}

    prompt = catalog.find("prompts", params.get("prompt"))
    background = catalog.find("background_images", params.get("background_image"))

    def padding(name: str, default: float) -> float:
        value = params.get(name)
        return float(value) if isinstance(value, (int, float)) else default

    return {
        "session_id": session.session_id,
        "client_sdp": session.client_sdp,
        "server_sdp": session.server_sdp,
        "prompt": dict(prompt) if prompt else None,
        "document": params.get("document"),
        "llm_type": pick("llm_types", "llm_type", ("name",)),
        "model_style": pick(
            "model_styles", "model_style", ("name", "model", "model_file", "style", "file")
        ),
        "tts_type": pick(
            "tts_types",
            "tts_type",
            ("name", "service", "model", "voice", "style", "voice_extra_data"),
        ),
        "stt_type": pick("stt_types", "stt_type", ("name", "service")),
        "ice_servers": _ice_servers(session, ctx),
        "status": session.status,
        "termination_reason": session.termination_reason,
        "duration_sec": session.duration_sec,
        "created_at": session.created_at,
        "padding_left": padding("padding_left", 0.0),
        "padding_top": padding("padding_top", 0.0),
        "padding_height": padding("padding_height", 1.0),
        "background_image": dict(background) if background else None,
        "extra_data": None,
        "capability": [
            {"name": name, "description": CAPABILITY_DESCRIPTIONS.get(name)}
            for name in session.capability
        ],
    }


def _ice_servers(session: MockSession, ctx: MockContext) -> list[Any]:
    if session.ice_servers is not None:
        return list(session.ice_servers)
    return list(ctx.catalog.settings.get("ice_servers") or [])


async def get_session_info(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    return web.json_response(session_info(request[SESSION_KEY], ctx))


async def get_ice_servers(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    return web.json_response({"ice_servers": _ice_servers(request[SESSION_KEY], ctx)})


async def exchange(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    session: MockSession = request[SESSION_KEY]
    ok, body = json_body(request)
    offer = body.get("client_sdp") if ok and isinstance(body, dict) else None
    if not (
        isinstance(offer, dict)
        and offer.get("type") == "offer"
        and isinstance(offer.get("sdp"), str)
        and offer["sdp"]
    ):
        return error_response(
            400,
            "validation_error",
            "invalid",
            'client_sdp must be {"type": "offer", "sdp": "..."}.',
            "client_sdp",
        )
    if not session.active:
        return error_response(
            400, "client_error", "invalid", f"Session is {session.status}.", "session_id"
        )
    if session.server_sdp is not None:
        return error_response(
            400, "client_error", "invalid", "Session was already exchanged.", "session_id"
        )
    try:
        answerer = ctx.get_answerer()
    except ImportError as exc:
        return error_response(
            501, "server_error", "not_implemented", f"WebRTC answerer unavailable: {exc}"
        )
    from mock_server.webrtc import InvalidOfferError

    try:
        answer = await answerer.answer(session.session_id, offer, session.peer_config)
    except InvalidOfferError as exc:
        return error_response(400, "validation_error", "invalid", str(exc), "client_sdp")
    except Exception as exc:  # noqa: BLE001 - any other answerer failure is the client's 500
        log.warning("exchange failed for a session: %s", exc)
        return error_response(500, "server_error", "error", f"Could not answer the offer: {exc}")
    session.mark_exchanged(offer["sdp"], str(answer.get("sdp", "")))
    return web.json_response({"server_sdp": answer})


async def create_event(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    session: MockSession = request[SESSION_KEY]
    ok, body = json_body(request)
    record: dict[str, Any]
    if ok and isinstance(body, dict):
        record = {"event": body.get("event"), "detail": body.get("detail")}
        extra = {k: v for k, v in body.items() if k not in ("event", "detail")}
        if extra:
            record["extra"] = extra
    else:
        # Tolerated (the platform's job is to record), but kept visible to tests.
        record = {
            "event": None,
            "detail": None,
            "raw": request[RAW_KEY].decode(errors="replace"),
        }
    record["created_at"] = iso_now()
    session.events.append(record)
    event = record["event"]
    if event == "SESSION_START" and not session.is_webrtc:
        session.mark_connected()
    elif event == "SESSION_END":
        await ctx.end_session(session, GRACEFUL_TERMINATION)
    return web.json_response(
        {
            "session_event_id": len(session.events),
            "session_id": session.session_id,
            "event": event,
            "detail": record["detail"],
            "created_at": record["created_at"],
        },
        status=201,
    )
