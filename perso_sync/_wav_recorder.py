""":class:`WavRecorder`: the caller's thread starts and stops a take; a capture task on the
runtime loop pumps the source into it. Public names are re-exported by :mod:`perso_sync.audio`.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final

from perso_sync._audio_input import PcmSink
from perso_sync._audio_sources import AudioSource, PcmSource, open_source
from perso_sync._wav import TTS_TARGET_SAMPLE_RATE, check_sample_rate, encode_wav
from perso_sync.errors import InvalidInputError, RecordingError, RuntimeUsageError

if TYPE_CHECKING:
    from concurrent.futures import Future

#: How long ``stop()`` waits for the capture task to let go of its source (seconds).
STOP_TIMEOUT: Final = 5.0
#: Wall-clock slack after ``timeout`` for sources that deliver audio late or in bursts (seconds).
TIMEOUT_GRACE: Final = 1.0


class _Take:
    """One recording: the capture task's state, shared between the loop and user threads."""

    def __init__(
        self, source: PcmSource, sink: PcmSink, channels: int, max_seconds: float | None
    ) -> None:
        self.source = source
        self.sink = sink
        self.channels = channels
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.pcm = bytearray()
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self.started = False  # the capture task runs (cancelling it is safe from now on)
        self.closing = False  # stop() was called: a task that has not started yet must not read
        self.sealed = False  # stop() took the audio: later samples are dropped
        self.future: Future[None] | None = None

    def _limit_bytes(self) -> int | None:
        if self.max_seconds is None or self.sink.rate is None:
            return None
        return round(self.max_seconds * self.sink.rate) * self.channels * 2

    def add(self, pcm: bytes) -> bool:
        """Keep ``pcm``; False once the take is full (``timeout`` seconds of audio) or sealed."""
        with self.lock:
            if self.sealed:
                return False
            limit = self._limit_bytes()
            if limit is None:
                self.pcm += pcm
                return True
            self.pcm += pcm[: max(0, limit - len(self.pcm))]
            return len(self.pcm) < limit

    async def wait_for_room(self) -> None:
        """A recording keeps everything it is given: there is always room."""

    async def run(self, wall_limit: float | None) -> None:
        import anyio

        with self.lock:
            skip = self.closing
            self.started = True
        try:
            if not skip:
                with anyio.move_on_after(math.inf if wall_limit is None else wall_limit):
                    await self.source.pump(self)
        except Exception as exc:  # noqa: BLE001 -- a failing source is reported by stop()
            with self.lock:
                self.error = exc
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self.source.close()
            except Exception as exc:  # noqa: BLE001 -- reported by stop() like a capture error
                with self.lock:
                    self.error = self.error or exc
            finally:
                self.ended.set()

    def finish(self) -> tuple[bytes, int | None, BaseException | None]:
        """End the capture (bounded wait) and take the audio: (pcm, rate, error)."""
        with self.lock:
            self.closing = True
            cancel = self.started and not self.ended.is_set()
        if cancel and self.future is not None:
            self.future.cancel()
        # A task that had not started yet sees `closing`, closes its source and ends at once.
        self.ended.wait(STOP_TIMEOUT)
        with self.lock:
            self.sealed = True
            return bytes(self.pcm), self.sink.rate, self.error

    def abandon(self) -> None:
        """The recorder was garbage-collected while recording: end the capture, drop the audio.
        The capture task releases the source on the loop; nothing here blocks."""
        with self.lock:
            self.closing = True
            self.sealed = True
            cancel = self.started
        if cancel and self.future is not None:
            self.future.cancel()

    def _close_at_exit(self) -> None:
        with self.lock:
            self.closing = True
        if self.future is not None:
            self.future.cancel()
        self.source.close_at_exit()


class WavRecorder:
    """Records audio into a WAV file: the Python counterpart of the JS SDK's ``WavRecorder``.

    ``channels`` (1 or 2) and ``target_sample_rate`` (Hz; ``None`` keeps the rate of the first
    captured frame) fix the output: 16-bit PCM WAV. ::

        recorder = WavRecorder(target_sample_rate=16000)
        recorder.start()                      # the system microphone
        ...
        wav = recorder.stop()                 # bytes of a WAV file

        recorder.start("speech.mp3", timeout=5)  # the first 5 s of a file
        recorder.wait()                       # until the take is complete
        wav = recorder.stop()

    **Lifecycle.** :meth:`start` opens the source (errors surface there) and starts capturing on
    perso_sync's background loop. Capture ends by :meth:`stop`, by ``timeout``, or when the
    source ends; in the last two cases the audio waits for :meth:`stop`. A recorder holds one
    recording at a time: :meth:`is_recording` is True from :meth:`start` until :meth:`stop` —
    including while audio waits after a timeout, as the JS ``isSTTRecording()`` — and
    :meth:`start` then raises :class:`RecordingError`. :meth:`is_capturing` says whether audio is
    still coming in; :meth:`wait` blocks until it is not.

    **Threads.** Every method may be called from any thread except perso_sync's own loop thread
    (e.g. inside an async tool), where the blocking ones raise :class:`RuntimeUsageError`.
    ``start``/``stop`` are serialised by a lock: of two concurrent ``start`` calls one raises,
    of two ``stop`` calls one gets the audio and the other :class:`RecordingError`. Separate
    recorders record independently (a microphone may refuse a second opener).
    """

    def __init__(self, channels: int = 1, target_sample_rate: int | None = None) -> None:
        if channels not in (1, 2) or isinstance(channels, bool):
            raise InvalidInputError(f"channels must be 1 or 2, not {channels!r}")
        if target_sample_rate is not None:
            check_sample_rate(target_sample_rate)
        self.channels = channels
        self.target_sample_rate = target_sample_rate
        self._lock = threading.Lock()
        self._take: _Take | None = None
        self._abandon_on_gc: weakref.finalize[[], WavRecorder] | None = None
        self._starting = False

    def __repr__(self) -> str:
        state = "recording" if self.is_recording() else "idle"
        return (
            f"WavRecorder(channels={self.channels}, "
            f"target_sample_rate={self.target_sample_rate!r}, {state})"
        )

    @staticmethod
    def _runtime_off_loop(what: str) -> Any:
        from perso_sync._runtime import get_runtime

        runtime = get_runtime()
        if runtime.in_loop_thread():
            raise RuntimeUsageError(
                f"WavRecorder.{what}() blocks and cannot run on perso_sync's loop thread; "
                "call it from a worker thread"
            )
        return runtime

    def start(
        self,
        source: AudioSource | None = None,
        timeout: float | None = None,
        *,
        pcm_sample_rate: int = TTS_TARGET_SAMPLE_RATE,
        pcm_channels: int = 1,
    ) -> None:
        """Start recording from ``source``:

        * ``None`` — the system microphone (:class:`Microphone` with the platform default;
          :class:`RecordingError` when there is none), or a :class:`Microphone` for another
          device;
        * a path, the bytes of an audio file, or a binary file object — any format FFmpeg reads
          (WAV, MP3, OGG, FLAC, ...), decoded as fast as possible, not in real time;
        * an aiortc audio ``MediaStreamTrack`` — read until it ends (the track is not stopped);
        * an iterable of frames — ``av.AudioFrame`` objects, or ``bytes`` of 16-bit signed
          little-endian interleaved PCM at ``pcm_sample_rate`` Hz (default 16000) with
          ``pcm_channels`` channels (default 1). It is iterated in a worker thread, so it may
          block while waiting for audio.

        ``timeout`` (seconds) stops the capture by itself: the take keeps at most ``timeout``
        seconds of audio (exact for any source), and capture also ends ``timeout + 1`` s after
        start in wall time, for live sources that stall. The audio then waits for :meth:`stop`.

        Raises :class:`RecordingError` if already recording or the microphone cannot be opened,
        :class:`InvalidInputError` for a bad argument or missing file, :class:`AudioFormatError`
        for a file that is not audio.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0
        ):
            raise InvalidInputError(
                f"timeout must be a positive number of seconds, not {timeout!r}"
            )
        check_sample_rate(pcm_sample_rate)
        if pcm_channels not in (1, 2) or isinstance(pcm_channels, bool):
            raise InvalidInputError(f"pcm_channels must be 1 or 2, not {pcm_channels!r}")
        runtime = self._runtime_off_loop("start")
        with self._lock:
            if self._take is not None or self._starting:
                raise RecordingError("WavRecorder is already recording; call stop() first")
            self._starting = True
        try:
            opened = open_source(source, pcm_sample_rate, pcm_channels)
            take = _Take(
                opened, PcmSink(self.target_sample_rate, self.channels), self.channels, timeout
            )
            from perso_sync._runtime import register_closable

            register_closable(take)
            take.future = runtime.spawn(
                take.run, None if timeout is None else timeout + TIMEOUT_GRACE
            )
            with self._lock:
                self._take = take
                # A recorder dropped while recording must not keep a microphone open.
                self._abandon_on_gc = weakref.finalize(self, take.abandon)
        finally:
            with self._lock:
                self._starting = False

    def stop(self) -> bytes:
        """End the recording and return it as WAV bytes (16-bit PCM, ``channels`` channels).

        Works after a ``timeout`` or the end of the source too (the audio waited). Raises
        :class:`RecordingError` when not recording, or when the source failed mid-way (the
        cause is chained).
        """
        self._runtime_off_loop("stop")
        with self._lock:
            take, self._take = self._take, None
            finalizer, self._abandon_on_gc = self._abandon_on_gc, None
        if take is None:
            raise RecordingError("WavRecorder is not recording; call start() first")
        if finalizer is not None:
            finalizer.detach()
        pcm, rate, error = take.finish()
        if error is not None:
            raise RecordingError(f"recording failed: {error}") from error
        return encode_wav(
            pcm, rate or self.target_sample_rate or TTS_TARGET_SAMPLE_RATE, self.channels
        )

    def is_recording(self) -> bool:
        """True from :meth:`start` until :meth:`stop`, also while audio waits after a timeout."""
        with self._lock:
            return self._take is not None

    def is_capturing(self) -> bool:
        """True while audio is still coming in (not yet ended by timeout, source end or stop)."""
        with self._lock:
            take = self._take
        return take is not None and not take.ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until capture has ended by itself (timeout or source end); True if it has (or
        nothing is recording), False if ``timeout`` seconds passed first."""
        self._runtime_off_loop("wait")
        with self._lock:
            take = self._take
        return take is None or take.ended.wait(timeout)


def create_wav_recorder(channels: int = 1, target_sample_rate: int | None = None) -> WavRecorder:
    """A new :class:`WavRecorder` (the JS SDK's ``createWavRecorder``)."""
    return WavRecorder(channels=channels, target_sample_rate=target_sample_rate)
