"""The caller's-thread half of the :class:`perso_sync.session.Session` facade.

:class:`SessionCallerSide` is a base class of ``Session``: its methods are ``Session``'s
TTS, STT, legacy voice chat and media methods, and the guards every facade method starts with.
They run on the thread that calls them. The TTS and STT requests are plain REST calls made
right here; recording runs through :class:`perso_sync._session_stt_caller.SttRecording`
(also the caller's thread); anything that touches the connection is handed to the loop side
(:class:`perso_sync._session_loop.SessionLoop`) with a bounded ``Runtime.call``. Nothing here
keeps state of its own beyond what ``Session.__init__`` sets (see the class attributes).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from perso_sync._validate import check_text, check_timeout, refuse_loop_thread
from perso_sync.errors import (
    ApiError,
    AudioFormatError,
    InvalidInputError,
    InvalidResponseError,
    PersoConnectionError,
    PersoError,
    PersoTimeoutError,
    SessionClosedError,
    STTError,
    TTSDecodeError,
    TTSError,
)

if TYPE_CHECKING:
    import av

    from perso_sync._runtime import Runtime, SyncStream
    from perso_sync._session_loop import SessionLoop
    from perso_sync._session_stt_caller import SttRecording
    from perso_sync._session_subscribers import SessionSubscribers
    from perso_sync.audio import AudioSource
    from perso_sync.client import PersoClient
    from perso_sync.models import STTResponse
    from perso_sync.session import Session

__all__ = ["LOOP_CALL_TIMEOUT", "MediaRecording", "SessionCallerSide"]

_log = logging.getLogger("perso_sync.session")

#: Seconds a blocking hop onto the loop may take for a quick operation (a send, a state reset).
LOOP_CALL_TIMEOUT = 10.0

_SPEECH_END = (".", "?", "!")


class MediaRecording:
    """A running recording of the avatar's media, returned by :meth:`perso_sync.Session.record`.

    ``stop()`` finalizes the file (idempotent); the recording also stops when the session
    closes. Usable as a context manager: leaving the block stops it.
    """

    def __init__(self, session: Session, path: str) -> None:
        self._session = session
        self._path = path
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        """The file being written."""
        return self._path

    @property
    def active(self) -> bool:
        """True until :meth:`stop` ran or the session closed."""
        return not self._stopped and not self._session.closed

    def stop(self, timeout: float | None = LOOP_CALL_TIMEOUT) -> None:
        """Stop recording and finalize the file; no-op when already stopped or closed."""
        check_timeout("timeout", timeout)
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._session._stop_recording(timeout)

    def __enter__(self) -> MediaRecording:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MediaRecording(path={self._path!r}, active={self.active})"


class SessionCallerSide:
    """TTS, STT, legacy voice chat and media methods of :class:`perso_sync.session.Session`.

    Not used on its own: ``Session.__init__`` sets the attributes below.
    """

    _pid: int
    _session_id: str
    _client: PersoClient
    _runtime: Runtime
    _loop: SessionLoop
    _stt: SttRecording
    _subscribers: SessionSubscribers

    # ------------------------------------------------------------------ TTS
    def process_tts(
        self,
        message: str,
        resample: bool = False,
        locale: str | None = None,
        output_format: str | None = None,
    ) -> bytes | None:
        """Synthesize ``message`` to audio (WAV or MP3 bytes) without the avatar speaking.

        Emoji are removed and the text trimmed; empty text returns ``None`` with no request.
        A ``.`` is appended unless the text ends in ``.``, ``?`` or ``!``. The TTS state is on
        during the call. With ``resample``, the audio becomes 16 kHz mono 16-bit WAV (the
        original bytes are returned if conversion fails). Raises :class:`TTSError` (wrapping the
        :class:`ApiError` or :class:`TTSDecodeError`), also given to the error handler.
        """
        from perso_sync._emoji import remove_emoji

        self._ensure_blocking_call("process_tts")
        check_text("message", message, allow_blank=True)
        text = remove_emoji(message).strip()
        if not text:
            return None
        if not text.endswith(_SPEECH_END):
            text += "."
        self._loop.tts_call(done=False)
        try:
            audio = self._synthesize(text, locale, output_format)
        except TTSError as exc:
            self._subscribers.report_error(exc, raised=True)
            raise
        finally:
            self._loop.tts_call(done=True)
        if resample:
            audio = _resample_or_keep(audio)
        return audio

    def _synthesize(self, text: str, locale: str | None, output_format: str | None) -> bytes:
        try:
            tts = self._client.make_tts(
                self._session_id, text, locale=locale, output_format=output_format
            )
        except (ApiError, PersoConnectionError, PersoTimeoutError, InvalidResponseError) as exc:
            raise TTSError(exc) from exc
        encoded = tts.audio
        if not isinstance(encoded, str):
            raise TTSError(TTSDecodeError("Invalid Base64 audio data"))
        try:
            # Whitespace (line-wrapped base64) is allowed, as atob() allows it; nothing else.
            audio = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TTSError(TTSDecodeError("Invalid Base64 audio data")) from exc
        if not audio:
            raise TTSError(TTSDecodeError("Empty audio data"))
        return audio

    # ------------------------------------------------------------------ STT
    def transcribe_audio(
        self, audio: bytes | str | os.PathLike[str] | BinaryIO, language: str | None = None
    ) -> str:
        """Transcribe ``audio`` (bytes, a path or a binary file object) and return the text.

        WAV is sent as is; other formats PyAV reads (MP3, OGG, FLAC, ...) are converted to
        16 kHz mono WAV first. ``language`` e.g. ``"ko"``.

        Every failure of the transcription is an :class:`STTError` (also given to the error
        handler): audio that cannot be read (a malformed WAV, data that is not audio) is caught
        before any request, with the :class:`perso_sync.errors.AudioFormatError` as its
        ``underlying_error``; a refused or failed request has the ``ApiError`` or transport
        error. A wrong argument (not bytes, a path or a binary file object; a path that names
        no file) raises :class:`InvalidInputError`.
        """
        return self.transcribe_audio_detailed(audio, language).text

    def transcribe_audio_detailed(
        self,
        audio: bytes | str | os.PathLike[str] | BinaryIO,
        language: str | None = None,
    ) -> STTResponse:
        """Like :meth:`~perso_sync.Session.transcribe_audio`, returning the whole
        ``STTResponse`` (``text``, ``locale``, ``normalized_text``)."""
        from perso_sync.audio import read_audio_input, to_stt_wav

        self._ensure_blocking_call("transcribe_audio")
        raw = read_audio_input(audio)
        try:
            wav = to_stt_wav(raw)
        except AudioFormatError as exc:
            raise self._stt_failure(exc) from exc
        return self._transcribe_wav(wav, language)

    def _transcribe_wav(self, wav: bytes, language: str | None) -> STTResponse:
        try:
            return self._client.transcribe(self._session_id, wav, language=language)
        except (ApiError, PersoConnectionError, PersoTimeoutError, InvalidResponseError) as exc:
            raise self._stt_failure(exc) from exc

    def _stt_failure(self, cause: PersoError) -> STTError:
        return self._stt.failure(cause)

    def start_process_stt(self, timeout: float | None = None, source: Any = None) -> None:
        """Start recording the user's voice for STT (16 kHz mono WAV); RECORDING state on.

        ``source``: a WAV/audio file path, an iterable of PCM frames or an aiortc audio track (see
        :class:`perso_sync.WavRecorder`); ``None`` = the system microphone. ``timeout`` (seconds;
        the JS SDK takes milliseconds) stops recording by itself, keeping the audio for
        :meth:`~perso_sync.Session.stop_process_stt`. Raises :class:`RecordingError` when already
        recording (or audio from a timed-out recording is still pending); :class:`STTError` (also
        given to the error handler) when the source cannot be opened, its ``underlying_error`` the
        :class:`RecordingError` of a microphone that cannot be opened or the
        :class:`perso_sync.errors.AudioFormatError` of a file that is not audio;
        :class:`InvalidInputError` for a bad argument or a path that names no file.
        """
        self._ensure_blocking_call("start_process_stt")
        timeout = check_timeout("timeout", timeout)
        self._stt.start(source, timeout)

    def stop_process_stt(self, language: str | None = None) -> str:
        """Stop the STT recording, transcribe it and return the text.

        The WAV is kept in :attr:`~perso_sync.Session.last_recorded_audio_file`. Raises
        :class:`RecordingError` ("STT recording has not been started" / "STT recording is not in
        progress") and :class:`STTError` (also given to the error handler) when the request fails or
        the recording source failed mid-way (its ``underlying_error`` is then the
        :class:`RecordingError`).
        """
        self._ensure_blocking_call("stop_process_stt")
        wav = self._stt.stop()
        return self._transcribe_wav(wav, language).text

    def is_stt_recording(self) -> bool:
        """True while recording, or when a timed-out recording waits for
        :meth:`~perso_sync.Session.stop_process_stt`."""
        return self._stt.is_recording()

    @property
    def last_recorded_audio_file(self) -> bytes | None:
        """The WAV bytes of the last STT recording, or None before the first one."""
        return self._stt.last_recorded

    # ------------------------------------------------------------------ legacy voice chat
    def start_voice_chat(self, source: AudioSource | None = None) -> None:
        """Deprecated legacy voice chat: send ``record-start``; the server records the audio the
        session sends until :meth:`~perso_sync.Session.stop_voice_chat`. Use
        :meth:`~perso_sync.Session.start_process_stt`.

        On a session opened with ``voice_chat=True`` the outgoing audio track plays ``source`` in
        real time from now on: ``None`` is the system microphone; any source
        :meth:`perso_sync.WavRecorder.start` takes works (a path, audio bytes or a binary file
        object of any format FFmpeg reads, an iterable of 16 kHz mono 16-bit PCM ``bytes`` or
        ``av.AudioFrame`` items, an aiortc audio track). A finite source ends in silence;
        :meth:`~perso_sync.Session.wait_voice_chat_sent` waits for its last frame. Without
        ``voice_chat=True`` the session sends no audio (as the official SDK without
        ``enableVoiceChat``): only ``record-start`` goes out, and a ``source`` raises
        :class:`InvalidInputError`.

        RECORDING goes on. Raises :class:`STFError` on a REST-only session, :class:`RecordingError`
        when voice chat already records (call :meth:`~perso_sync.Session.stop_voice_chat` first),
        :class:`STTError` (also given to the error handler) when the source cannot be opened
        (``underlying_error``: the :class:`RecordingError` of a microphone that cannot be opened, or
        the :class:`perso_sync.errors.AudioFormatError` of a file that is not audio),
        :class:`InvalidInputError` for a bad source argument or a path that names no file.
        """
        warnings.warn(
            "start_voice_chat() is deprecated; use start_process_stt()",
            DeprecationWarning,
            stacklevel=2,
        )
        self._ensure_open()
        self._loop.require_core("start_voice_chat")
        self._stt.start_voice_chat(source)

    def wait_voice_chat_sent(self, timeout: float | None = None) -> bool:
        """Block until the source of :meth:`~perso_sync.Session.start_voice_chat` has been sent in
        full.

        True once a finite source (a file, audio bytes, a finite iterable) has ended and its last
        frame went out, or at once when nothing plays; False after ``timeout`` seconds (a live
        source, a microphone or a track, ends only with
        :meth:`~perso_sync.Session.stop_voice_chat`). Raises :class:`SessionClosedError` when the
        session is or gets closed.
        """
        self._ensure_blocking_call("wait_voice_chat_sent")
        timeout = check_timeout("timeout", timeout)
        uplink = self._loop.uplink
        played = True if uplink is None else uplink.wait_played(timeout)
        self._ensure_open()
        return played

    def stop_voice_chat(self, language: str | None = None) -> None:
        """Deprecated legacy voice chat: the outgoing audio goes back to silence and
        ``record-end-stt`` is sent; the server's ``stt`` text goes to the STT result callback if
        set, else to :meth:`~perso_sync.Session.process_chat`. Use
        :meth:`~perso_sync.Session.stop_process_stt`."""
        warnings.warn(
            "stop_voice_chat() is deprecated; use stop_process_stt()",
            DeprecationWarning,
            stacklevel=2,
        )
        self._ensure_open()
        data: dict[str, Any] = {} if language is None else {"language": language}
        self._stt.stop_voice_chat(data)

    # ------------------------------------------------------------------ the avatar's media
    @property
    def audio_track(self) -> Any:
        """The avatar's remote aiortc audio track (None on a REST-only session). The session
        drains it itself: use :meth:`~perso_sync.Session.record` rather than calling ``recv()``."""
        return None if self._loop.core is None else self._loop.core.audio_track

    @property
    def video_track(self) -> Any:
        """The avatar's remote aiortc video track (None on a REST-only session or with
        ``receive_video=False``). Use :meth:`~perso_sync.Session.frames` or
        :meth:`~perso_sync.Session.record` to read it."""
        return None if self._loop.core is None else self._loop.core.video_track

    def frames(self, timeout: float | None = None) -> SyncStream[av.VideoFrame]:
        """A sync iterator of the avatar's decoded video frames (``av.VideoFrame``) from now on.

        A slow reader skips frames (at most two are buffered). ``timeout`` bounds each wait for
        the next frame (:class:`PersoTimeoutError`). Ends when the session closes. Close it
        (``with`` block, ``close()`` or ``break``) when done. Raises
        :class:`InvalidInputError` when the session receives no video (REST-only or
        ``receive_video=False``).
        """
        self._ensure_open()
        timeout = check_timeout("timeout", timeout)
        core = self._loop.core
        if core is None or core.video_track is None:
            raise InvalidInputError(
                "this session receives no video (REST-only, or receive_video=False)"
            )
        return self._runtime.iterate(core.subscribe_video_frames, item_timeout=timeout)

    def latest_frame(self) -> av.VideoFrame | None:
        """The most recent decoded video frame, or None (none yet, or no video)."""
        self._ensure_open()
        core = self._loop.core
        return None if core is None else core.latest_video_frame()

    def record(self, path: str | os.PathLike[str]) -> MediaRecording:
        """Record the avatar's audio and video to ``path`` until stopped or the session closes.

        ``.wav`` records audio only; ``.mp4`` / ``.mkv`` / ... record audio and video. Encoding
        runs on the runtime loop: keep the video size small when recording. Returns a
        :class:`MediaRecording` (``stop()``, context manager). Raises :class:`RecordingError`
        when a recording already runs or the file cannot be opened; WebRTC sessions only
        (:class:`STFError` otherwise).
        """
        self._ensure_open()
        target = os.fspath(path)
        self._call_loop(self._loop.start_recording, target)
        # Only Session derives from this class: self is the session the recording reports on.
        return MediaRecording(cast("Session", self), target)

    def _stop_recording(self, timeout: float | None) -> None:
        core = self._loop.core
        if core is None or self._loop.closed or core.closed:
            return  # closing the core finalized the file
        with contextlib.suppress(SessionClosedError):
            self._runtime.call(core.stop_recording, timeout=timeout)

    # ------------------------------------------------------------------ guards (every method)

    def _ensure_open(self) -> None:
        self._check_owner()
        if self._loop.closing:  # set with, or before, closed
            raise SessionClosedError(f"session {self._session_id} is closed")

    def _check_owner(self) -> None:
        # After os.fork() the child has this object but neither the runtime thread nor the
        # connection behind it: refuse at once instead of waiting on a loop that is not there.
        if os.getpid() != self._pid:
            from perso_sync.errors import RuntimeUsageError

            raise RuntimeUsageError(
                f"session {self._session_id} belongs to the parent process (pid {self._pid}); "
                "a forked child must open its own session"
            )

    def _ensure_blocking_call(self, what: str) -> None:
        # For the methods that block the calling thread (REST, waits): refused on the loop.
        self._ensure_open()
        refuse_loop_thread(f"Session.{what}()")

    def _call_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._runtime.call(fn, *args, timeout=LOOP_CALL_TIMEOUT)


def _resample_or_keep(audio: bytes) -> bytes:
    from perso_sync.audio import TTS_TARGET_SAMPLE_RATE, resample_wav

    try:
        return resample_wav(audio, TTS_TARGET_SAMPLE_RATE)
    except Exception as exc:  # noqa: BLE001 -- documented fallback: the original audio
        _log.debug("TTS resample failed, returning the original audio: %s", exc)
        return audio
