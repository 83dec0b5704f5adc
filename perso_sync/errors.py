"""Every exception perso_sync raises.

The hierarchy::

    PersoError                          root: ``except PersoError`` catches everything of ours
    ├── ApiError                        the server answered non-2xx (fields as sent by it)
    │   └── SessionCreationError        ... while creating a session id (Form B: incl. template)
    │       ├── DoesNotExistError       ... code "does_not_exist": a referenced resource is unknown
    │       └── NotInOrganizationError  ... code "not_in_organization": not assigned to your org
    ├── LLMError                        an LLM turn failed (wraps ApiError | LLMStreamingResponse..)
    ├── LLMStreamingResponseError       the LLM stream was malformed or reported a failure
    ├── STTError                        speech-to-text failed (underlying_error says why)
    ├── TTSError                        text-to-speech failed (underlying_error says why)
    ├── TTSDecodeError                  the TTS audio was not valid base64
    ├── STFError                        speech-to-face failed (upload timed out, channel closed
    │                                   early, no WebRTC, unusable file; underlying_error or None)
    ├── PersoConnectionError            the network failed: DNS, refused, reset, dropped mid-body
    ├── PersoTimeoutError               a blocking call ran out of time (connect/read/runtime)
    │   └── Timeout                     the WebRTC connection was not ready in time
    ├── InvalidResponseError            a 2xx answer whose body does not fit the documented shape
    ├── InvalidInputError (ValueError)  bad input, refused before any request is sent
    │   ├── MissingApiKeyError          an account-scoped call without an API key
    │   ├── UnsupportedTemplateError    Form B with a template whose platform is not "webrtc"
    │   └── AudioFormatError            audio that cannot be read (bad WAV header, not audio)
    ├── RecordingError                  STT / WavRecorder misuse (already recording, not started)
    ├── SessionClosedError              a method called on a session that is closed
    ├── ClientClosedError               a call on a PersoClient after close()
    └── RuntimeUsageError (RuntimeError) sync API on the loop thread, a stream iterated twice, ...

Every class pickles and reprs with its fields. No message ever contains the API key.

**Media calls fail with their media class.** A failure of text-to-speech, speech-to-text or
speech-to-face is always a ``TTSError``, ``STTError`` or ``STFError``, whatever went wrong, so one
``except STTError`` handles every way a transcription can fail. ``underlying_error`` says why:

- ``TTSError``: an ``ApiError`` (the server refused), a ``PersoConnectionError`` /
  ``PersoTimeoutError`` / ``InvalidResponseError`` (transport or answer), a ``TTSDecodeError``
  (the audio that came back is not valid base64, or empty);
- ``STTError``: the same server and transport errors, an ``AudioFormatError`` (the audio cannot
  be read: a malformed WAV, data that is not audio; checked locally, before any request), a
  ``RecordingError`` (the recording source could not be opened or failed mid-way);
- ``STFError``: ``None`` for an upload that timed out or whose channel closed early, or on a
  REST-only session; an ``AudioFormatError`` for an empty file.

Two kinds of error keep their own class, because they are not failures of the media operation
but of the call itself, raised before anything is attempted: ``InvalidInputError`` for an
argument of the wrong type or value (a message that is not a string, a non-positive timeout, a
path that names no file, a text-mode file object) and ``SessionClosedError`` for a session that is
or gets closed (as every ``Session`` method). Recorder misuse (starting twice, stopping what was
never started) stays a ``RecordingError``. Every media-class error a session method raises is
also given to the session's error handler, except the ``STFError`` of a session without WebRTC
(a usage error, raised before anything is attempted).
"""

from __future__ import annotations

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
]


class PersoError(Exception):
    """Root of every exception raised by perso_sync."""


class ApiError(PersoError):
    """The server answered with a non-2xx status.

    ``error_code`` is the HTTP status; ``code``, ``detail`` and ``attr`` are the first entry of the
    body's ``errors`` list, verbatim (``code="UNKNOWN_ERROR"`` when the body has none or is not
    JSON). ``str(err)`` is ``"{status}:{attr}_{detail}"`` when ``attr`` is set, else
    ``"{status}:{detail}"``.
    """

    def __init__(self, error_code: int, code: str, detail: str, attr: str | None = None) -> None:
        super().__init__(error_code, code, detail, attr)
        self.error_code = error_code
        self.code = code
        self.detail = detail
        self.attr = attr

    def __str__(self) -> str:
        if self.attr:
            return f"{self.error_code}:{self.attr}_{self.detail}"
        return f"{self.error_code}:{self.detail}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(error_code={self.error_code!r}, code={self.code!r}, "
            f"detail={self.detail!r}, attr={self.attr!r})"
        )


class SessionCreationError(ApiError):
    """An ``ApiError`` met while creating a session id, re-raised with its fields verbatim.

    Raised for any server ``code`` other than the two with subclasses below, e.g. ``invalid``
    with a "... not found" detail, meaning an org-level feature is not assigned.
    """

    @classmethod
    def from_api_error(cls, source: ApiError) -> SessionCreationError:
        """Re-raise ``source`` as the most specific session-creation class, never twice."""
        if isinstance(source, SessionCreationError):
            return source
        target: type[SessionCreationError] = {
            "does_not_exist": DoesNotExistError,
            "not_in_organization": NotInOrganizationError,
        }.get(source.code, cls)
        return target(source.error_code, source.code, source.detail, source.attr)


class DoesNotExistError(SessionCreationError):
    """Code ``does_not_exist``: a referenced resource (e.g. a prompt id) does not exist.

    ``attr`` names the input field that referenced it (e.g. ``"prompt"``).
    """


class NotInOrganizationError(SessionCreationError):
    """Code ``not_in_organization``: the resource exists but is not assigned to your org."""


class LLMStreamingResponseError(PersoError):
    """An LLM stream line could not be parsed, or an event had ``status != "success"``."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def __str__(self) -> str:
        return self.description


class LLMError(PersoError):
    """An LLM turn failed; ``underlying_error`` is an ``ApiError`` or ``LLMStreamingResponseError``
    (or a ``PersoConnectionError``/``PersoTimeoutError`` when the transport failed)."""

    def __init__(self, underlying_error: PersoError) -> None:
        super().__init__(underlying_error)
        self.underlying_error = underlying_error

    def __str__(self) -> str:
        return f"LLM Error: {self.underlying_error}"


class STTError(PersoError):
    """Speech-to-text failed; ``underlying_error`` is the ``ApiError``, a transport error, the
    ``AudioFormatError`` of audio that cannot be read, or the ``RecordingError`` of a recording
    source that failed (see the module docstring)."""

    def __init__(self, underlying_error: PersoError) -> None:
        super().__init__(underlying_error)
        self.underlying_error = underlying_error

    def __str__(self) -> str:
        detail = getattr(self.underlying_error, "detail", None) or str(self.underlying_error)
        return f"STT Error: {detail}"


class TTSDecodeError(PersoError):
    """The base64 audio returned by TTS could not be decoded."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def __str__(self) -> str:
        return f"TTS decode error: {self.description}"


class TTSError(PersoError):
    """Text-to-speech failed; ``underlying_error`` is an ``ApiError``, a transport error or a
    ``TTSDecodeError``."""

    def __init__(self, underlying_error: PersoError) -> None:
        super().__init__(underlying_error)
        self.underlying_error = underlying_error

    def __str__(self) -> str:
        return f"TTS Error: {self.underlying_error}"


class STFError(PersoError):
    """Speech-to-face failed: the file channel timed out or closed early, the session lacks
    WebRTC, or the file cannot be used. ``underlying_error`` is the cause when there is one of
    ours (e.g. the ``AudioFormatError`` of an empty file), else None."""

    def __init__(self, message: str, underlying_error: PersoError | None = None) -> None:
        super().__init__(message, underlying_error)
        self.message = message
        self.underlying_error = underlying_error

    def __str__(self) -> str:
        return self.message


class PersoConnectionError(PersoError):
    """The network failed: DNS, connection refused or reset, a body cut off mid-way."""


class PersoTimeoutError(PersoError):
    """A blocking call ran out of time (HTTP connect/read timeout, or a runtime call)."""


class Timeout(PersoTimeoutError):
    """The WebRTC connection did not become ready in time ("WebRTC connection timeout")."""

    def __init__(self, message: str = "WebRTC connection timeout") -> None:
        super().__init__(message)


class InvalidResponseError(PersoError):
    """A 2xx answer whose body is not JSON or does not fit the documented shape."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail, status)
        self.detail = detail
        self.status = status

    def __str__(self) -> str:
        return self.detail if self.status is None else f"{self.status}: {self.detail}"


class InvalidInputError(PersoError, ValueError):
    """Input refused before any request was sent; the message names the field."""


class MissingApiKeyError(InvalidInputError):
    """An account-scoped call was made without an API key (argument or
    ``$PERSO_INTERACTIVE_API_KEY``)."""


class UnsupportedTemplateError(InvalidInputError):
    """Form B: the session template's ``model_style.platform_type`` is not ``"webrtc"``."""


class AudioFormatError(InvalidInputError):
    """Audio that cannot be read: a WAV header too short, without ``RIFF`` or ``fmt ``, or data
    that is not audio at all."""


class RecordingError(PersoError):
    """STT recording or ``WavRecorder`` misuse: already recording, not started, no source."""


class SessionClosedError(PersoError):
    """A method was called on a session that has been closed (manually or as lost)."""


class ClientClosedError(PersoError):
    """A call on a ``PersoClient`` after ``close()`` (or after its ``with`` block ended)."""


class RuntimeUsageError(PersoError, RuntimeError):
    """The runtime was used in a way it cannot serve.

    - the blocking API was called from the runtime's own event-loop thread (e.g. from an async
      tool): use the async path there, or run the call in a worker thread;
    - a stream (``LlmStream``, ``session.frames()``) was iterated a second time;
    - the runtime has stopped (interpreter exit is under way).
    """
