"""The avatar's received media, on the runtime loop: the latest frame, frame subscribers, recording.

The WebRTC core (:mod:`perso_sync._webrtc`) drains both remote tracks itself and hands every
decoded frame to :class:`ReceivedMedia`, which keeps the latest video frame, feeds bounded
per-subscriber buffers (``Session.frames()``) and an aiortc ``MediaRecorder``
(``Session.record()``). Everything here runs on the loop the core runs on; nothing blocks it.

Memory stays bounded however slow a consumer is: each buffer drops its oldest frame when full.
"""

from __future__ import annotations

import collections
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from perso_sync.errors import RecordingError

if TYPE_CHECKING:
    import av
    from aiortc.contrib.media import MediaRecorder

__all__ = ["ReceivedMedia", "Signal"]

# How many frames a recorder may lag behind before the oldest are dropped (about 2 s of video).
_RECORDER_BUFFER = 64
_RECORDER_FLUSH_TIMEOUT = 2.0


class Signal:
    """A re-armable wake-up for one waiter at a time (state lives with the owner)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


class _FrameBuffer:
    """Bounded frame buffer between a track drain and one consumer: drops the oldest frame when
    full, so a slow consumer never grows memory."""

    def __init__(self, max_frames: int) -> None:
        self._frames: collections.deque[Any] = collections.deque(maxlen=max_frames)
        self._signal = Signal()
        self.ended = False
        self.dropped = 0

    def push(self, frame: Any) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append(frame)
        self._signal.fire()

    def end(self) -> None:
        self.ended = True
        self._signal.fire()

    async def get(self) -> Any | None:
        """The next frame, or None once ended and empty."""
        while not self._frames:
            if self.ended:
                return None
            await self._signal.wait()
        return self._frames.popleft()


class _RelayTrack:
    """What aiortc's MediaRecorder reads from: frames pushed by the core's track drain.

    MediaRecorder only needs ``kind`` and ``recv()`` (ending with aiortc's MediaStreamError), so
    the remote track itself is never read by two consumers.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.buffer = _FrameBuffer(_RECORDER_BUFFER)
        self.delivered = False
        self.finished = anyio.Event()

    async def recv(self) -> Any:
        from aiortc.mediastreams import MediaStreamError

        frame = await self.buffer.get()
        if frame is None:
            self.finished.set()
            raise MediaStreamError
        self.delivered = True
        return frame


@attrs.define
class _Recording:
    recorder: MediaRecorder
    relays: list[_RelayTrack]
    path: str

    def accepts(self, kind: str) -> bool:
        """Whether a frame of ``kind`` may go to the recorder now.

        MediaRecorder sizes its video stream from the first video frame, but the container
        header (which fixes every codec's parameters) is written at the first muxed packet of
        any stream. So audio is held back until the video relay has handed out its first
        frame; otherwise the video stream fails with "Cannot change width after codec is
        open" and the file has no video.
        """
        if kind == "audio":
            return all(relay.delivered for relay in self.relays if relay.kind == "video")
        return True


class ReceivedMedia:
    """The decoded frames of one session's remote tracks and who receives them (loop only)."""

    def __init__(self, close_timeout: float) -> None:
        self._close_timeout = close_timeout
        self.latest_video_frame: av.VideoFrame | None = None
        self._subscribers: set[_FrameBuffer] = set()
        self._recording: _Recording | None = None

    def push(self, kind: str, frame: Any) -> None:
        """A frame of the session's current ``kind`` track, from the core's drain."""
        if kind == "video":
            self.latest_video_frame = frame
            for subscriber in self._subscribers:
                subscriber.push(frame)
        recording = self._recording
        if recording is not None and recording.accepts(kind):
            for relay in recording.relays:
                if relay.kind == kind:
                    relay.buffer.push(frame)

    def end_video(self) -> None:
        """The video track ended (or the session closes): every frame iterator ends."""
        for subscriber in self._subscribers:
            subscriber.end()

    def subscribe_video_frames(self, max_buffer: int, has_video: bool) -> AsyncIterator[Any]:
        """Decoded video frames from now on, at most ``max_buffer`` (>= 1) held (oldest
        dropped); ends at once when there is no video track."""
        buffer = _FrameBuffer(max(1, max_buffer))
        if not has_video:
            buffer.end()
        self._subscribers.add(buffer)
        return self._iterate_frames(buffer)

    async def _iterate_frames(self, buffer: _FrameBuffer) -> AsyncIterator[Any]:
        try:
            while True:
                frame = await buffer.get()
                if frame is None:
                    return
                yield frame
        finally:
            self._subscribers.discard(buffer)

    async def start_recording(self, path: str, *, has_audio: bool, has_video: bool) -> None:
        """Record to ``path``: ``.wav`` audio only, any other extension audio and video (what
        is received). ``RecordingError`` when already recording, when there is nothing to
        record, or when the file cannot be opened."""
        from aiortc.contrib.media import MediaRecorder

        if self._recording is not None:
            raise RecordingError(f"already recording to {self._recording.path!r}")
        audio_only = os.path.splitext(path)[1].lower() == ".wav"
        kinds = []
        if has_audio:
            kinds.append("audio")
        if has_video and not audio_only:
            kinds.append("video")
        if not kinds:
            raise RecordingError("nothing to record: the session has no remote media")
        _check_recording_path(path)
        try:
            recorder = MediaRecorder(path)
        except Exception as exc:  # av.FFmpegError, OSError, ValueError for unknown formats
            raise RecordingError(f"cannot record to {path!r}: {exc}") from exc
        relays = [_RelayTrack(kind) for kind in kinds]
        for relay in relays:
            recorder.addTrack(relay)  # type: ignore[arg-type]  # duck-typed track
        self._recording = _Recording(recorder=recorder, relays=relays, path=path)
        await recorder.start()

    async def finish_recording(self) -> None:
        """Stop recording and finalize the file (no-op when not recording); shielded, bounded.
        ``RecordingError`` when the file cannot be finalized."""
        recording = self._recording
        if recording is None:
            return
        self._recording = None
        with anyio.CancelScope(shield=True):
            for relay in recording.relays:
                relay.buffer.end()
            # Let the recorder encode what is still buffered before it is stopped (bounded:
            # a recorder task that died never reads its end marker).
            with anyio.move_on_after(min(self._close_timeout, _RECORDER_FLUSH_TIMEOUT)):
                for relay in recording.relays:
                    await relay.finished.wait()
            try:
                await recording.recorder.stop()
            except Exception as exc:
                raise RecordingError(f"could not finalize {recording.path!r}: {exc}") from exc


def _check_recording_path(path: str) -> None:
    """Raise ``RecordingError`` now when ``path`` cannot be written.

    The container library opens the file lazily, at the first encoded frame, so without this a
    recording to a missing directory looks active and fails only at ``stop()``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise RecordingError(f"cannot record to {path!r}: it is a directory")
    if not os.path.isdir(directory):
        raise RecordingError(
            f"cannot record to {path!r}: the directory {directory!r} does not exist"
        )
    writable = os.access(path, os.W_OK) if os.path.exists(path) else os.access(directory, os.W_OK)
    if not writable:
        raise RecordingError(f"cannot record to {path!r}: permission denied")
