"""perso_sync: the synchronous Python client for Perso Interactive (real-time AI humans).

    import perso_sync as perso
    client = perso.PersoClient()                  # key from $PERSO_INTERACTIVE_API_KEY
    sid = client.create_session_id(session_template_id="...")
    with client.create_session(sid, width=1280, height=720) as session:
        print(session.process_chat("Hello!"))

Names are loaded on first use, so ``import perso_sync`` stays cheap: it imports neither aiortc,
av, anyio nor an async HTTP client (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from perso_sync._version import __version__
from perso_sync.errors import (
    ApiError,
    AudioFormatError,
    ClientClosedError,
    DoesNotExistError,
    InvalidInputError,
    InvalidResponseError,
    LLMError,
    LLMStreamingResponseError,
    MissingApiKeyError,
    NotInOrganizationError,
    PersoConnectionError,
    PersoError,
    PersoTimeoutError,
    RecordingError,
    RuntimeUsageError,
    SessionClosedError,
    SessionCreationError,
    STFError,
    STTError,
    Timeout,
    TTSDecodeError,
    TTSError,
    UnsupportedTemplateError,
)

# public name -> module that defines it
_LAZY: dict[str, str] = {}


def _lazy(module: str, *names: str) -> None:
    for name in names:
        _LAZY[name] = module


_lazy("perso_sync._endpoints", "DEFAULT_API_SERVER")
_lazy("perso_sync._rest", "HttpTimeout")
_lazy(
    "perso_sync.client",
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
)
_lazy(
    "perso_sync.models",
    "NOT_GIVEN",
    "AllSettings",
    "BackgroundImage",
    "Capability",
    "CapabilityName",
    "Chat",
    "ChatState",
    "Document",
    "LLMType",
    "MCPServer",
    "ModelFile",
    "ModelStyle",
    "ModelStyleConfig",
    "Prompt",
    "STTResponse",
    "STTType",
    "SessionEvent",
    "SessionInfo",
    "SessionParams",
    "SessionStatus",
    "SessionTemplate",
    "TTSAudio",
    "TTSType",
    "TerminationReason",
    "TextNormalizationConfig",
    "TextNormalizationDownload",
)
_lazy(
    "perso_sync.llm",
    "AbortSignal",
    "ChatTool",
    "ErrorChunk",
    "LlmChunk",
    "LlmProcessor",
    "LlmProcessorCallbacks",
    "LlmStream",
    "MessageChunk",
    "ToolCallChunk",
    "ToolResultChunk",
)
_lazy("perso_sync.session", "Session", "CloseStatus", "MediaRecording")
_lazy(
    "perso_sync.audio",
    "Microphone",
    "TTS_TARGET_SAMPLE_RATE",
    "WavRecorder",
    "create_wav_recorder",
    "get_wav_sample_rate",
    "normalize_audio_format",
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'perso_sync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_API_SERVER",
    "NOT_GIVEN",
    "TTS_TARGET_SAMPLE_RATE",
    "AbortSignal",
    "AllSettings",
    "ApiError",
    "AudioFormatError",
    "BackgroundImage",
    "Capability",
    "CapabilityName",
    "Chat",
    "ChatState",
    "ChatTool",
    "ClientClosedError",
    "CloseStatus",
    "Document",
    "DoesNotExistError",
    "ErrorChunk",
    "HttpTimeout",
    "InvalidInputError",
    "InvalidResponseError",
    "LLMError",
    "LLMStreamingResponseError",
    "LLMType",
    "LlmChunk",
    "LlmProcessor",
    "LlmProcessorCallbacks",
    "LlmStream",
    "MCPServer",
    "MediaRecording",
    "MessageChunk",
    "Microphone",
    "MissingApiKeyError",
    "ModelFile",
    "ModelStyle",
    "ModelStyleConfig",
    "NotInOrganizationError",
    "PersoClient",
    "PersoConnectionError",
    "PersoError",
    "PersoTimeoutError",
    "Prompt",
    "RecordingError",
    "RuntimeUsageError",
    "STFError",
    "STTError",
    "STTResponse",
    "STTType",
    "Session",
    "SessionClosedError",
    "SessionCreationError",
    "SessionEvent",
    "SessionInfo",
    "SessionParams",
    "SessionStatus",
    "SessionTemplate",
    "TTSAudio",
    "TTSDecodeError",
    "TTSError",
    "TTSType",
    "TerminationReason",
    "TextNormalizationConfig",
    "TextNormalizationDownload",
    "Timeout",
    "ToolCallChunk",
    "ToolResultChunk",
    "UnsupportedTemplateError",
    "WavRecorder",
    "__version__",
    "create_session",
    "create_session_id",
    "create_wav_recorder",
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
    "get_wav_sample_rate",
    "make_tts",
    "normalize_audio_format",
]

if TYPE_CHECKING:  # the static view of the lazy names above, for type checkers and IDEs
    from perso_sync._endpoints import (
        DEFAULT_API_SERVER,
    )
    from perso_sync._rest import (
        HttpTimeout,
    )
    from perso_sync.audio import (
        TTS_TARGET_SAMPLE_RATE,
        Microphone,
        WavRecorder,
        create_wav_recorder,
        get_wav_sample_rate,
        normalize_audio_format,
    )
    from perso_sync.client import (
        PersoClient,
        create_session,
        create_session_id,
        get_all_settings,
        get_background_images,
        get_documents,
        get_intro_message,
        get_llms,
        get_mcp_servers,
        get_model_styles,
        get_prompts,
        get_session_info,
        get_session_template,
        get_session_templates,
        get_stts,
        get_text_normalization,
        get_text_normalizations,
        get_ttss,
        make_tts,
    )
    from perso_sync.llm import (
        AbortSignal,
        ChatTool,
        ErrorChunk,
        LlmChunk,
        LlmProcessor,
        LlmProcessorCallbacks,
        LlmStream,
        MessageChunk,
        ToolCallChunk,
        ToolResultChunk,
    )
    from perso_sync.models import (
        NOT_GIVEN,
        AllSettings,
        BackgroundImage,
        Capability,
        CapabilityName,
        Chat,
        ChatState,
        Document,
        LLMType,
        MCPServer,
        ModelFile,
        ModelStyle,
        ModelStyleConfig,
        Prompt,
        SessionEvent,
        SessionInfo,
        SessionParams,
        SessionStatus,
        SessionTemplate,
        STTResponse,
        STTType,
        TerminationReason,
        TextNormalizationConfig,
        TextNormalizationDownload,
        TTSAudio,
        TTSType,
    )
    from perso_sync.session import (
        CloseStatus,
        MediaRecording,
        Session,
    )
