"""Typed data of the Perso platform: frozen attrs classes, (de)serialized by ``_converter``.

Every model keeps the fields the server adds later in ``extra`` (and sends them back out), so a
newer server never breaks an older client.
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from perso_sync.errors import InvalidInputError

# ---------------------------------------------------------------------------------------------
# Sentinel: "not given" is not the same as "given as None" (the two locale fields of
# SessionParams: null disables normalization, an absent key leaves the server default).


class _NotGivenType(enum.Enum):
    NOT_GIVEN = "NOT_GIVEN"

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGivenType.NOT_GIVEN
"""The value of a field the platform left out, kept apart from one it sent as ``null`` (None)."""
NotGiven = Literal[_NotGivenType.NOT_GIVEN]


# ---------------------------------------------------------------------------------------------
# Chat states and the chat log


class ChatState(str, enum.Enum):
    """What the session is busy with; subscribers get the set of active states (empty = idle)."""

    RECORDING = "RECORDING"
    LLM = "LLM"
    ANALYZING = "ANALYZING"
    SPEAKING = "SPEAKING"
    TTS = "TTS"

    def __str__(self) -> str:
        return self.value


@attrs.frozen(kw_only=True)
class Chat:
    """One entry of a session's chat log."""

    is_user: bool
    text: str
    timestamp: _dt.datetime


# ---------------------------------------------------------------------------------------------
# Open string enums: the documented values are members; a value the server adds later still
# structures (as a pseudo-member that is not listed by iteration) instead of failing.


class _OpenStrEnum(str, enum.Enum):
    """A ``str`` enum that accepts values it does not know (they equal their string)."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        pseudo_member = str.__new__(cls, value)
        pseudo_member._name_ = value
        pseudo_member._value_ = value
        return pseudo_member

    @property
    def is_known(self) -> bool:
        """True for a documented value, False for one the server added later."""
        return self._value_ in type(self)._value2member_map_

    def __str__(self) -> str:
        return str(self._value_)


class CapabilityName(_OpenStrEnum):
    """A capability of a session or template (unknown names are kept as they are)."""

    LLM = "LLM"
    TTS = "TTS"
    STT = "STT"
    STF_ONPREMISE = "STF_ONPREMISE"
    STF_WEBRTC = "STF_WEBRTC"


class SessionStatus(_OpenStrEnum):
    """The life-cycle state of a session, as reported by ``get_session_info``."""

    CREATED = "CREATED"
    EXCHANGED = "EXCHANGED"
    IN_PROGRESS = "IN_PROGRESS"
    TERMINATED = "TERMINATED"


class TerminationReason(_OpenStrEnum):
    """Why a terminated session ended."""

    GRACEFUL_TERMINATION = "GRACEFUL_TERMINATION"
    SESSION_EXPIRED_BEFORE_CONNECTION = "SESSION_EXPIRED_BEFORE_CONNECTION"
    SESSION_LOST_AFTER_CONNECTION = "SESSION_LOST_AFTER_CONNECTION"
    SESSION_MISC_ERROR = "SESSION_MISC_ERROR"
    MAX_ACTIVE_SESSION_QUOTA_EXCEEDED = "MAX_ACTIVE_SESSION_QUOTA_EXCEEDED"
    MAX_MIN_PER_SESSION_QUOTA_EXCEEDED = "MAX_MIN_PER_SESSION_QUOTA_EXCEEDED"
    TOTAL_MIN_PER_MONTH_QUOTA_EXCEEDED = "TOTAL_MIN_PER_MONTH_QUOTA_EXCEEDED"


class SessionEvent(_OpenStrEnum):
    """The ``event`` of ``POST /api/v1/session/{id}/event/create/``."""

    SESSION_START = "SESSION_START"
    SESSION_DURING = "SESSION_DURING"
    SESSION_LOG = "SESSION_LOG"
    SESSION_END = "SESSION_END"
    SESSION_ERROR = "SESSION_ERROR"
    SESSION_TTS = "SESSION_TTS"
    SESSION_STT = "SESSION_STT"
    SESSION_LLM = "SESSION_LLM"


# ---------------------------------------------------------------------------------------------
# Wire models. Each keeps unknown keys in ``extra``. The hidden ``_wire_keys`` records which
# optional keys were present in the structured payload, so that an optional field that came
# as an explicit ``null`` (or ``[]``) goes back out the same way while one that was absent stays
# absent: round trips are lossless. Models built in code leave optional defaults out.


@attrs.frozen(kw_only=True)
class _WireModel:
    _wire_keys: frozenset[str] = attrs.field(factory=frozenset, init=False, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class LLMType(_WireModel):
    """An LLM the account may use (``GET /api/v1/settings/llm_type/``)."""

    name: str
    service: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class TTSType(_WireModel):
    """A text-to-speech voice the account may use (``GET /api/v1/settings/tts_type/``).

    ``voice_settings`` and ``voice_extra_data`` are free-form (objects in templates, strings in
    session info), so they are kept as the server sent them.
    """

    name: str
    service: str | None = None
    streamable: bool | None = None
    model: str | None = None
    voice: str | None = None
    voice_settings: Any = None
    style: str | None = None
    voice_extra_data: Any = None
    speaker: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class STTType(_WireModel):
    """A speech-to-text engine the account may use (``GET /api/v1/settings/stt_type/``)."""

    name: str
    service: str | None = None
    options: Any = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ModelFile(_WireModel):
    """One file of a model style."""

    name: str
    file: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ModelStyleConfig(_WireModel):
    """One key/value setting of a model style."""

    modelstyleconfig_id: str
    key: str
    value: Any
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ModelStyle(_WireModel):
    """An avatar model and outfit (``GET /api/v1/settings/modelstyle/?platform_type=webrtc``)."""

    name: str
    model: str | None = None
    model_file: str | None = None
    model_files: list[ModelFile] = attrs.field(factory=list)
    style: str | None = None
    file: str | None = None
    platform_type: str | None = None
    configs: list[ModelStyleConfig] = attrs.field(factory=list)
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Prompt(_WireModel):
    """A prompt (``GET /api/v1/prompt/``); ``prompt_id`` is what ``SessionParams.prompt`` takes."""

    prompt_id: str
    name: str
    description: str | None = None
    system_prompt: str | None = None
    require_document: bool | None = None
    intro_message: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Document(_WireModel):
    """A knowledge document (``GET /api/v1/document/``)."""

    document_id: str
    title: str
    file: str | None = None
    description: str | None = None
    search_count: int | None = None
    ef_search: int | None = None
    processed: bool | None = None
    processed_v2: bool | None = None
    created_at: _dt.datetime | None = None
    updated_at: _dt.datetime | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class BackgroundImage(_WireModel):
    """A background image (``GET /api/v1/background_image/``)."""

    backgroundimage_id: str
    title: str
    image: str | None = None
    created_at: _dt.datetime | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class MCPServer(_WireModel):
    """A remote MCP server the LLM may call (``GET /api/v1/settings/mcp_type/``)."""

    mcpserver_id: str
    name: str
    url: str | None = None
    description: str | None = None
    transport_protocol: str | None = None
    server_timeout_sec: float | None = None
    extra_data: Any = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class TextNormalizationConfig(_WireModel):
    """A text-normalization ruleset (``GET /api/v1/settings/text_normalization_config/``)."""

    textnormalizationconfig_id: str
    name: str
    created_at: _dt.datetime | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class TextNormalizationDownload(_WireModel):
    """Where to download a text-normalization ruleset: ``file_url`` is a pre-signed CSV URL."""

    config_id: str
    config_name: str
    file_url: str
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Capability(_WireModel):
    """One capability of a session or template; ``name`` accepts names added later."""

    name: CapabilityName
    description: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class SessionTemplate(_WireModel):
    """A saved session configuration (``GET /api/v1/session_template/``).

    The two locale fields are ``NOT_GIVEN`` when the template leaves them out and ``None`` when
    it sets them to ``null`` (normalization explicitly disabled).
    """

    sessiontemplate_id: str
    name: str
    description: str | None = None
    prompt: Prompt
    capability: list[Capability] = attrs.field(factory=list)
    document: Document | None = None
    llm_type: LLMType | None = None
    tts_type: TTSType | None = None
    stt_type: STTType | None = None
    text_normalization_config: TextNormalizationConfig | None = None
    text_normalization_locale: str | NotGiven | None = NOT_GIVEN
    stt_text_normalization_config: TextNormalizationConfig | None = None
    stt_text_normalization_locale: str | NotGiven | None = NOT_GIVEN
    model_style: ModelStyle
    background_image: BackgroundImage | None = None
    agent: str | None = None
    padding_left: float | None = None
    padding_top: float | None = None
    padding_height: float | None = None
    extra_data: Any = None
    mcp_servers: list[MCPServer] = attrs.field(factory=list)
    created_at: _dt.datetime | None = None
    last_used_at: _dt.datetime | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)

    def has_capability(self, name: CapabilityName | str) -> bool:
        """True if the template lists the capability ``name``."""
        return any(item.name == name for item in self.capability)


@attrs.frozen(kw_only=True)
class SessionInfo(_WireModel):
    """The state of one session (``GET /api/v1/session/{session_id}/``, no API key needed).

    ``document``, ``extra_data`` and the nested objects are kept loosely typed where the
    platform documents different shapes in different places.
    """

    session_id: str
    client_sdp: Any = None
    server_sdp: Any = None
    prompt: Prompt | None = None
    document: Any = None
    llm_type: LLMType | None = None
    model_style: ModelStyle | None = None
    tts_type: TTSType | None = None
    stt_type: STTType | None = None
    ice_servers: list[Any] | None = None
    status: SessionStatus | None = None
    termination_reason: TerminationReason | None = None
    duration_sec: float | None = None
    created_at: _dt.datetime | None = None
    padding_left: float | None = None
    padding_top: float | None = None
    padding_height: float | None = None
    background_image: BackgroundImage | None = None
    extra_data: Any = None
    capability: list[Capability] = attrs.field(factory=list)
    extra: dict[str, Any] = attrs.field(factory=dict)

    def has_capability(self, name: CapabilityName | str) -> bool:
        """True if the session lists the capability ``name``."""
        return any(item.name == name for item in self.capability)

    @property
    def uses_webrtc(self) -> bool:
        """True if the session streams an avatar (``STF_WEBRTC`` or ``STF_ONPREMISE``)."""
        return self.has_capability(CapabilityName.STF_WEBRTC) or self.has_capability(
            CapabilityName.STF_ONPREMISE
        )


@attrs.frozen(kw_only=True)
class TTSAudio(_WireModel):
    """The answer of ``make_tts``: ``audio`` is base64-encoded WAV or MP3."""

    audio: str
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class STTResponse(_WireModel):
    """The answer of speech-to-text: the ``text``, and ``locale``/``normalized_text`` if sent."""

    text: str
    locale: str | None = None
    normalized_text: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class AllSettings(_WireModel):
    """The nine settings lists of ``get_all_settings`` (``text_normalizations`` is ``[]`` when
    that list alone failed)."""

    llms: list[LLMType]
    tts_types: list[TTSType]
    stt_types: list[STTType]
    model_styles: list[ModelStyle]
    prompts: list[Prompt]
    documents: list[Document]
    background_images: list[BackgroundImage]
    mcp_servers: list[MCPServer]
    text_normalizations: list[TextNormalizationConfig]
    extra: dict[str, Any] = attrs.field(factory=dict)


# ---------------------------------------------------------------------------------------------
# SessionParams: the body of POST /api/v1/session/ (Form A), validated when built.

LOCALE_MAX_LENGTH: Final = 10

_PADDING_RANGES: Final[dict[str, tuple[float, float]]] = {
    "padding_left": (-1.0, 1.0),
    "padding_top": (0.0, 1.0),
    "padding_height": (0.0, 5.0),
}


class _RequiredMarker(enum.Enum):
    REQUIRED = "REQUIRED"

    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _RequiredMarker.REQUIRED


def _missing(attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is _REQUIRED:
        raise InvalidInputError(f"SessionParams.{attribute.name} is required")


def _require_bool(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _missing(attribute, value)
    if not isinstance(value, bool):
        raise InvalidInputError(
            f"SessionParams.{attribute.name} must be True or False, got {value!r}"
        )


def _require_id(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _missing(attribute, value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            f"SessionParams.{attribute.name} is required: a non-empty string, got {value!r}"
        )


def _optional_id(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidInputError(
            f"SessionParams.{attribute.name} must be a non-empty string or None, got {value!r}"
        )


def _padding(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    low, high = _PADDING_RANGES[attribute.name]
    # bool is an int subclass; True is not a position. NaN fails the range check.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInputError(
            f"SessionParams.{attribute.name} must be a number from {low} to {high}, got {value!r}"
        )


def _locale(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is NOT_GIVEN or value is None:
        return
    if not isinstance(value, str) or not value or len(value) > LOCALE_MAX_LENGTH:
        raise InvalidInputError(
            f"SessionParams.{attribute.name} must be a locale of 1 to {LOCALE_MAX_LENGTH} "
            f"characters, None (disables normalization) or NOT_GIVEN, got {value!r}"
        )


def _mcp_servers(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidInputError(
            f"SessionParams.{attribute.name} must be a list of mcpserver_id strings, got {value!r}"
        )


def _to_id_list(value: Any) -> Any:
    # A copy: the caller's list stays theirs. A bare string is not a list of ids.
    if value is None or isinstance(value, (str, bytes)):
        return value
    try:
        return list(value)
    except TypeError:
        return value


def _copy_dict(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _extra_mapping(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise InvalidInputError(
            f"SessionParams.{attribute.name} must be a dict with string keys, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class SessionParams:
    """What to create a session with (Form A of ``create_session_id``).

    ``using_stf_webrtc``, ``model_style`` (a model style name) and ``prompt`` (a ``prompt_id``)
    are required. An optional field left at ``None`` is absent from the request. The two locale
    fields default to ``NOT_GIVEN`` (absent: the server default applies); ``None`` sends JSON
    ``null``, which explicitly disables normalization. ``extra`` is sent as additional body keys.

    Everything is validated here, before any request: a wrong value raises
    ``InvalidInputError`` naming the field.
    """

    # Required, but defaulted to a marker so that leaving one out is an InvalidInputError naming
    # the field rather than Python's bare TypeError.
    using_stf_webrtc: bool = attrs.field(default=_REQUIRED, validator=_require_bool)
    model_style: str = attrs.field(default=_REQUIRED, validator=_require_id)
    prompt: str = attrs.field(default=_REQUIRED, validator=_require_id)
    document: str | None = attrs.field(default=None, validator=_optional_id)
    background_image: str | None = attrs.field(default=None, validator=_optional_id)
    mcp_servers: list[str] | None = attrs.field(
        default=None, converter=_to_id_list, validator=_mcp_servers
    )
    padding_left: float | None = attrs.field(default=None, validator=_padding)
    padding_top: float | None = attrs.field(default=None, validator=_padding)
    padding_height: float | None = attrs.field(default=None, validator=_padding)
    llm_type: str | None = attrs.field(default=None, validator=_optional_id)
    tts_type: str | None = attrs.field(default=None, validator=_optional_id)
    stt_type: str | None = attrs.field(default=None, validator=_optional_id)
    text_normalization_config: str | None = attrs.field(default=None, validator=_optional_id)
    text_normalization_locale: str | NotGiven | None = attrs.field(
        default=NOT_GIVEN, validator=_locale
    )
    stt_text_normalization_config: str | None = attrs.field(default=None, validator=_optional_id)
    stt_text_normalization_locale: str | NotGiven | None = attrs.field(
        default=NOT_GIVEN, validator=_locale
    )
    extra: dict[str, Any] = attrs.field(
        factory=dict, converter=_copy_dict, validator=_extra_mapping
    )

    def capabilities(self) -> list[CapabilityName]:
        """The ``capability`` array sent with these params, in the documented order."""
        names: list[CapabilityName] = []
        if self.using_stf_webrtc:
            names.append(CapabilityName.STF_WEBRTC)
        if self.llm_type is not None:
            names.append(CapabilityName.LLM)
        if self.tts_type is not None:
            names.append(CapabilityName.TTS)
        if self.stt_type is not None:
            names.append(CapabilityName.STT)
        return names

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> SessionParams:
        """Build from a JS-style params dict; keys that are not fields go to ``extra``.

        A missing required key raises ``InvalidInputError`` naming it.
        """
        if not isinstance(params, Mapping):
            raise InvalidInputError(f"params must be a SessionParams or a dict, got {params!r}")
        known = {field.name for field in attrs.fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in params.items() if key in known}
        extra = {key: value for key, value in params.items() if key not in known}
        if "extra" in params and isinstance(params["extra"], Mapping):
            extra = {**extra, **params["extra"]}
            extra.pop("extra", None)
        return cls(**kwargs, extra=extra)
