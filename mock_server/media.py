"""Synthetic avatar media for the mock server: one video and one audio track per peer.

The picture is a flat cartoon face drawn straight into YUV planes (no numpy, no images), so
it costs almost nothing to render; the expensive part is the VP8/Opus encoding aiortc does
afterwards, which is why the rendered size and frame rate are capped (see ``Avatar``).

What a test can rely on (the picture is deterministic):

* the frame has the render size: the requested size scaled down to fit the cap, aspect kept;
* the bottom band (``indicator_band``) is bright (luma ~235) while the avatar speaks and dark
  (luma ~16) otherwise, and the mouth opens and closes at 4 Hz while speaking;
* the background colour depends only on the template (``set-template`` model and dress);
* the audio is a 400 Hz tone while speaking and digital silence otherwise.

Audio CPU: when Opus is negotiated (every browser and aiortc offer it first), the audio track
hands aiortc *pre-encoded* Opus packets (one silence packet, one tone packet, encoded once per
process), which halves the cost of an idle peer compared with encoding 50 frames a second.
With ``audio_dtx`` the idle avatar sends one silence packet every 400 ms instead of every
20 ms, as an Opus encoder with DTX does (receivers see gaps in idle audio).
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import math
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "AUDIO_SAMPLES_PER_FRAME",
    "AUDIO_SAMPLE_RATE",
    "TONE_HZ",
    "Avatar",
    "AvatarAudioTrack",
    "AvatarVideoTrack",
    "RenderSettings",
    "SpeechTimeline",
    "fit_size",
    "indicator_band",
    "opus_packets",
]

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_SAMPLE_RATE = 48_000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES_PER_FRAME = int(AUDIO_SAMPLE_RATE * AUDIO_PTIME)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
# 400 Hz fits exactly 8 periods into one 20 ms frame, so one precomputed frame loops seamlessly.
TONE_HZ = 400
_TONE_AMPLITUDE = 0.3 * 32767
_TONE_FRAME = struct.pack(
    f"<{AUDIO_SAMPLES_PER_FRAME}h",
    *(
        round(_TONE_AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * i / AUDIO_SAMPLE_RATE))
        for i in range(AUDIO_SAMPLES_PER_FRAME)
    ),
)
_SILENT_FRAME = bytes(2 * AUDIO_SAMPLES_PER_FRAME)
# A sender that fell this far behind (CPU starvation) re-anchors its clock instead of
# bursting every missed frame at once.
_MAX_LAG = 0.5
_MOUTH_HZ = 4
# Opus DTX sends a packet every 400 ms during silence.
_DTX_EVERY = 20
# Rendered pictures are shared by every peer of the process (same size and template: same
# bytes), so fifty idle sessions hold one picture, not fifty.
_PICTURE_CACHE_SIZE = 32

_YuvColour = tuple[int, int, int]
_IDLE_BACKGROUND: _YuvColour = (60, 150, 110)
_SKIN: _YuvColour = (170, 110, 150)
_EYES: _YuvColour = (30, 128, 128)
_MOUTH: _YuvColour = (40, 120, 175)
_BAND_SPEAKING: _YuvColour = (235, 128, 128)
_BAND_IDLE: _YuvColour = (16, 128, 128)


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """Scale ``width`` x ``height`` down (never up) to fit the cap, keeping the aspect ratio.

    Both results are even and at least 2 (YUV 4:2:0 halves the chroma planes).
    """
    scale = min(1.0, max_width / width, max_height / height)
    return _even(width * scale), _even(height * scale)


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def indicator_band(width: int, height: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of the speaking indicator band at the bottom of the picture."""
    return height - max(2, height // 8), height


def _background(template: dict[str, str] | None) -> _YuvColour:
    if not template:
        return _IDLE_BACKGROUND
    # crc32, not hash(): the colour must be the same in every process (deterministic picture).
    key = f"{template.get('model', '')}|{template.get('dress', '')}".encode()
    digest = zlib.crc32(key)
    return 40 + digest % 60, 90 + (digest >> 8) % 80, 90 + (digest >> 16) % 80


class SpeechTimeline:
    """When the avatar speaks: utterances play one after another on a monotonic clock.

    Pure bookkeeping: times are passed in (seconds from any monotonic clock). Locked, because
    tests read ``speaking`` from their own thread while the server loop updates it.
    """

    def __init__(self) -> None:
        self._segments: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, now: float, duration: float) -> float:
        """Queue an utterance of ``duration`` seconds; return when it starts playing."""
        with self._lock:
            self._forget_before(now)
            start = max(now, self._segments[-1][1]) if self._segments else now
            self._segments.append((start, start + duration))
            return start

    def speaking(self, now: float) -> bool:
        """Whether an utterance is playing at ``now``."""
        with self._lock:
            self._forget_before(now)
            return bool(self._segments) and self._segments[0][0] <= now < self._segments[0][1]

    def cut(self, now: float) -> None:
        """Drop utterances not started yet; the one playing finishes (as on the platform)."""
        with self._lock:
            while self._segments and self._segments[-1][0] > now:
                self._segments.pop()

    def ends_at(self) -> float | None:
        """When the last queued utterance ends, or None when nothing is queued."""
        with self._lock:
            return self._segments[-1][1] if self._segments else None

    def _forget_before(self, now: float) -> None:
        while self._segments and self._segments[0][1] <= now:
            self._segments.popleft()


class RenderSettings(Protocol):
    """The render limits an ``Avatar`` reads live (``PeerConfig`` has them)."""

    video_max_width: int
    video_max_height: int
    fps: int
    audio_dtx: bool


class Avatar:
    """The state both tracks draw from: size, template, speaking, frame rate.

    ``settings`` is read at every frame, so changing the cap or the frame rate applies at
    once; ``speaking`` is a callable so that the owner (the peer) keeps the speech timeline.
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        settings: RenderSettings,
        speaking: Callable[[], bool],
    ) -> None:
        self.width = width
        self.height = height
        self.settings = settings
        self.template: dict[str, str] | None = None
        self._speaking = speaking

    @property
    def speaking(self) -> bool:
        """Whether the avatar is speaking right now."""
        return self._speaking()

    @property
    def render_size(self) -> tuple[int, int]:
        """The size frames are rendered at: the requested size fitted into the cap."""
        settings = self.settings
        return fit_size(
            self.width, self.height, settings.video_max_width, settings.video_max_height
        )

    def video_frame(self, now: float) -> av.VideoFrame:
        """A new frame showing the avatar at time ``now`` (loop seconds)."""
        width, height = self.render_size
        # 0: closed; 1 and 2 alternate (wide / half open) while speaking
        mouth = 1 + int(now * _MOUTH_HZ * 2) % 2 if self.speaking else 0
        frame = av.VideoFrame(width, height, "yuv420p")
        strides = tuple(plane.line_size for plane in frame.planes)
        planes = _draw_face(width, height, strides, mouth, _background(self.template))
        for plane, data in zip(frame.planes, planes, strict=True):
            plane.update(data)
        return frame

    def audio_frame(self) -> av.AudioFrame:
        """20 ms of 48 kHz mono audio: the tone while speaking, else silence."""
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES_PER_FRAME)
        frame.planes[0].update(_TONE_FRAME if self.speaking else _SILENT_FRAME)
        frame.sample_rate = AUDIO_SAMPLE_RATE
        return frame


_Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the picture


@functools.lru_cache(maxsize=_PICTURE_CACHE_SIZE)  # thread-safe; shared by all peers
def _draw_face(
    width: int, height: int, strides: tuple[int, ...], mouth: int, background: _YuvColour
) -> tuple[bytes, bytes, bytes]:
    mouth_rects: list[_Rect] = [
        (0.40, 0.65, 0.60, 0.67),  # closed
        (0.40, 0.60, 0.60, 0.75),  # wide open
        (0.42, 0.63, 0.58, 0.71),  # half open
    ]
    band_start, _ = indicator_band(width, height)
    band = (0.0, band_start / height, 1.0, 1.0)
    shapes: list[tuple[_Rect, _YuvColour]] = [
        ((0.30, 0.15, 0.70, 0.85), _SKIN),
        ((0.38, 0.35, 0.45, 0.42), _EYES),
        ((0.55, 0.35, 0.62, 0.42), _EYES),
        (mouth_rects[mouth], _MOUTH),
        (band, _BAND_SPEAKING if mouth else _BAND_IDLE),
    ]
    planes = []
    for index, (plane_width, plane_height) in enumerate(
        [(width, height), (width // 2, height // 2), (width // 2, height // 2)]
    ):
        stride = strides[index]
        buffer = bytearray(bytes([background[index]]) * (stride * plane_height))
        for (x0, y0, x1, y1), colour in shapes:
            left, right = round(x0 * plane_width), round(x1 * plane_width)
            top, bottom = round(y0 * plane_height), round(y1 * plane_height)
            row = bytes([colour[index]]) * (right - left)
            for y in range(top, bottom):
                buffer[y * stride + left : y * stride + right] = row
        planes.append(bytes(buffer))
    return planes[0], planes[1], planes[2]


class _PacedTrack(MediaStreamTrack):
    """A track that hands out frames at their real-time pace on the running loop."""

    def __init__(self, avatar: Avatar) -> None:
        super().__init__()
        self._avatar = avatar
        self._due: float | None = None
        self._pts = 0

    async def _wait_for_next(self, period: float, clock_rate: int) -> float:
        """Sleep until the next frame is due; return the loop time."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._due is None:
            self._due = now
        else:
            self._due += period
            self._pts += round(period * clock_rate)
            if now - self._due > _MAX_LAG:
                self._due = now
            elif self._due > now:
                await asyncio.sleep(self._due - now)
                now = loop.time()
        return now


class AvatarVideoTrack(_PacedTrack):
    """Video of the synthetic avatar, at ``settings.fps`` and ``avatar.render_size``."""

    kind = "video"

    async def recv(self) -> av.VideoFrame:
        """The next frame, when it is due."""
        now = await self._wait_for_next(1.0 / max(1, self._avatar.settings.fps), VIDEO_CLOCK_RATE)
        frame = self._avatar.video_frame(now)
        frame.pts = self._pts
        frame.time_base = VIDEO_TIME_BASE
        return frame


@functools.cache
def opus_packets() -> tuple[bytes, bytes]:
    """One 20 ms Opus packet of silence and one of the tone (48 kHz mono), encoded once."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = 32000
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = AUDIO_SAMPLE_RATE
    codec.time_base = AUDIO_TIME_BASE
    packets = []
    for pcm in (_SILENT_FRAME, _TONE_FRAME):
        last = b""
        # A few frames in, so the packet comes from a warmed-up encoder, not its first ramp.
        for index in range(6):
            frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES_PER_FRAME)
            frame.planes[0].update(pcm)
            frame.sample_rate = AUDIO_SAMPLE_RATE
            frame.pts = index * AUDIO_SAMPLES_PER_FRAME
            for packet in codec.encode(frame):
                last = bytes(packet)
        packets.append(last)
    return packets[0], packets[1]


class AvatarAudioTrack(_PacedTrack):
    """Audio of the synthetic avatar: 20 ms of tone or silence per frame (or Opus packet).

    ``preencoded_opus`` is set by the peer once the answer has negotiated Opus; otherwise
    (another codec) aiortc encodes the raw frames itself.
    """

    kind = "audio"

    def __init__(self, avatar: Avatar) -> None:
        super().__init__(avatar)
        self.preencoded_opus = False
        self._slot = 0

    async def recv(self) -> av.AudioFrame | av.Packet[Any]:
        """The next 20 ms of audio, when it is due (idle DTX: only every 400 ms)."""
        while True:
            await self._wait_for_next(AUDIO_PTIME, AUDIO_SAMPLE_RATE)
            self._slot += 1
            speaking = self._avatar.speaking
            dtx = self.preencoded_opus and self._avatar.settings.audio_dtx
            if speaking or not dtx or self._slot % _DTX_EVERY == 0:
                break
        data: av.AudioFrame | av.Packet[Any]
        if self.preencoded_opus:
            silence, tone = opus_packets()
            data = av.Packet(tone if speaking else silence)
        else:
            data = self._avatar.audio_frame()
        data.pts = self._pts
        data.time_base = AUDIO_TIME_BASE
        return data
