"""The fixed public names resolve, and `import perso_sync` stays cheap.

The names below are the official JS SDK's exports in Python spelling (plus the chunk classes and
the error classes its reference documents): users port code by them, so none may disappear.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import perso_sync

FIXED_PUBLIC_NAMES = [
    # client and module functions
    "PersoClient", "DEFAULT_API_SERVER", "create_session_id", "create_session", "get_llms",
    "get_ttss", "get_stts", "get_model_styles", "get_prompts", "get_documents",
    "get_background_images", "get_mcp_servers", "get_text_normalizations",
    "get_text_normalization", "get_all_settings", "get_intro_message", "get_session_templates",
    "get_session_template", "get_session_info", "make_tts",
    # sessions, LLM, audio
    "Session", "ChatTool", "ChatState", "LlmProcessor", "WavRecorder", "create_wav_recorder",
    "get_wav_sample_rate", "TTS_TARGET_SAMPLE_RATE", "SessionParams",
    "MessageChunk", "ToolCallChunk", "ToolResultChunk", "ErrorChunk",
    # errors
    "ApiError", "SessionCreationError", "DoesNotExistError", "NotInOrganizationError",
    "LLMError", "LLMStreamingResponseError", "STTError", "TTSError", "TTSDecodeError", "Timeout",
]  # fmt: skip


@pytest.mark.parametrize("name", FIXED_PUBLIC_NAMES)
def test_fixed_name_is_public(name: str) -> None:
    assert name in perso_sync.__all__
    assert getattr(perso_sync, name) is not None


def test_every_exported_name_resolves() -> None:
    missing = [name for name in perso_sync.__all__ if not hasattr(perso_sync, name)]
    assert missing == []


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = perso_sync.no_such_name  # type: ignore[attr-defined]


def test_values_match_the_protocol() -> None:
    assert perso_sync.TTS_TARGET_SAMPLE_RATE == 16000
    assert perso_sync.DEFAULT_API_SERVER == "https://platform.perso.ai"
    assert {s.value for s in perso_sync.ChatState} == {
        "RECORDING", "LLM", "ANALYZING", "SPEAKING", "TTS",
    }  # fmt: skip


def test_rest_use_does_not_load_the_async_stack() -> None:
    """A Flask view that only creates session ids never imports aiortc, av, anyio or httpx, nor
    rich (the CLI's)."""
    code = (
        "import sys, perso_sync as p\n"
        "p.PersoClient; p.SessionParams; p.ApiError; p.get_llms\n"
        "heavy = ('aiortc', 'av', 'anyio', 'httpx', 'aiohttp', 'rich')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
