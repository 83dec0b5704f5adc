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
_lazy("perso_sync.session", "Session", "CloseStatus")
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
    "ApiError",
    "AudioFormatError",
    "ClientClosedError",
    "DoesNotExistError",
    "InvalidInputError",
    "InvalidResponseError",
    "LLMError",
    "LLMStreamingResponseError",
    "MissingApiKeyError",
    "NotInOrganizationError",
    "PersoConnectionError",
    "PersoError",
    "PersoTimeoutError",
    "RecordingError",
    "RuntimeUsageError",
    "STFError",
    "STTError",
    "SessionClosedError",
    "SessionCreationError",
    "TTSDecodeError",
    "TTSError",
    "Timeout",
    "UnsupportedTemplateError",
    "__version__",
    *_LAZY,
]

if TYPE_CHECKING:  # the static view of the lazy names above, for type checkers and IDEs
    from perso_sync._endpoints import (
        DEFAULT_API_SERVER as DEFAULT_API_SERVER,
    )
    from perso_sync._rest import (
        HttpTimeout as HttpTimeout,
    )
    from perso_sync.audio import (
        TTS_TARGET_SAMPLE_RATE as TTS_TARGET_SAMPLE_RATE,
        Microphone as Microphone,
        WavRecorder as WavRecorder,
        create_wav_recorder as create_wav_recorder,
        get_wav_sample_rate as get_wav_sample_rate,
        normalize_audio_format as normalize_audio_format,
    )
    from perso_sync.client import (
        PersoClient as PersoClient,
        create_session as create_session,
        create_session_id as create_session_id,
        get_all_settings as get_all_settings,
        get_background_images as get_background_images,
        get_documents as get_documents,
        get_intro_message as get_intro_message,
        get_llms as get_llms,
        get_mcp_servers as get_mcp_servers,
        get_model_styles as get_model_styles,
        get_prompts as get_prompts,
        get_session_info as get_session_info,
        get_session_template as get_session_template,
        get_session_templates as get_session_templates,
        get_stts as get_stts,
        get_text_normalization as get_text_normalization,
        get_text_normalizations as get_text_normalizations,
        get_ttss as get_ttss,
        make_tts as make_tts,
    )
    from perso_sync.llm import (
        AbortSignal as AbortSignal,
        ChatTool as ChatTool,
        ErrorChunk as ErrorChunk,
        LlmChunk as LlmChunk,
        LlmProcessor as LlmProcessor,
        LlmProcessorCallbacks as LlmProcessorCallbacks,
        LlmStream as LlmStream,
        MessageChunk as MessageChunk,
        ToolCallChunk as ToolCallChunk,
        ToolResultChunk as ToolResultChunk,
    )
    from perso_sync.models import (
        NOT_GIVEN as NOT_GIVEN,
        AllSettings as AllSettings,
        BackgroundImage as BackgroundImage,
        Capability as Capability,
        CapabilityName as CapabilityName,
        Chat as Chat,
        ChatState as ChatState,
        Document as Document,
        LLMType as LLMType,
        MCPServer as MCPServer,
        ModelFile as ModelFile,
        ModelStyle as ModelStyle,
        ModelStyleConfig as ModelStyleConfig,
        Prompt as Prompt,
        SessionEvent as SessionEvent,
        SessionInfo as SessionInfo,
        SessionParams as SessionParams,
        SessionStatus as SessionStatus,
        SessionTemplate as SessionTemplate,
        STTResponse as STTResponse,
        STTType as STTType,
        TerminationReason as TerminationReason,
        TextNormalizationConfig as TextNormalizationConfig,
        TextNormalizationDownload as TextNormalizationDownload,
        TTSAudio as TTSAudio,
        TTSType as TTSType,
    )
    from perso_sync.session import (
        CloseStatus as CloseStatus,
        Session as Session,
    )
