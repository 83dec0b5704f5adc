"""The mock Perso platform's HTTP side: aiohttp routes for every endpoint of
docs/PROTOCOL.md §3–§4.

One middleware does what every request shares, in this order: CORS preflight (so a browser
running the official JS SDK can call the mock), journal the request (key redacted), auth
(account-scoped routes need the configured ``PersoLive-APIKey``: missing or wrong → 401; session-
scoped routes need a known session id: unknown → 404), fault injection, then the route handler.
Every error body has the platform's standardized shape ``{"type", "errors": [{code, detail,
attr}]}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from mock_server import speech
from mock_server.catalog import (
    CAPABILITY_DESCRIPTIONS,
    ID_KEYS,
    REFERENCE_KINDS,
    Catalog,
    normalize_text,
)
from mock_server.faults import Fault, FaultRegistry
from mock_server.journal import Journal
from mock_server.llm_script import DONE_EVENT, LlmScript, Rule, ToolCall
from mock_server.state import (
    GRACEFUL_TERMINATION,
    SESSION_LOST_AFTER_CONNECTION,
    SESSION_MISC_ERROR,
    MockSession,
    SessionStore,
    SynthesizedSpeech,
    iso_now,
)

log = logging.getLogger("mock_server")

API_KEY_HEADER = "PersoLive-APIKey"
SESSION_EVENTS = frozenset(
    {
        "SESSION_START",
        "SESSION_DURING",
        "SESSION_LOG",
        "SESSION_END",
        "SESSION_ERROR",
        "SESSION_TTS",
        "SESSION_STT",
        "SESSION_LLM",
    }
)
CAPABILITIES = frozenset(CAPABILITY_DESCRIPTIONS)
CSV_BLOB_PATH = "/_mock/blob/text-normalization/{config_id}/rules.csv"
#: A JSON request body nested deeper than this is refused with the standard 400 ``parse_error``
#: (no request of the API comes near it; walking such a body would exhaust the stack).
MAX_JSON_DEPTH = 100
#: The longest TTS text when the catalog setting ``tts_max_chars`` is absent.
DEFAULT_TTS_MAX_CHARS = 5000


# --------------------------------------------------------------------------------------------
# shared state
# --------------------------------------------------------------------------------------------
@attrs.define(kw_only=True, eq=False)
class MockContext:
    """Everything the routes share; owned by one MockPersoServer (or ``python -m mock_server``)."""

    api_key: str
    catalog: Catalog
    journal: Journal
    faults: FaultRegistry = attrs.field(factory=FaultRegistry)
    sessions: SessionStore = attrs.field(factory=SessionStore)
    llm_script: LlmScript = attrs.field(factory=LlmScript)
    answerer: Any = None
    seed_catalog: Catalog | None = None
    seed_api_key: str | None = None
    inflight: set[asyncio.Task[Any]] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        if self.seed_catalog is None:
            self.seed_catalog = self.catalog.copy()
        if self.seed_api_key is None:
            self.seed_api_key = self.api_key

    async def reset(self) -> None:
        """Back to the seeded state: peers closed, no sessions, faults, journal or scripts."""
        # Requests still in flight (e.g. a delayed "never answering" exchange) belong to the
        # previous test: cancel them so they cannot act on the fresh state later.
        current = asyncio.current_task()
        stale = [task for task in self.inflight if task is not current and not task.done()]
        for task in stale:
            task.cancel()
        if stale:
            await asyncio.wait(stale, timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.close_peers(), timeout=5)
        assert self.seed_catalog is not None
        self.catalog.restore(self.seed_catalog)
        self.api_key = self.seed_api_key or self.api_key
        self.sessions.clear()
        self.faults.clear()
        self.journal.clear()
        self.llm_script = LlmScript()

    def session(self, session_id: str) -> MockSession | None:
        self.sessions.expiry_sec = _as_float(self.catalog.settings.get("session_expiry_sec"))
        return self.sessions.get(session_id)

    def active_sessions(self) -> list[MockSession]:
        self.sessions.expiry_sec = _as_float(self.catalog.settings.get("session_expiry_sec"))
        return self.sessions.active()

    # -- callbacks of the WebRTC answerer (mock_server.webrtc.Answerer) -----------------------
    def on_datachannel_message(
        self, session_id: str, channel: str, direction: str, payload: Any
    ) -> None:
        self.journal.record_datachannel(session_id, channel, direction, payload)

    def on_peer_state(self, session_id: str, event: str) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            return
        if event == "connected":
            session.mark_connected()
        elif event == "closed":
            session.terminate(GRACEFUL_TERMINATION)
        elif event in ("lost", "failed"):
            # A peer that never connected did not get "lost after connection".
            connected = session.connected_monotonic is not None
            session.terminate(SESSION_LOST_AFTER_CONNECTION if connected else SESSION_MISC_ERROR)

    def on_uplink_speech(self, session_id: str, voiced_seconds: float) -> str | None:
        """Legacy voice chat: the session's recent TTS text whose length the take matches."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        matched = speech.match_uplink(voiced_seconds, list(reversed(session.speeches)))
        return None if matched is None else str(matched.text)

    def get_answerer(self) -> Any:
        if self.answerer is None:
            # Imported here: the HTTP side works without the WebRTC side (and without aiortc).
            from mock_server.webrtc import Answerer

            self.answerer = Answerer(
                on_message=self.on_datachannel_message,
                on_state=self.on_peer_state,
                on_speech=self.on_uplink_speech,
            )
        return self.answerer

    async def close_peers(self) -> None:
        if self.answerer is not None:
            await self.answerer.close_all()

    async def end_session(self, session: MockSession, reason: str) -> None:
        """The server ends a session itself: mark it and drop its peer, so that the client sees
        its connection go away as it would on the platform."""
        session.terminate(reason)
        if self.answerer is not None:
            await self.answerer.close(session.session_id)


CTX_KEY: web.AppKey[MockContext] = web.AppKey("mock_context", MockContext)


def _request_key(name: str, kind: type[Any]) -> Any:
    # Typed request keys exist in recent aiohttp only; older ones take plain strings.
    factory = getattr(web, "RequestKey", None)
    return factory(name, kind) if factory is not None else name


RAW_KEY = _request_key("mock_raw", bytes)
SESSION_KEY = _request_key("mock_session", MockSession)
FAULT_KEY = _request_key("mock_fault", Fault)
CLIENT_GONE_KEY = _request_key("mock_client_gone", bool)
#: Journal status of a stream the client closed before its end (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# error bodies
# --------------------------------------------------------------------------------------------
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


def _not_found() -> web.Response:
    return error_response(404, "client_error", "not_found", "Not found.")


# --------------------------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------------------------
Handler = Callable[[web.Request, MockContext], Awaitable[web.StreamResponse]]


@attrs.frozen
class Route:
    method: str
    path: str
    name: str
    scope: str  # "account" (API key), "session" (session id), "public"
    handler: Handler


def _list_handler(kind: str) -> Handler:
    async def handle(request: web.Request, ctx: MockContext) -> web.StreamResponse:
        return web.json_response(list(getattr(ctx.catalog, kind)))

    return handle


async def model_styles(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    return web.json_response(ctx.catalog.model_styles_for(request.query.get("platform_type")))


async def text_normalization_download(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    config_id = request.match_info["config_id"]
    config = ctx.catalog.find("text_normalizations", config_id)
    if config is None or config_id not in ctx.catalog.text_normalization_files:
        return _not_found()
    path = CSV_BLOB_PATH.format(config_id=config_id)
    # Shaped like a pre-signed blob URL (query signature), served by the mock itself.
    file_url = f"{_origin(request)}{path}?sv=2024-08-04&se=2099-01-01T00%3A00%3A00Z&sig=mock"
    return web.json_response(
        {"config_id": config_id, "config_name": config.get("name", ""), "file_url": file_url}
    )


def csv_etag(text: str) -> str:
    return '"0x' + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16].upper() + '"'


async def text_normalization_file(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    text = ctx.catalog.text_normalization_files.get(request.match_info["config_id"])
    if text is None:
        # Blob storage answers XML; a client must not need to parse it.
        return web.Response(
            status=404,
            text='<?xml version="1.0"?><Error><Code>BlobNotFound</Code></Error>',
            content_type="application/xml",
        )
    etag = csv_etag(text)
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0"}
    if_none_match = request.headers.get("If-None-Match", "")
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    if etag in tags or "*" in tags:
        return web.Response(status=304, headers=headers)
    return web.Response(body=text.encode("utf-8"), headers=headers, content_type="text/csv")


async def session_templates(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    return web.json_response(
        [ctx.catalog.expand_template(t) for t in ctx.catalog.session_templates]
    )


async def session_template(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    found = ctx.catalog.find("session_templates", request.match_info["template_id"])
    if found is None:
        return _not_found()
    return web.json_response(ctx.catalog.expand_template(found))


class SessionParamsError(ValueError):
    """Session-creation params the platform would refuse: ``status`` and the error ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        errors = body.get("errors") or [{}]
        super().__init__(f"{status}: {errors[0].get('code')}: {errors[0].get('detail')}")
        self.status = status
        self.body = body


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
    ok, body = _json_body(request)
    try:
        session = new_session(ctx, body if ok else None)
    except SessionParamsError as exc:
        return web.json_response(exc.body, status=exc.status)
    return web.json_response(session_info(session, ctx), status=201)


def derive_capability(params: dict[str, Any]) -> list[str]:
    """docs/PROTOCOL.md §3: STF_WEBRTC, LLM, TTS, STT, in that order, from the params."""
    caps = []
    if params.get("using_stf_webrtc"):
        caps.append("STF_WEBRTC")
    for key, cap in (("llm_type", "LLM"), ("tts_type", "TTS"), ("stt_type", "STT")):
        if params.get(key):
            caps.append(cap)
    return caps


_PADDINGS = {
    "padding_left": (-1.0, 1.0),
    "padding_top": (0.0, 1.0),
    "padding_height": (0.0, 5.0),
}
_STRING_FIELDS = (
    "model_style",
    "prompt",
    "document",
    "background_image",
    "llm_type",
    "tts_type",
    "stt_type",
    "text_normalization_config",
    "stt_text_normalization_config",
)
_LOCALE_FIELDS = ("text_normalization_locale", "stt_text_normalization_locale")
_FEATURE_FIELDS = {
    "document": ("document", "Document"),
    "background_image": ("background_image", "Background image"),
    "mcp_servers": ("mcp", "MCP server"),
    "text_normalization_config": ("text_normalization", "Text normalization"),
    "stt_text_normalization_config": ("text_normalization", "Text normalization"),
}
_ORG_TYPES = {"llm_type": "LLM", "tts_type": "TTS", "stt_type": "STT"}


def _field_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []

    def add(code: str, detail: str, attr: str) -> None:
        errors.append({"code": code, "detail": detail, "attr": attr})

    for name in ("using_stf_webrtc", "model_style", "prompt"):
        if body.get(name) is None:
            add("required", "This field is required.", name)
    flag = body.get("using_stf_webrtc")
    if flag is not None and not isinstance(flag, bool):
        add("invalid", "Must be a valid boolean.", "using_stf_webrtc")
    for name in _STRING_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            add("invalid", "Not a valid string.", name)
    for name, (low, high) in _PADDINGS.items():
        if name not in body or body[name] is None:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            add("invalid", "A valid number is required.", name)
        elif value < low:
            add("min_value", f"Ensure this value is greater than or equal to {low}.", name)
        elif value > high:
            add("max_value", f"Ensure this value is less than or equal to {high}.", name)
    for name in _LOCALE_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            add("invalid", "Not a valid string.", name)
        elif len(value) > 10:
            add("max_length", "Ensure this field has no more than 10 characters.", name)
    servers = body.get("mcp_servers")
    if servers is not None and (
        not isinstance(servers, list) or not all(isinstance(s, str) for s in servers)
    ):
        add("not_a_list", "Expected a list of mcpserver_id strings.", "mcp_servers")
    caps = body.get("capability")
    if caps is not None:
        if not isinstance(caps, list):
            add("not_a_list", "Expected a list of capability names.", "capability")
        else:
            for cap in caps:
                if cap not in CAPABILITIES:
                    add("invalid_choice", f'"{cap}" is not a valid choice.', "capability")
    return errors


def validate_session_params(
    body: dict[str, Any], catalog: Catalog
) -> tuple[int, dict[str, Any]] | None:
    """The platform's checks on a session-creation body: (status, error body) or None."""
    errors = _field_errors(body)
    if errors:
        return 400, {"type": "validation_error", "errors": errors}
    features = set(catalog.organization.get("features") or [])
    org = catalog.organization
    for field, kind in REFERENCE_KINDS.items():
        value = body.get(field)
        if value is None:
            continue
        feature = _FEATURE_FIELDS.get(field)
        if feature is not None and feature[0] not in features:
            return 400, error_body(
                "client_error", "invalid", f"{feature[1]} feature not found.", field
            )
        if catalog.find(kind, value) is None:
            key = ID_KEYS[kind]
            return 400, error_body(
                "client_error",
                "does_not_exist",
                f"Object with {key}={value} does not exist.",
                field,
            )
        if field in _ORG_TYPES and value not in (org.get(f"{field}s") or []):
            return 400, error_body(
                "client_error",
                "not_in_organization",
                f"{_ORG_TYPES[field]} type {value} is not in your organization.",
                field,
            )
    servers = body.get("mcp_servers") or []
    if servers and "mcp" not in features:
        return 400, error_body(
            "client_error", "invalid", "MCP server feature not found.", "mcp_servers"
        )
    for server_id in servers:
        if catalog.find("mcp_servers", server_id) is None:
            return 400, error_body(
                "client_error",
                "does_not_exist",
                f'Invalid pk "{server_id}" - object does not exist.',
                "mcp_servers",
            )
    prompt = catalog.find("prompts", body.get("prompt"))
    if prompt is not None and prompt.get("require_document") and not body.get("document"):
        return 400, error_body(
            "validation_error", "invalid", "This prompt requires a document.", "document"
        )
    return None


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
    ok, body = _json_body(request)
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
    ok, body = _json_body(request)
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


def _capability_refusal(session: MockSession, ctx: MockContext, cap: str) -> web.Response | None:
    if ctx.catalog.settings.get("strict_capabilities") and cap not in session.capability:
        return error_response(
            400, "client_error", "invalid", f"{cap} is not enabled for this session."
        )
    return None


async def tts(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    session: MockSession = request[SESSION_KEY]
    refusal = _capability_refusal(session, ctx, "TTS")
    if refusal is not None:
        return refusal
    ok, body = _json_body(request)
    if not ok or not isinstance(body, dict):
        return error_response(400, "client_error", "parse_error", "JSON parse error.")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return error_response(
            400, "validation_error", "required", "This field is required.", "text"
        )
    limit = _as_float(ctx.catalog.settings.get("tts_max_chars"))
    max_chars = int(limit) if limit is not None else DEFAULT_TTS_MAX_CHARS
    if len(text) > max_chars:
        # Synthesis grows with the text (about 4 KB of WAV per character): refused up front.
        return error_response(
            400,
            "validation_error",
            "max_length",
            f"Ensure this field has no more than {max_chars} characters.",
            "text",
        )
    locale = body.get("locale")
    if locale is not None and not isinstance(locale, str):
        return error_response(400, "validation_error", "invalid", "Not a valid string.", "locale")
    output_format = body.get("output_format") or "wav"
    if not isinstance(output_format, str) or output_format.lower() not in ("wav", "mp3"):
        return error_response(
            400,
            "validation_error",
            "invalid_choice",
            f'"{output_format}" is not a valid choice.',
            "output_format",
        )
    make = speech.synthesize_mp3 if output_format.lower() == "mp3" else speech.synthesize_wav
    # Encoding is CPU work: off the loop, so pings and media of other sessions keep flowing.
    audio = await asyncio.get_running_loop().run_in_executor(None, make, text, locale)
    session.remember_speech(
        SynthesizedSpeech(text=text, locale=locale, duration=speech.speech_duration(text))
    )
    return web.json_response({"audio": base64.b64encode(audio).decode("ascii")})


async def stt(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    session: MockSession = request[SESSION_KEY]
    refusal = _capability_refusal(session, ctx, "STT")
    if refusal is not None:
        return refusal
    form = parse_multipart(request.headers.get("Content-Type", ""), request[RAW_KEY])
    audio = form.get("audio") if form is not None else None
    if audio is None or audio.data is None:
        return error_response(
            400, "validation_error", "required", "No audio file was submitted.", "audio"
        )
    language_part = form.get("language") if form is not None else None
    language = language_part.text() if language_part is not None else None
    try:
        info = await asyncio.get_running_loop().run_in_executor(
            None, speech.inspect_audio, audio.data
        )
    except speech.NotAudioError as exc:
        return error_response(400, "client_error", "invalid_audio", str(exc), "audio")
    text = info.text
    locale = info.locale
    if text is None:
        matched = speech.match_by_duration(info.duration, list(reversed(session.speeches)))
        if matched is not None:
            text, locale = matched.text, matched.locale
    if text is None:
        text = session.stt_text or str(ctx.catalog.settings.get("stt_default_text") or "")
    locale = language or locale or "en"
    rules = ctx.catalog.normalization_rules(session.params.get("stt_text_normalization_config"))
    return web.json_response(
        {"text": text, "locale": locale, "normalized_text": normalize_text(text, rules)}
    )


def sse_frame(event: dict[str, Any], framing: str) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    if not data.isascii():
        try:
            data.encode()
        except UnicodeEncodeError:  # a lone surrogate (echoed from a request): escape it
            data = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
    if framing == "sse":
        return f"data: {data}\r\n\r\n".encode()
    return f"data: {data}\n".encode()


_TOOL_KEYS = frozenset({"type", "function"})
_FUNCTION_KEYS = frozenset({"name", "description", "parameters"})


def tool_definition_problem(tools: list[Any]) -> str | None:
    """Why the ``tools`` of an ``llm/v2`` request are not what the platform accepts, or None.

    Each entry must be ``{"type": "function", "function": {"name": <non-empty str>,
    "description": <str>, "parameters": <JSON Schema object>}}``, nothing more.
    """
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            return f"{where}: expected an object."
        if tool.get("type") != "function":
            return f'{where}.type: expected "function".'
        extra = sorted(set(tool) - _TOOL_KEYS)
        if extra:
            return f"{where}: unexpected field(s) {', '.join(extra)}."
        function = tool.get("function")
        if not isinstance(function, dict):
            return f"{where}.function: expected an object."
        extra = sorted(set(function) - _FUNCTION_KEYS)
        if extra:
            return f"{where}.function: unexpected field(s) {', '.join(extra)}."
        name = function.get("name")
        if not isinstance(name, str) or not name:
            return f"{where}.function.name: a non-empty string is required."
        if not isinstance(function.get("description"), str):
            return f"{where}.function.description: a string is required."
        parameters = function.get("parameters")
        if not isinstance(parameters, dict) or not isinstance(parameters.get("type", ""), str):
            return f"{where}.function.parameters: a JSON Schema object is required."
    return None


async def llm(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    session: MockSession = request[SESSION_KEY]
    refusal = _capability_refusal(session, ctx, "LLM")
    if refusal is not None:
        return refusal
    ok, body = _json_body(request)
    if not ok or not isinstance(body, dict):
        return error_response(400, "client_error", "parse_error", "JSON parse error.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(
            400, "validation_error", "required", "This field is required.", "messages"
        )
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return error_response(
            400, "validation_error", "not_a_list", "Expected a list of tools.", "tools"
        )
    problem = tool_definition_problem(tools)
    if problem is not None:
        return error_response(400, "validation_error", "invalid", problem, "tools")
    session.llm_requests.append(body)
    script = session.llm_script or ctx.llm_script
    server_ids = [s for s in (session.params.get("mcp_servers") or []) if isinstance(s, str)]
    events = script.plan(
        messages,
        tools,
        mcp_tools=lambda name: ctx.catalog.mcp_tool_result(server_ids, name),
        call_ids=session.tool_call_counter,
    )
    settings = ctx.catalog.settings
    framing = script.framing or str(settings.get("llm_framing") or "platform")
    delay = script.delay if script.delay is not None else _as_float(settings.get("llm_delay"))
    fault: Fault | None = request.get(FAULT_KEY)
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
    )
    await response.prepare(request)
    try:
        await _stream_events(request, response, events, framing, delay, fault)
    except ConnectionError:
        # The client went away (closed or aborted its stream): nothing left to send to.
        log.debug("LLM stream of a session ended by the client")
        request[CLIENT_GONE_KEY] = True
    return response


def _split_point(frame: bytes) -> int:
    for index, byte in enumerate(frame):
        if byte >= 0xC0:  # the lead byte of a multi-byte UTF-8 sequence
            return index + 1
    return len(frame) // 2


async def _stream_events(
    request: web.Request,
    response: web.StreamResponse,
    events: list[dict[str, Any]],
    framing: str,
    delay: float | None,
    fault: Fault | None,
) -> None:
    newline = "\r\n" if framing == "sse" else "\n"
    if framing == "sse":
        await response.write(b": perso mock stream" + newline.encode())
    cut_at = max(1, len(events) // 2)
    for index, event in enumerate(events):
        if index and delay:
            await asyncio.sleep(delay)
        frame = sse_frame(event, framing)
        if fault is not None and fault.sse == "truncate" and index == cut_at:
            # Cut inside the event; the stream then ends cleanly, without "done".
            await response.write(frame[: len(frame) // 2])
            await response.write_eof()
            return
        if fault is not None and fault.drop and index == cut_at:
            await response.write(frame[: len(frame) // 2])
            _abort(request)
            return
        if fault is not None and fault.sse == "split":
            # Two writes per event, cut inside a multi-byte character when there is one.
            cut = _split_point(frame)
            await response.write(frame[:cut])
            await asyncio.sleep(0.001)
            await response.write(frame[cut:])
        else:
            await response.write(frame)
        if fault is not None and fault.sse == "garbage" and index == 0:
            await response.write((fault.sse_line + newline).encode())
        if framing == "sse" and event is not DONE_EVENT and index == 0:
            await response.write(b": keep-alive" + newline.encode())
    await response.write_eof()


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/settings/llm_type/", "llm_types", "account", _list_handler("llm_types")),
    Route("GET", "/api/v1/settings/tts_type/", "tts_types", "account", _list_handler("tts_types")),
    Route("GET", "/api/v1/settings/stt_type/", "stt_types", "account", _list_handler("stt_types")),
    Route("GET", "/api/v1/settings/modelstyle/", "model_styles", "account", model_styles),
    Route(
        "GET",
        "/api/v1/background_image/",
        "background_images",
        "account",
        _list_handler("background_images"),
    ),
    Route("GET", "/api/v1/prompt/", "prompts", "account", _list_handler("prompts")),
    Route("GET", "/api/v1/document/", "documents", "account", _list_handler("documents")),
    Route(
        "GET", "/api/v1/settings/mcp_type/", "mcp_servers", "account", _list_handler("mcp_servers")
    ),
    Route(
        "GET",
        "/api/v1/settings/text_normalization_config/",
        "text_normalizations",
        "account",
        _list_handler("text_normalizations"),
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


# --------------------------------------------------------------------------------------------
# request plumbing
# --------------------------------------------------------------------------------------------
def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _json_body(request: web.Request) -> tuple[bool, Any]:
    raw: bytes = request[RAW_KEY]
    if not raw or json_nesting_too_deep(raw):
        return False, None
    try:
        return True, json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too
        return False, None


def json_nesting_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``raw`` is JSON nested more than ``limit`` levels (or too deep to parse)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the common case, decided without parsing
    try:
        value = json.loads(raw)
    except RecursionError:
        return True
    except ValueError:
        return False  # not JSON at all: the route decides what that means
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if not isinstance(item, (dict, list)):
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


@attrs.frozen
class FormPart:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormPart] | None:
    """The parts of a ``multipart/form-data`` body by name; None when it is not one."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    delimiter = b"--" + boundary.encode("latin-1")
    parts: dict[str, FormPart] = {}
    # Prefix CRLF so the first delimiter looks like every other one.
    for chunk in (b"\r\n" + body).split(b"\r\n" + delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        name = filename = part_type = None
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            header, _, value = line.partition(":")
            if header.strip().lower() == "content-disposition":
                for item in value.split(";"):
                    key, _, val = item.strip().partition("=")
                    if key == "name":
                        name = val.strip('"')
                    elif key == "filename":
                        filename = val.strip('"')
            elif header.strip().lower() == "content-type":
                part_type = value.strip()
        if name is not None:
            parts[name] = FormPart(name, filename, part_type, data)
    return parts


def summarize_body(content_type: str, raw: bytes) -> Any:
    """What the journal keeps of a request body."""
    if not raw:
        return None
    form = parse_multipart(content_type, raw)
    if form is not None:
        fields: dict[str, str] = {}
        files: dict[str, dict[str, Any]] = {}
        for part in form.values():
            if part.filename is None and part.content_type is None:
                fields[part.name] = part.text()
            else:
                files[part.name] = {
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": len(part.data),
                }
        return {"fields": fields, "files": files}
    if json_nesting_too_deep(raw):
        return {"nested_too_deep": True, "size": len(raw)}
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"binary": len(raw)}


def _abort(request: web.Request) -> None:
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
    _abort(request)
    return response


@web.middleware
async def mock_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    ctx = request.app[CTX_KEY]
    if request.method == "OPTIONS":
        return web.Response(status=204)
    route_name = request.match_info.route.name
    route = _ROUTES_BY_NAME.get(route_name or "")
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
            return _not_found()
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


def _bind(route: Route, ctx: MockContext) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await route.handler(request, ctx)

    return handle


async def _add_cors(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Allow-Headers", "*")
    response.headers.setdefault("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
    response.headers.setdefault("Access-Control-Expose-Headers", "ETag, Retry-After")


def build_app(ctx: MockContext) -> web.Application:
    """The aiohttp application serving ``ctx`` (routes, control API, shutdown of peers)."""
    from mock_server.control import add_control_routes

    app = web.Application(middlewares=[mock_middleware], client_max_size=64 * 1024 * 1024)
    app[CTX_KEY] = ctx
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _bind(route, ctx), name=route.name)
    add_control_routes(app, ctx)
    app.on_response_prepare.append(_add_cors)

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
    "ToolCall",
    "build_app",
    "error_body",
    "parse_multipart",
    "session_info",
]
