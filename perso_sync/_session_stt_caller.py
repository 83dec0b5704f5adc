"""A session's STT recording and legacy voice chat, run on the caller's thread.

:class:`SttRecording` is what ``Session.start_process_stt`` / ``stop_process_stt`` and the
deprecated ``start_voice_chat`` / ``stop_voice_chat`` forward to. It runs on the thread that
called them: opening and stopping a :class:`perso_sync.WavRecorder` blocks (a microphone, a
reader thread), so it never runs on the runtime loop. The two exceptions: the auto-stop of a
recording with a timeout sleeps on the loop and stops the recorder in a worker thread, and a
close may stop the recorder from any thread (:meth:`SessionLoop.run_blocking
<perso_sync._session_loop.SessionLoop.run_blocking>` moves it off the loop). The voice chat's
``record-start`` / ``record-end-stt`` messages are sent by the loop side
(:class:`perso_sync._session_loop.SessionLoop`), which also keeps the chat states.

Transcribing the recorded WAV is a plain REST call and stays with the facade.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from perso_sync.errors import (
    AudioFormatError,
    InvalidInputError,
    PersoError,
    RecordingError,
    STTError,
)
from perso_sync.models import ChatState

if TYPE_CHECKING:
    from perso_sync._runtime import Runtime
    from perso_sync._session_loop import SessionLoop
    from perso_sync._session_subscribers import SessionSubscribers
    from perso_sync.audio import AudioSource, WavRecorder

__all__ = ["SttRecording"]

_log = logging.getLogger("perso_sync.session")


class SttRecording:
    """One session's STT recorder (one recording at a time) and legacy voice chat state.

    ``call_loop(fn, *args)`` runs a coroutine of the loop side and returns its result (the
    facade's bounded ``Runtime.call``).
    """

    def __init__(
        self,
        *,
        runtime: Runtime,
        loop: SessionLoop,
        subscribers: SessionSubscribers,
        lock: contextlib.AbstractContextManager[object],
        call_loop: Callable[..., Any],
    ) -> None:
        self._runtime = runtime
        self._loop = loop
        self._subscribers = subscribers
        self._lock = lock  # the session's bookkeeping lock: guards the auto-stop timer
        self._call_loop = call_loop

        # Held while a recorder starts or stops (both block); one recording at a time.
        self._stt_lock = threading.Lock()
        self._recorder: WavRecorder | None = None
        self._pending: bytes | None = None
        self._error: STTError | None = None
        self._timer: concurrent.futures.Future[None] | None = None
        self.last_recorded: bytes | None = None
        # Legacy voice chat: whether record-start is on.
        self._voice_lock = threading.Lock()
        self._voice_recording = False

    def failure(self, cause: PersoError) -> STTError:
        # Every STT failure is an STTError (errors module docstring), given to the error handler.
        error = STTError(cause)
        self._subscribers.report_error(error, raised=True)
        return error

    # ------------------------------------------------------------------ STT recording

    def start(self, source: Any, timeout: float | None) -> None:
        from perso_sync.audio import TTS_TARGET_SAMPLE_RATE, WavRecorder

        with self._stt_lock:
            current = self._recorder
            if current is not None and (current.is_recording() or self._pending is not None):
                raise RecordingError("STT recording is already in progress")
            recorder = WavRecorder(channels=1, target_sample_rate=TTS_TARGET_SAMPLE_RATE)
            try:
                recorder.start(source, timeout=timeout)  # caps the take at `timeout` s of audio
            except (RecordingError, AudioFormatError) as exc:
                raise self.failure(exc) from exc
            self._recorder = recorder
            self._pending = None
            self._error = None
            self._loop.set_state(ChatState.RECORDING, True)
            if timeout is not None:
                timer = self._runtime.spawn(self._auto_stop, recorder, timeout)
                with self._lock:
                    self._timer = timer

    async def _auto_stop(self, recorder: WavRecorder, timeout: float) -> None:
        import anyio

        from perso_sync._runtime import run_sync_off_loop

        await anyio.sleep(timeout)
        await run_sync_off_loop(self._auto_stop_now, recorder)

    def _auto_stop_now(self, recorder: WavRecorder) -> None:
        with self._stt_lock:
            if self._recorder is not recorder or not recorder.is_recording():
                return
            try:
                self._pending = recorder.stop()
            except RecordingError as exc:  # the source failed: stop_process_stt raises it
                self._error = self.failure(exc)
            finally:
                self._loop.set_state(ChatState.RECORDING, False)

    def stop(self) -> bytes:
        """The recorded WAV (kept as :attr:`last_recorded`); the recording is over."""
        with self._stt_lock:
            recorder = self._recorder
            if recorder is None:
                raise RecordingError("STT recording has not been started")
            pending, self._pending = self._pending, None
            failed, self._error = self._error, None
            with self._lock:
                timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            if pending is not None:
                wav = pending
            elif failed is not None:
                self._recorder = None
                raise failed  # the source failed after a timeout stop: already reported
            elif recorder.is_recording():
                try:
                    wav = recorder.stop()
                except RecordingError as exc:
                    raise self.failure(exc) from exc
                finally:
                    self._loop.set_state(ChatState.RECORDING, False)
            else:
                raise RecordingError("STT recording is not in progress")
            self.last_recorded = wav
        return wav

    def is_recording(self) -> bool:
        recorder = self._recorder
        return recorder is not None and (recorder.is_recording() or self._pending is not None)

    def close(self) -> None:
        """At session close, from any thread: the timer stops, a running recorder too."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        recorder = self._recorder
        if recorder is None or not recorder.is_recording():
            return
        # Stopping a recorder may block (it joins its reader).
        self._loop.run_blocking(self._stop_recorder, recorder)

    def _stop_recorder(self, recorder: WavRecorder) -> None:
        with self._stt_lock:
            if recorder.is_recording():
                try:
                    recorder.stop()
                except PersoError as exc:
                    _log.debug("stopping the STT recorder at close: %s", exc)

    # ------------------------------------------------------------------ legacy voice chat

    def start_voice_chat(self, source: AudioSource | None) -> None:
        uplink = self._loop.uplink
        if uplink is None:
            if source is not None:
                raise InvalidInputError(
                    "start_voice_chat(source=...) needs a session opened with voice_chat=True: "
                    "only then does the offer carry an outgoing audio track"
                )
            self._call_loop(self._loop.send, "record-start", {})
            self._loop.set_state(ChatState.RECORDING, True)
            return
        from perso_sync.audio import open_audio_source

        with self._voice_lock:
            if self._voice_recording:
                raise RecordingError(
                    "voice chat is already recording; call stop_voice_chat() first"
                )
            try:
                opened = open_audio_source(source)
            except (RecordingError, AudioFormatError) as exc:
                raise self.failure(exc) from exc
            try:
                feed = self._call_loop(self._loop.start_voice, uplink, opened)
            except BaseException:
                with contextlib.suppress(PersoError):
                    self._call_loop(opened.close)
                raise
            self._voice_recording = True
            self._loop.spawn(self._loop.play_voice, feed)
            self._loop.set_state(ChatState.RECORDING, True)

    def stop_voice_chat(self, data: dict[str, Any]) -> None:
        with self._voice_lock:
            self._call_loop(self._loop.end_voice_chat, data)
            self._voice_recording = False
