"""The exception hierarchy: messages as docs/PROTOCOL.md §2 says, pickling, session-creation
re-mapping."""

from __future__ import annotations

import pickle

import pytest

from perso_sync import errors
from perso_sync.errors import (
    ApiError,
    DoesNotExistError,
    LLMError,
    LLMStreamingResponseError,
    NotInOrganizationError,
    SessionCreationError,
    STTError,
    TTSDecodeError,
    TTSError,
)

# One instance of every public class, built the way the library builds it.
EXAMPLES: list[Exception] = [
    errors.PersoError("boom"),
    ApiError(400, "invalid", "Bad thing", "prompt"),
    ApiError(500, "UNKNOWN_ERROR", "Server returned status 500 with no error details"),
    SessionCreationError(400, "invalid", "LLM not found", None),
    DoesNotExistError(404, "does_not_exist", "Object does not exist.", "prompt"),
    NotInOrganizationError(403, "not_in_organization", "Not yours", "llm_type"),
    LLMError(ApiError(502, "UNKNOWN_ERROR", "bad gateway")),
    LLMError(LLMStreamingResponseError("bad line")),
    LLMStreamingResponseError("bad line"),
    STTError(ApiError(400, "invalid", "no audio")),
    TTSError(TTSDecodeError("Invalid Base64 audio data")),
    TTSDecodeError("Invalid Base64 audio data"),
    errors.STFError("File transfer timed out"),
    errors.STFError("the STF file is empty", errors.AudioFormatError("the STF file is empty")),
    STTError(errors.AudioFormatError("the WAV header is too short")),
    errors.PersoConnectionError("GET http://127.0.0.1:1/: connection refused"),
    errors.PersoTimeoutError("no answer within 30 s"),
    errors.Timeout(),
    errors.InvalidResponseError("GET /x/ is not JSON", 200),
    errors.InvalidResponseError("no status"),
    errors.InvalidInputError("SessionParams.prompt is required"),
    errors.MissingApiKeyError("set $PERSO_INTERACTIVE_API_KEY"),
    errors.UnsupportedTemplateError("template 't' has platform 'onpremise'"),
    errors.AudioFormatError("not a WAV file"),
    errors.RecordingError("already recording"),
    errors.SessionClosedError("closed"),
    errors.ClientClosedError("this PersoClient is closed"),
    errors.RuntimeUsageError("called from the loop thread"),
]


def test_every_public_class_has_an_example() -> None:
    covered = {type(example) for example in EXAMPLES}
    public = {getattr(errors, name) for name in errors.__all__}
    assert public <= covered


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda error: type(error).__name__)
def test_pickles_with_fields_str_and_repr(error: Exception) -> None:
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is type(error)
    assert str(restored) == str(error)
    assert repr(restored) == repr(error)
    assert vars(restored) == vars(error) or repr(vars(restored)) == repr(vars(error))


def test_api_error_message_with_and_without_attr() -> None:
    assert str(ApiError(400, "does_not_exist", "Object missing.", "prompt")) == (
        "400:prompt_Object missing."
    )
    assert str(ApiError(500, "UNKNOWN_ERROR", "no details")) == "500:no details"
    err = ApiError(403, "not_in_organization", "nope", "llm_type")
    assert (err.error_code, err.code, err.detail, err.attr) == (
        403,
        "not_in_organization",
        "nope",
        "llm_type",
    )


def test_fixed_messages() -> None:
    assert str(errors.Timeout()) == "WebRTC connection timeout"
    assert str(TTSDecodeError("x")) == "TTS decode error: x"
    assert str(STTError(ApiError(400, "invalid", "no audio"))) == "STT Error: no audio"
    assert str(STTError(errors.AudioFormatError("not a WAV"))) == "STT Error: not a WAV"
    assert str(errors.STFError("File transfer timed out")) == "File transfer timed out"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("does_not_exist", DoesNotExistError),
        ("not_in_organization", NotInOrganizationError),
        ("invalid", SessionCreationError),
        ("validation_error", SessionCreationError),
        ("UNKNOWN_ERROR", SessionCreationError),
    ],
)
def test_session_creation_remapping_keeps_fields(code: str, expected: type) -> None:
    source = ApiError(400, code, "LLM gpt-x not found", "llm_type")
    mapped = SessionCreationError.from_api_error(source)
    assert type(mapped) is expected
    assert isinstance(mapped, ApiError)
    assert (mapped.error_code, mapped.code, mapped.detail, mapped.attr) == (
        400,
        code,
        "LLM gpt-x not found",
        "llm_type",
    )


def test_session_creation_error_is_never_wrapped_twice() -> None:
    already = DoesNotExistError(404, "does_not_exist", "gone", "prompt")
    assert SessionCreationError.from_api_error(already) is already


def test_validation_errors_are_value_errors() -> None:
    assert isinstance(errors.InvalidInputError("x"), ValueError)
    assert isinstance(errors.MissingApiKeyError("x"), errors.InvalidInputError)
    assert isinstance(errors.RuntimeUsageError("x"), RuntimeError)
