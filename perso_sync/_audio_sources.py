"""What can be recorded (:class:`perso_sync.audio.WavRecorder`) or played on the voice-chat
uplink (:class:`perso_sync.audio.UplinkAudio`): the microphone, audio files, iterables of PCM
frames and aiortc tracks, each behind the :class:`PcmSource` protocol.

Threads: :func:`open_source` / :func:`open_audio_source` run on the caller's thread (they open
the device or the file, so a bad source fails at once); ``pump`` and ``close`` run in a task on
the runtime loop, which reads an aiortc track itself and sends a blocking iterator (a file
being decoded, a user's generator) to worker threads (``pull``); ``close_at_exit`` may run on
any thread. Public names are re-exported by :mod:`perso_sync.audio`.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol, TypeAlias, Union, cast

import attrs

from perso_sync._audio_input import PcmSink, av_errors, frame_from_pcm, import_av
from perso_sync._wav import TTS_TARGET_SAMPLE_RATE
from perso_sync.errors import AudioFormatError, InvalidInputError, RecordingError

if TYPE_CHECKING:
    import av

#: How long opening a capture device may take (seconds).
MICROPHONE_OPEN_TIMEOUT: Final = 5
# Frames a file source decodes per trip to a worker thread (files never block, so batch them).
_FILE_FRAMES_PER_PULL = 16


@attrs.frozen(kw_only=True)
class Microphone:
    """A capture device, opened with FFmpeg through aiortc's ``MediaPlayer``.

    Without ``device``/``format``, the platform default is used: on Linux PulseAudio's, then
    ALSA's ``default`` device; on macOS AVFoundation's default input (``"none:default"``).
    DirectShow (Windows) has no default device name: pass
    ``Microphone(device="audio=<name>", format="dshow")`` (``ffmpeg -list_devices true -f dshow
    -i dummy`` lists the names). ``options`` are FFmpeg input options (e.g.
    ``{"sample_rate": "16000"}``).
    """

    device: str | None = None
    format: str | None = None
    options: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def _attempts(self) -> list[tuple[str, str | None]]:
        if self.device is not None or self.format is not None:
            return [(self.device or "default", self.format)]
        platform: str = sys.platform  # a plain str: mypy would pin sys.platform to the host's
        if platform.startswith("linux"):
            return [("default", "pulse"), ("default", "alsa")]
        if platform == "darwin":
            return [("none:default", "avfoundation")]
        return []


if TYPE_CHECKING:
    from aiortc import MediaStreamTrack

#: What :meth:`WavRecorder.start` records from (see there).
AudioSource: TypeAlias = Union[
    str,
    "os.PathLike[str]",
    bytes,
    bytearray,
    memoryview,
    BinaryIO,
    "Microphone",
    "MediaStreamTrack",
    Iterable[Union[bytes, "av.AudioFrame"]],
]


class PcmTarget(Protocol):
    """Where a source's converted PCM goes: a recording's take, or the voice-chat uplink."""

    sink: PcmSink

    def add(self, pcm: bytes) -> bool:
        """Keep ``pcm``; False when no more is wanted (the source should stop)."""

    async def wait_for_room(self) -> None:
        """Return once more audio may be added (a fast source waits here for a slow reader)."""


class PcmSource(Protocol):
    """An opened source: what :func:`open_source` returns and a take or the uplink pumps."""

    async def pump(self, take: PcmTarget) -> None:
        """Feed converted audio to ``take.add`` until the source ends or ``add`` says stop."""

    async def close(self) -> None:
        """Release what the source owns; never raises for a normal close."""

    def close_at_exit(self) -> None:
        """Release what must not outlive the interpreter (threads), from any thread."""


class _TrackSource:
    """An aiortc audio track, read on the runtime loop; ``player`` is owned when we opened it."""

    def __init__(self, track: Any, player: Any = None) -> None:
        self._track = track
        self._player = player
        self._lock = threading.Lock()

    async def pump(self, take: PcmTarget) -> None:
        from aiortc.mediastreams import MediaStreamError

        frame_type = import_av().AudioFrame
        while True:
            try:
                frame = await self._track.recv()
            except MediaStreamError:  # the track ended: keep what the resampler still holds
                take.add(take.sink.flush())
                return
            if not isinstance(frame, frame_type):
                raise RecordingError(
                    f"the track delivered {type(frame).__name__}, not decoded audio frames"
                )
            # One 20 ms frame converts in microseconds, so it is fine to do it on the loop.
            if not take.add(take.sink.push(frame)):
                return

    async def close(self) -> None:
        if self._player is not None:
            from perso_sync._runtime import run_sync_off_loop

            # Stopping MediaPlayer joins its reader thread: never on the loop.
            await run_sync_off_loop(self.close_at_exit)

    def close_at_exit(self) -> None:
        with self._lock:
            player, self._player = self._player, None
        if player is not None and player.audio is not None:
            player.audio.stop()  # the last track stopped: the player's thread ends, file closes


class _BlockingSource:
    """Frames from an iterator that may block (a file being decoded, a user's generator), pulled
    in worker threads and converted there, so the loop never waits on it.

    ``bytes`` items are 16-bit signed little-endian interleaved PCM at ``pcm_rate`` with
    ``pcm_channels``; a sample frame split between two items is joined. ``av.AudioFrame`` items
    carry their own format.
    """

    def __init__(
        self,
        items: Iterator[object],
        *,
        batch: int,
        pcm_rate: int,
        pcm_channels: int,
        on_close: Any = None,
    ) -> None:
        self._items = items
        self._batch = batch
        self._pcm_rate = pcm_rate
        self._pcm_channels = pcm_channels
        self._on_close = on_close
        self._carry = b""
        self._closed = False
        # Held while a worker pulls: close() must not free a container FFmpeg is decoding.
        self._lock = threading.Lock()

    def _to_frame(self, item: object) -> av.AudioFrame | None:
        if isinstance(item, import_av().AudioFrame):
            return cast("av.AudioFrame", item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = self._carry + bytes(item)
            frame_bytes = 2 * self._pcm_channels
            whole = len(data) - len(data) % frame_bytes
            self._carry = data[whole:]
            if not whole:
                return None
            return frame_from_pcm(data[:whole], "s16", self._pcm_channels, self._pcm_rate)
        raise RecordingError(
            f"the audio source yielded {type(item).__name__}; expected bytes (16-bit PCM) "
            "or av.AudioFrame"
        )

    def pull(self, sink: PcmSink) -> tuple[bytes, bool]:
        """Up to ``batch`` items as PCM, and whether more may follow. Runs in a worker."""
        with self._lock:
            parts: list[bytes] = []
            for _ in range(self._batch):
                if self._closed:
                    return b"".join(parts), False
                try:
                    item = next(self._items)
                except StopIteration:
                    parts.append(sink.flush())
                    return b"".join(parts), False
                frame = self._to_frame(item)
                if frame is not None:
                    parts.append(sink.push(frame))
            return b"".join(parts), True

    async def pump(self, take: PcmTarget) -> None:
        from perso_sync._runtime import run_sync_off_loop

        while True:
            pcm, more = await run_sync_off_loop(self.pull, take.sink)
            if pcm and not take.add(pcm):
                return
            if not more:
                return
            await take.wait_for_room()

    def _close_locked(self) -> None:
        with self._lock:
            self._closed = True
            on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def close(self) -> None:
        self._closed = True  # a worker still pulling stops at its next item
        if self._on_close is not None:
            from perso_sync._runtime import run_sync_off_loop

            await run_sync_off_loop(self._close_locked)

    def close_at_exit(self) -> None:
        self._closed = True  # no thread of ours to stop; FFmpeg frees the container with it


def _open_microphone(mic: Microphone) -> _TrackSource:
    av = import_av()
    try:
        from aiortc.contrib.media import MediaPlayer
    except ImportError as exc:
        raise RecordingError(f"aiortc is needed to record from a microphone: {exc}") from exc
    attempts = mic._attempts()
    if not attempts:
        raise RecordingError(
            f"no default microphone on platform {sys.platform!r}: pass "
            "Microphone(device=..., format=...) (on Windows: device='audio=<name>', "
            "format='dshow')"
        )
    failures: list[str] = []
    open_errors: tuple[type[BaseException], ...] = (*av_errors(), OSError)
    for device, input_format in attempts:
        label = f"{input_format or 'auto'}:{device}"
        if input_format is not None and input_format not in av.formats_available:
            failures.append(f"{label}: not in this FFmpeg build")
            continue
        try:
            player = MediaPlayer(
                device,
                format=input_format,
                options=dict(mic.options),
                timeout=MICROPHONE_OPEN_TIMEOUT,
            )
        except open_errors as exc:
            failures.append(f"{label}: {exc}")
            continue
        if player.audio is None:
            if player.video is not None:
                player.video.stop()
            failures.append(f"{label}: no audio stream")
            continue
        return _TrackSource(player.audio, player)
    raise RecordingError(
        "no microphone could be opened ("
        + "; ".join(failures)
        + "); record from a file, an iterable of PCM frames or an aiortc track instead"
    )


def _open_file(source: Any, pcm_rate: int, pcm_channels: int) -> _BlockingSource:
    av = import_av()
    if isinstance(source, (str, os.PathLike)):
        target: Any = os.fspath(source)
        if not os.path.isfile(target):
            raise InvalidInputError(f"audio file not found: {target!r}")
        label = repr(target)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        target, label = io.BytesIO(bytes(source)), "the audio bytes"
    else:
        target, label = source, "the audio file object"
    try:
        container = av.open(target, mode="r")
    except av_errors() as exc:
        raise AudioFormatError(f"cannot read {label} as audio: {exc}") from exc
    if not container.streams.audio:
        container.close()
        raise AudioFormatError(f"{label} has no audio stream")
    frames = container.decode(container.streams.audio[0])
    return _BlockingSource(
        frames,
        batch=_FILE_FRAMES_PER_PULL,
        pcm_rate=pcm_rate,
        pcm_channels=pcm_channels,
        on_close=container.close,
    )


def open_source(source: object, pcm_rate: int, pcm_channels: int) -> PcmSource:
    """Open ``source`` (see :data:`AudioSource`; ``None`` is the default microphone). ``bytes``
    items of an iterable are PCM at ``pcm_rate`` Hz with ``pcm_channels`` channels."""
    if source is None:
        return _open_microphone(Microphone())
    if isinstance(source, Microphone):
        return _open_microphone(source)
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return _open_file(source, pcm_rate, pcm_channels)
    if hasattr(source, "recv") and hasattr(source, "kind"):
        kind = source.kind
        if kind != "audio":
            raise InvalidInputError(f"the track to record is a {kind} track, not audio")
        return _TrackSource(source)
    if callable(getattr(source, "read", None)):
        return _open_file(source, pcm_rate, pcm_channels)
    if isinstance(source, Iterable):
        return _BlockingSource(iter(source), batch=1, pcm_rate=pcm_rate, pcm_channels=pcm_channels)
    raise InvalidInputError(
        "source must be None (the microphone), a Microphone, a path, audio bytes, a binary file "
        f"object, an aiortc audio track or an iterable of PCM frames; not {type(source).__name__}"
    )


def open_audio_source(source: AudioSource | None) -> PcmSource:
    """Open ``source`` as :meth:`WavRecorder.start` does (``None`` = the system microphone), for
    :meth:`UplinkAudio.play`. Raises like ``start``: :class:`RecordingError`,
    :class:`InvalidInputError`, :class:`AudioFormatError`."""
    return open_source(source, TTS_TARGET_SAMPLE_RATE, 1)
