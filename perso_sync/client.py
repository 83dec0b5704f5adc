"""``PersoClient``: every REST call of the Perso platform as a plain blocking method.

Account-scoped calls (settings lists, templates, ``create_session_id``) carry the API key;
session-scoped calls (``get_session_info``, ``make_tts``, ...) only need a session id. The
module-level functions mirror the JavaScript SDK's exports: each builds a short-lived client.

    import perso_sync as perso

    with perso.PersoClient() as client:             # key from $PERSO_INTERACTIVE_API_KEY
        sid = client.create_session_id(session_template_id="...")
        info = client.get_session_info(sid)
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from perso_sync import _endpoints as endpoints
from perso_sync._converter import structure, unstructure
from perso_sync._rest import (
    API_KEY_ENV,
    DEFAULT_MAX_RETRIES,
    HttpTimeout,
    RestTransport,
    SecretStr,
)
from perso_sync.errors import (
    ApiError,
    ClientClosedError,
    InvalidInputError,
    InvalidResponseError,
    PersoError,
    SessionCreationError,
    UnsupportedTemplateError,
)
from perso_sync.models import (
    AllSettings,
    BackgroundImage,
    CapabilityName,
    Document,
    LLMType,
    MCPServer,
    ModelStyle,
    Prompt,
    SessionEvent,
    SessionInfo,
    SessionParams,
    SessionTemplate,
    STTResponse,
    STTType,
    TextNormalizationConfig,
    TextNormalizationDownload,
    TTSAudio,
    TTSType,
)

if TYPE_CHECKING:
    from perso_sync.llm import ChatTool
    from perso_sync.session import Session

__all__ = [
    "API_KEY_ENV",
    "API_SERVER_ENV",
    "PersoClient",
    "create_session",
    "create_session_id",
    "get_all_settings",
    "get_background_images",
    "get_documents",
    "get_intro_message",
    "get_llms",
    "get_mcp_servers",
    "get_model_styles",
    "get_prompts",
    "get_session_info",
    "get_session_template",
    "get_session_templates",
    "get_stts",
    "get_text_normalization",
    "get_text_normalizations",
    "get_ttss",
    "make_tts",
]

API_SERVER_ENV = "PERSO_API_SERVER"
logger = logging.getLogger("perso_sync")
DEFAULT_TIMEOUT = HttpTimeout()  # connect 5 s, read 30 s

T = TypeVar("T")
TimeoutSpec = HttpTimeout | float | tuple[float, float]

_LOCALE_FIELDS = ("text_normalization_locale", "stt_text_normalization_locale")


def _require_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string, got {value!r}")
    return value


class PersoClient:
    """A blocking client for the Perso REST API (one HTTP connection pool, thread-safe).

    ``api_key`` defaults to ``$PERSO_INTERACTIVE_API_KEY`` (needed only by account-scoped calls;
    a missing key raises ``MissingApiKeyError`` at the first such call). ``api_server`` defaults
    to ``$PERSO_API_SERVER``, then ``https://platform.perso.ai``. ``timeout`` is seconds, a
    ``(connect, read)`` pair or an ``HttpTimeout`` (default 5 s / 30 s); each request also has a
    deadline on its whole exchange (connect, headers and body), so a server that drips its
    answer never holds a call longer: the number itself, else ``HttpTimeout.total``, else
    connect + read (a ``session`` of your own keeps its adapters and only the connect/read
    timeouts). ``max_retries`` is how
    many times a GET is retried on connection errors, 429 and 502/503/504 (0 disables; POSTs are
    never retried). ``session`` is a ``requests.Session`` to use instead of the client's own (it
    is not closed by ``close()``). ``sleep`` replaces ``time.sleep`` between retries (tests).
    All arguments are keyword-only. Use it as a context manager, or call ``close()``; the repr
    never shows the key.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_server: str | None = None,
        timeout: TimeoutSpec = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        # The key travels as a SecretStr from here on, and the plain argument is dropped from
        # this frame: an error raised below (a bad api_server, say) must not show the raw key
        # among this frame's locals to `pytest -l`, `traceback` or an error tracker.
        raw_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        key = SecretStr(raw_key) if isinstance(raw_key, str) else raw_key
        del api_key, raw_key
        server = api_server or os.environ.get(API_SERVER_ENV) or endpoints.DEFAULT_API_SERVER
        extra: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._rest = RestTransport(
            api_server=server,
            api_key=key,
            timeout=timeout,
            max_retries=max_retries,
            session=session,
            **extra,
        )
        # The sessions this client opened (weakly): close() closes the ones still open.
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._sessions_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def api_server(self) -> str:
        """The normalized server URL (trimmed, no trailing slash)."""
        return self._rest.api_server

    @property
    def timeout(self) -> HttpTimeout:
        """The connect/read timeouts every request uses."""
        return self._rest.timeout

    @property
    def max_retries(self) -> int:
        """How many times a failed GET is retried."""
        return self._rest.max_retries

    def __repr__(self) -> str:
        # Never raises, even for a client whose __init__ failed half-way (debuggers and error
        # trackers call repr() on every local of every frame, `self` included).
        rest = getattr(self, "_rest", None)
        if rest is None:
            return "PersoClient(<not initialized>)"
        key = "'***'" if rest.has_api_key else "None"
        state = ", closed" if rest.closed else ""
        return f"PersoClient(api_server={rest.api_server!r}, api_key={key}{state})"

    def __enter__(self) -> PersoClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every session this client opened that is still open, then release the HTTP
        connections. Idempotent; later calls raise ``ClientClosedError``.

        A session needs its client (TTS, STT, events, the heartbeat), so it does not outlive
        it: each open one is closed as by :meth:`Session.stop_session` (``on_close(True)``,
        code 200) before the connections go.
        """
        with self._sessions_lock:
            sessions = list(self._sessions)
            self._sessions.clear()
        for session in sessions:
            try:
                session.stop_session()
            except PersoError as exc:  # e.g. the parent's session in a forked child
                logger.warning("closing %r with its client: %s", session, exc)
        self._rest.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._rest.closed

    def _account_get(self, path: str, type_: type[T], params: Mapping[str, str] | None = None) -> T:
        """GET an account-scoped ``path`` and structure its JSON body as ``type_``."""
        data = self._rest.get(path, account=True, params=params)
        return structure(data, type_, what=f"GET {path}")

    # -- settings lists ------------------------------------------------------------------------

    def get_llms(self) -> list[LLMType]:
        """The LLM types the account may use."""
        return self._account_get(endpoints.LLM_TYPES, list[LLMType])

    def get_ttss(self) -> list[TTSType]:
        """The text-to-speech voices the account may use."""
        return self._account_get(endpoints.TTS_TYPES, list[TTSType])

    def get_stts(self) -> list[STTType]:
        """The speech-to-text engines the account may use."""
        return self._account_get(endpoints.STT_TYPES, list[STTType])

    def get_model_styles(self) -> list[ModelStyle]:
        """The avatar model styles available over WebRTC (``platform_type=webrtc``)."""
        return self._account_get(
            endpoints.MODEL_STYLES, list[ModelStyle], {"platform_type": "webrtc"}
        )

    def get_prompts(self) -> list[Prompt]:
        """The account's prompts."""
        return self._account_get(endpoints.PROMPTS, list[Prompt])

    def get_documents(self) -> list[Document]:
        """The account's knowledge documents."""
        return self._account_get(endpoints.DOCUMENTS, list[Document])

    def get_background_images(self) -> list[BackgroundImage]:
        """The account's background images."""
        return self._account_get(endpoints.BACKGROUND_IMAGES, list[BackgroundImage])

    def get_mcp_servers(self) -> list[MCPServer]:
        """The remote MCP servers the account may attach to a session."""
        return self._account_get(endpoints.MCP_SERVERS, list[MCPServer])

    def get_text_normalizations(self) -> list[TextNormalizationConfig]:
        """The account's text-normalization rulesets."""
        return self._account_get(endpoints.TEXT_NORMALIZATIONS, list[TextNormalizationConfig])

    def get_text_normalization(self, config_id: str) -> TextNormalizationDownload:
        """Where to download one text-normalization ruleset (``file_url``, a pre-signed CSV URL)."""
        path = endpoints.text_normalization_download(_require_text("config_id", config_id))
        return self._account_get(path, TextNormalizationDownload)

    def get_all_settings(self) -> AllSettings:
        """The nine settings lists, fetched concurrently.

        A failure of the text-normalization list alone is tolerated (it becomes ``[]``); any other
        failure is raised (the first in the order of the ``AllSettings`` fields). When the call
        ends early (a failure, or Ctrl-C), it returns at once: requests still in flight finish
        in the background, each within the client's timeout, and their results are dropped.
        """
        self._rest.require_api_key()  # one clear error rather than nine
        calls: dict[str, Callable[[], list[Any]]] = {
            "llms": self.get_llms,
            "tts_types": self.get_ttss,
            "stt_types": self.get_stts,
            "model_styles": self.get_model_styles,
            "prompts": self.get_prompts,
            "documents": self.get_documents,
            "background_images": self.get_background_images,
            "mcp_servers": self.get_mcp_servers,
            "text_normalizations": self.get_text_normalizations,
        }
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(calls), thread_name_prefix="perso-settings"
        )
        try:
            futures = {name: pool.submit(call) for name, call in calls.items()}
            results: dict[str, Any] = {}
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except PersoError:
                    if name != "text_normalizations":
                        raise
                    results[name] = []
        finally:
            # Never wait here: after Ctrl-C (or a failure) the caller gets control back at once;
            # the pool's threads end as soon as their request does (bounded by the timeout).
            pool.shutdown(wait=False, cancel_futures=True)
        return AllSettings(**results)  # the keys of ``calls`` are the field names

    def get_intro_message(self, prompt_id: str) -> str:
        """The ``intro_message`` of the prompt ``prompt_id`` (``""`` when it has none).

        Raises ``ApiError(404, "not_found", ..., "prompt_id")`` when no prompt has that id.
        """
        _require_text("prompt_id", prompt_id)
        for prompt in self.get_prompts():
            if prompt.prompt_id == prompt_id:
                return prompt.intro_message or ""
        raise ApiError(404, "not_found", f"Prompt {prompt_id!r} was not found", "prompt_id")

    # -- session templates ---------------------------------------------------------------------

    def get_session_templates(self) -> list[SessionTemplate]:
        """The account's session templates."""
        return self._account_get(endpoints.SESSION_TEMPLATES, list[SessionTemplate])

    def get_session_template(self, session_template_id: str) -> SessionTemplate:
        """One session template by its ``sessiontemplate_id``."""
        path = endpoints.session_template(_require_text("session_template_id", session_template_id))
        return self._account_get(path, SessionTemplate)

    # -- creating a session id -----------------------------------------------------------------

    def create_session_id(
        self,
        *,
        params: SessionParams | Mapping[str, Any] | None = None,
        session_template_id: str | None = None,
    ) -> str:
        """Create a session id: from ``params`` (Form A) or from a session template (Form B).

        Exactly one of the two must be given. ``params`` may be a ``SessionParams`` or a dict of
        the same keys (validated the same way, before any request). Form B fetches the template
        and refuses one whose model style is not for ``webrtc`` with ``UnsupportedTemplateError``
        (no session is created). Server errors are raised as ``SessionCreationError`` or its
        subclasses ``DoesNotExistError`` / ``NotInOrganizationError``.
        """
        if (params is None) == (session_template_id is None):
            raise InvalidInputError(
                "create_session_id needs exactly one of params=... or session_template_id=..."
            )
        self._rest.require_api_key()
        try:
            if params is not None:
                resolved = (
                    params
                    if isinstance(params, SessionParams)
                    else SessionParams.from_mapping(params)
                )
            else:
                assert session_template_id is not None
                template = self.get_session_template(session_template_id)
                resolved = session_params_from_template(template)
            body = unstructure(resolved)
            body["capability"] = [str(name) for name in resolved.capabilities()]
            answer = self._rest.post(endpoints.SESSIONS, account=True, json_body=body)
        except ApiError as exc:
            mapped = SessionCreationError.from_api_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        session_id = answer.get("session_id") if isinstance(answer, dict) else None
        if not isinstance(session_id, str) or not session_id:
            raise InvalidResponseError(
                f"POST {endpoints.SESSIONS} answered without a session_id: {answer!r}"[:300]
            )
        return session_id

    # -- session-scoped calls (no API key) -----------------------------------------------------

    def get_session_info(self, session_id: str) -> SessionInfo:
        """The state of a session: status, capabilities, termination reason, ..."""
        path = endpoints.session_info(_require_text("session_id", session_id))
        data = self._rest.get(path, account=False)
        return structure(data, SessionInfo, what=f"GET {path}")

    def get_ice_servers(self, session_id: str) -> list[dict[str, Any]]:
        """The ICE servers (RTCIceServer dicts: ``urls``, ``username``?, ``credential``?)."""
        path = endpoints.ice_servers(_require_text("session_id", session_id))
        data = self._rest.get(path, account=False)
        servers = data.get("ice_servers") if isinstance(data, dict) else None
        if not isinstance(servers, list) or not all(isinstance(item, dict) for item in servers):
            raise InvalidResponseError(
                f"GET {path} answered without an ice_servers list of objects"
            )
        return [dict(item) for item in servers]

    def exchange_sdp(self, session_id: str, offer: Mapping[str, str]) -> dict[str, str]:
        """Send the WebRTC offer; returns the server's answer ``{"type": "answer", "sdp": ...}``."""
        path = endpoints.exchange(_require_text("session_id", session_id))
        if not isinstance(offer, Mapping):
            raise InvalidInputError(f"offer must be a dict with type and sdp, got {offer!r}")
        data = self._rest.post(path, account=False, json_body={"client_sdp": dict(offer)})
        answer = data.get("server_sdp") if isinstance(data, dict) else None
        if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str):
            raise InvalidResponseError(f"POST {path} answered without a server_sdp object")
        return {str(key): value for key, value in answer.items()}

    def create_session_event(
        self, session_id: str, event: SessionEvent | str, detail: str = ""
    ) -> None:
        """Report a session event (``SESSION_START``, ``SESSION_DURING``, ...) with a detail."""
        path = endpoints.session_event(_require_text("session_id", session_id))
        _require_text("event", event)
        if not isinstance(detail, str):
            raise InvalidInputError(f"detail must be a string, got {detail!r}")
        try:
            self._rest.post(path, account=False, json_body={"detail": detail, "event": str(event)})
        except InvalidResponseError:
            # A 2xx means the event was recorded; its body is not used, so a body that is not
            # JSON (the official client would choke on it) is no reason to fail.
            logger.debug("POST %s: ignoring a 2xx body that is not JSON", path)

    def log_session_event(
        self, session_id: str, detail: str | Mapping[str, Any] | None = None
    ) -> None:
        """Post a ``SESSION_LOG`` event; a dict detail is sent as its JSON text, None as ``""``."""
        if detail is None:
            text = ""
        elif isinstance(detail, Mapping):
            try:
                text = json.dumps(detail, ensure_ascii=False, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"detail cannot be written as JSON: {exc}") from exc
        elif isinstance(detail, str):
            text = detail
        else:
            raise InvalidInputError(f"detail must be a string, a dict or None, got {detail!r}")
        self.create_session_event(session_id, SessionEvent.SESSION_LOG, text)

    def make_tts(
        self,
        session_id: str,
        text: str,
        locale: str | None = None,
        output_format: str | None = None,
    ) -> TTSAudio:
        """Synthesize ``text``; the result's ``audio`` is base64 (WAV or MP3). Raw call: no emoji
        filtering, no decoding (``Session.process_tts`` does those)."""
        path = endpoints.tts(_require_text("session_id", session_id))
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be a string, got {text!r}")
        body: dict[str, Any] = {"text": text}
        if locale is not None:
            body["locale"] = _require_text("locale", locale)
        if output_format is not None:
            body["output_format"] = _require_text("output_format", output_format)
        data = self._rest.post(path, account=False, json_body=body)
        return structure(data, TTSAudio, what=f"POST {path}")

    def transcribe(self, session_id: str, wav: bytes, language: str | None = None) -> STTResponse:
        """Speech-to-text of a WAV file (sent as multipart field ``audio``, ``audio.wav``)."""
        path = endpoints.stt(_require_text("session_id", session_id))
        if not isinstance(wav, (bytes, bytearray, memoryview)):
            raise InvalidInputError(f"wav must be bytes, got {type(wav).__name__}")
        data = {"language": _require_text("language", language)} if language is not None else None
        answer = self._rest.post(
            path,
            account=False,
            files={"audio": ("audio.wav", bytes(wav), "audio/wav")},
            data=data,
        )
        return structure(answer, STTResponse, what=f"POST {path}")

    def create_session(
        self,
        session_id: str,
        width: int,
        height: int,
        client_tools: Sequence[ChatTool] = (),
        *,
        connect_timeout: float = 5.0,
        ping_timeout: float = 30.0,
        heartbeat_interval: float = 10.0,
        receive_video: bool = True,
        voice_chat: bool = False,
        llm_timeout: float | None = 60.0,
        llm_turn_timeout: float | None = 300.0,
    ) -> Session:
        """Open a live session (WebRTC avatar, LLM, TTS, STT) for ``session_id``.

        ``width`` x ``height`` is the avatar's rendered size. ``client_tools`` are the tools the
        LLM may call in this session's turns. ``ping_timeout``: seconds without a server ping
        before the session is closed as lost. ``heartbeat_interval``: seconds between the
        ``SESSION_DURING`` events of a REST-only session. ``receive_video=False`` skips decoding
        the avatar's video (no frames, no ``video_track``), saving about 40 % of an idle
        session's CPU. ``voice_chat=True`` (the JS SDK's ``enableVoiceChat``) adds an outgoing
        audio track to the offer for the deprecated legacy voice chat: silence until
        :meth:`Session.start_voice_chat` plays a source. ``llm_timeout`` / ``llm_turn_timeout``:
        seconds an LLM turn of the session may wait for the next stream event / take in all
        (None = no limit; see :class:`perso_sync.LlmProcessor`). This is the first call that
        loads aiortc; see docs/PROTOCOL.md §5.

        Opening takes two round trips: the session info and the ICE servers are fetched at
        once, the offer is made as soon as the ICE servers are in, then the SDP exchange.

        Timeouts:

        - each request (session info, ICE servers, the ``exchange`` POST) has this client's
          HTTP ``timeout``; the platform may take seconds to answer ``exchange`` (it
          allocates the avatar's renderer then), and only the HTTP read timeout bounds it;
        - ``connect_timeout`` is the ready timeout: seconds from the moment the server's
          answer is applied (``exchange`` returned, remote description set) until a remote
          track arrived and the ``message`` channel is open, else
          :class:`perso_sync.errors.Timeout`, as the official client counts it. Creating the
          offer has a bound of the same length.
        """
        from perso_sync.session import Session

        session = Session._open(
            self,
            session_id,
            width=width,
            height=height,
            client_tools=client_tools,
            connect_timeout=connect_timeout,
            ping_timeout=ping_timeout,
            heartbeat_interval=heartbeat_interval,
            receive_video=receive_video,
            voice_chat=voice_chat,
            llm_timeout=llm_timeout,
            llm_turn_timeout=llm_turn_timeout,
        )
        with self._sessions_lock:
            closed = self.closed
            if not closed:
                self._sessions.add(session)
        if closed:  # close() ran while the session was opening
            session.stop_session()
            raise ClientClosedError("this PersoClient was closed while the session was opening")
        return session


def session_params_from_template(template: SessionTemplate) -> SessionParams:
    """Map a session template to ``SessionParams`` (Form B, docs/PROTOCOL.md §3).

    Raises ``UnsupportedTemplateError`` when its model style is not for ``webrtc``.
    """
    platform = template.model_style.platform_type
    if platform != "webrtc":
        raise UnsupportedTemplateError(
            f"session template {template.sessiontemplate_id!r} has model_style.platform_type="
            f"{platform!r}; only 'webrtc' templates can create a session here"
        )
    kwargs: dict[str, Any] = {
        "using_stf_webrtc": template.has_capability(CapabilityName.STF_WEBRTC),
        "model_style": template.model_style.name,
        "prompt": template.prompt.prompt_id,
    }
    if template.document is not None:
        kwargs["document"] = template.document.document_id
    if template.background_image is not None:
        kwargs["background_image"] = template.background_image.backgroundimage_id
    if template.mcp_servers:
        kwargs["mcp_servers"] = [server.mcpserver_id for server in template.mcp_servers]
    for capability, field, value in (
        (CapabilityName.LLM, "llm_type", template.llm_type),
        (CapabilityName.TTS, "tts_type", template.tts_type),
        (CapabilityName.STT, "stt_type", template.stt_type),
    ):
        if value is not None and template.has_capability(capability):
            kwargs[field] = value.name
    if template.text_normalization_config is not None:
        kwargs["text_normalization_config"] = (
            template.text_normalization_config.textnormalizationconfig_id
        )
    if template.stt_text_normalization_config is not None:
        kwargs["stt_text_normalization_config"] = (
            template.stt_text_normalization_config.textnormalizationconfig_id
        )
    for field in _LOCALE_FIELDS:
        kwargs[field] = getattr(template, field)  # NOT_GIVEN stays absent, None stays null
    for field in ("padding_left", "padding_top", "padding_height"):
        value = getattr(template, field)
        if value is not None:
            kwargs[field] = value
    try:
        return SessionParams(**kwargs)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"session template {template.sessiontemplate_id!r} cannot create a session: {exc}"
        ) from exc


# ---------------------------------------------------------------------------------------------
# Module-level functions, mirroring the JavaScript SDK's exports. Each builds a short-lived
# client (closed afterwards, except by create_session whose Session keeps using it).


def _with_client(
    api_key: str | None, api_server: str | None, call: Callable[[PersoClient], T]
) -> T:
    with PersoClient(api_key=api_key, api_server=api_server) as client:
        return call(client)


def create_session_id(
    *,
    api_key: str | None = None,
    params: SessionParams | Mapping[str, Any] | None = None,
    session_template_id: str | None = None,
    api_server: str | None = None,
) -> str:
    """Create a session id (see ``PersoClient.create_session_id``)."""
    return _with_client(
        api_key,
        api_server,
        lambda client: client.create_session_id(
            params=params, session_template_id=session_template_id
        ),
    )


def get_llms(*, api_key: str | None = None, api_server: str | None = None) -> list[LLMType]:
    """The LLM types the account may use."""
    return _with_client(api_key, api_server, PersoClient.get_llms)


def get_ttss(*, api_key: str | None = None, api_server: str | None = None) -> list[TTSType]:
    """The text-to-speech voices the account may use."""
    return _with_client(api_key, api_server, PersoClient.get_ttss)


def get_stts(*, api_key: str | None = None, api_server: str | None = None) -> list[STTType]:
    """The speech-to-text engines the account may use."""
    return _with_client(api_key, api_server, PersoClient.get_stts)


def get_model_styles(
    *, api_key: str | None = None, api_server: str | None = None
) -> list[ModelStyle]:
    """The avatar model styles available over WebRTC."""
    return _with_client(api_key, api_server, PersoClient.get_model_styles)


def get_prompts(*, api_key: str | None = None, api_server: str | None = None) -> list[Prompt]:
    """The account's prompts."""
    return _with_client(api_key, api_server, PersoClient.get_prompts)


def get_documents(*, api_key: str | None = None, api_server: str | None = None) -> list[Document]:
    """The account's knowledge documents."""
    return _with_client(api_key, api_server, PersoClient.get_documents)


def get_background_images(
    *, api_key: str | None = None, api_server: str | None = None
) -> list[BackgroundImage]:
    """The account's background images."""
    return _with_client(api_key, api_server, PersoClient.get_background_images)


def get_mcp_servers(
    *, api_key: str | None = None, api_server: str | None = None
) -> list[MCPServer]:
    """The remote MCP servers the account may attach to a session."""
    return _with_client(api_key, api_server, PersoClient.get_mcp_servers)


def get_text_normalizations(
    *, api_key: str | None = None, api_server: str | None = None
) -> list[TextNormalizationConfig]:
    """The account's text-normalization rulesets."""
    return _with_client(api_key, api_server, PersoClient.get_text_normalizations)


def get_text_normalization(
    *, config_id: str, api_key: str | None = None, api_server: str | None = None
) -> TextNormalizationDownload:
    """Where to download one text-normalization ruleset."""
    return _with_client(
        api_key, api_server, lambda client: client.get_text_normalization(config_id)
    )


def get_all_settings(*, api_key: str | None = None, api_server: str | None = None) -> AllSettings:
    """The nine settings lists, fetched concurrently (see ``PersoClient.get_all_settings``)."""
    return _with_client(api_key, api_server, PersoClient.get_all_settings)


def get_intro_message(
    *, prompt_id: str, api_key: str | None = None, api_server: str | None = None
) -> str:
    """The intro message of one prompt (``ApiError`` 404 when there is no such prompt)."""
    return _with_client(api_key, api_server, lambda client: client.get_intro_message(prompt_id))


def get_session_templates(
    *, api_key: str | None = None, api_server: str | None = None
) -> list[SessionTemplate]:
    """The account's session templates."""
    return _with_client(api_key, api_server, PersoClient.get_session_templates)


def get_session_template(
    *, session_template_id: str, api_key: str | None = None, api_server: str | None = None
) -> SessionTemplate:
    """One session template."""
    return _with_client(
        api_key, api_server, lambda client: client.get_session_template(session_template_id)
    )


def get_session_info(*, session_id: str, api_server: str | None = None) -> SessionInfo:
    """The state of a session (no API key needed)."""
    return _with_client(None, api_server, lambda client: client.get_session_info(session_id))


def make_tts(
    *,
    session_id: str,
    text: str,
    locale: str | None = None,
    output_format: str | None = None,
    api_server: str | None = None,
) -> TTSAudio:
    """Synthesize speech in a session (no API key needed); ``audio`` is base64."""
    return _with_client(
        None,
        api_server,
        lambda client: client.make_tts(session_id, text, locale, output_format),
    )


def create_session(
    *,
    session_id: str,
    width: int,
    height: int,
    client_tools: Sequence[ChatTool] = (),
    api_server: str | None = None,
    connect_timeout: float = 5.0,
    ping_timeout: float = 30.0,
    heartbeat_interval: float = 10.0,
    receive_video: bool = True,
    voice_chat: bool = False,
    llm_timeout: float | None = 60.0,
    llm_turn_timeout: float | None = 300.0,
) -> Session:
    """Open a live session for ``session_id`` (options as in ``PersoClient.create_session``).

    The session owns the HTTP client made for it: its connections close when the session does.
    Timeouts: each request (session info, ICE servers, ``exchange``) has the default HTTP
    timeout (5 s to connect, 30 s per read); ``connect_timeout`` is the ready timeout, counted
    from the moment the server's SDP answer is applied, not from the start of the call.
    """
    client = PersoClient(api_server=api_server)
    try:
        session = client.create_session(
            session_id,
            width=width,
            height=height,
            client_tools=client_tools,
            connect_timeout=connect_timeout,
            ping_timeout=ping_timeout,
            heartbeat_interval=heartbeat_interval,
            receive_video=receive_video,
            voice_chat=voice_chat,
            llm_timeout=llm_timeout,
            llm_turn_timeout=llm_turn_timeout,
        )
    except BaseException:
        client.close()
        raise
    session.on_close(lambda _manual: client.close())
    return session
