"""The outgoing audio of legacy voice chat (:class:`UplinkAudio`), loop side: the aiortc track,
the feed of the playing source and its pump all run on the runtime loop; only
:meth:`UplinkAudio.wait_played` is for other threads. Re-exported by :mod:`perso_sync.audio`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, cast

from perso_sync._audio_input import PcmSink, import_av
from perso_sync._audio_sources import PcmSource

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack

#: Sample rate of the outgoing voice-chat audio (Opus's own rate: aiortc encodes it unresampled).
UPLINK_SAMPLE_RATE: Final = 48000
#: Samples per outgoing frame (20 ms, the Opus frame aiortc sends).
_UPLINK_FRAME_SAMPLES: Final = 960
#: Seconds of decoded audio a fast source (a file) may run ahead of real time.
_UPLINK_AHEAD_SECONDS: Final = 1.0


class _UplinkFeed:
    """One source being played on the uplink. Loop-side, except :attr:`played`."""

    def __init__(self, source: PcmSource) -> None:
        self.source = source
        self.sink = PcmSink(UPLINK_SAMPLE_RATE, 1)
        self.played = threading.Event()  # the source ended and every sample went out (or stop)
        self.error: BaseException | None = None
        self._buffer = bytearray()
        self._limit = round(_UPLINK_AHEAD_SECONDS * UPLINK_SAMPLE_RATE) * 2
        self._ended = False  # the source has nothing more (ended, failed or stopped)
        self._stopped = False
        self._room: Any = None  # an anyio.Event while the pump waits for the reader

    def add(self, pcm: bytes) -> bool:
        if self._stopped:
            return False
        self._buffer += pcm
        return True

    async def wait_for_room(self) -> None:
        import anyio

        while len(self._buffer) > self._limit and not self._stopped:
            self._room = anyio.Event()
            await self._room.wait()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def take(self, size: int) -> bytes | None:
        """The next ``size`` bytes (zero-padded at the very end), or None when none are ready."""
        if not self._buffer:
            if self._ended:
                self.played.set()
            return None
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        if len(self._buffer) <= self._limit:
            self._wake()
        if len(chunk) < size:
            chunk += bytes(size - len(chunk))
        if self._ended and not self._buffer:
            self.played.set()
        return chunk

    def stop(self) -> None:
        """Drop what is not sent yet; the pump stops at its next frame."""
        self._stopped = True
        self._ended = True
        self._buffer.clear()
        self._wake()
        self.played.set()

    async def run(self) -> BaseException | None:
        """Pump the source until it ends, fails or the feed stops, then close it. Returns None,
        or the exception with which the source failed (the track went silent then)."""
        import anyio

        try:
            await self.source.pump(self)
        except Exception as exc:  # noqa: BLE001 -- a failing source goes silent; play() says why
            self.error = exc
        except BaseException:  # cancelled (the session closes): nothing more goes out
            self.stop()
            raise
        finally:
            self._ended = True
            if not self._buffer:
                self.played.set()
            try:
                with anyio.CancelScope(shield=True):
                    await self.source.close()
            except Exception as exc:  # noqa: BLE001 -- kept like a capture error
                self.error = self.error or exc
        return self.error


class UplinkAudio:
    """The audio a WebRTC session sends to the server in legacy voice chat.

    The session makes one when opened with ``voice_chat=True``; its :meth:`track` goes into the
    SDP offer (a ``sendrecv`` audio section, as the official SDK's ``enableVoiceChat`` mode adds
    the microphone track). The track sends 20 ms frames of 48 kHz mono audio in real time:
    silence, except while a source plays (:meth:`play`, from ``start_voice_chat(source)``).
    A fast source (a file) is decoded at most ``_UPLINK_AHEAD_SECONDS`` ahead of what was sent.

    Loop-side: :meth:`track`, :meth:`play`, :meth:`stop`. Any thread: :meth:`wait_played`
    (the feed is in place when :meth:`play` returns, so a wait right after cannot miss it).
    """

    def __init__(self) -> None:
        self._feed: _UplinkFeed | None = None
        self._track: Any = None

    def track(self) -> MediaStreamTrack:
        """The outgoing aiortc audio track (made on first call, on the loop)."""
        if self._track is None:
            self._track = _uplink_track_class()(self)
        return cast("MediaStreamTrack", self._track)

    def next_frame_pcm(self) -> bytes:
        """The PCM of the next outgoing frame: the playing source's, else silence."""
        size = _UPLINK_FRAME_SAMPLES * 2
        feed = self._feed
        chunk = None if feed is None else feed.take(size)
        return bytes(size) if chunk is None else chunk

    def play(self, source: PcmSource) -> _UplinkFeed:
        """Play ``source`` from now on, replacing what played before. The caller runs the
        returned feed's ``run()`` in a task (cancelling it stops the playback); until then, and
        once it ran out, the track sends silence. A finished feed stays until replaced."""
        self.stop()
        feed = _UplinkFeed(source)
        self._feed = feed
        return feed

    def stop(self) -> None:
        """Back to silence at once (what the source still had is dropped)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.stop()

    def wait_played(self, timeout: float | None = None) -> bool:
        """Block until the playing source has ended and all of it was sent; True at once when
        nothing plays, False after ``timeout`` seconds."""
        feed = self._feed
        return feed is None or feed.played.wait(timeout)

    def close(self) -> None:
        """Stop playing and end the track (its sender then stops)."""
        self.stop()
        if self._track is not None:
            self._track.stop()


_UPLINK_TRACK_CLASS: Any = None
_UPLINK_TRACK_LOCK = threading.Lock()


def _uplink_track_class() -> Any:
    """The aiortc track class of :class:`UplinkAudio`, made once (aiortc is imported late)."""
    global _UPLINK_TRACK_CLASS
    with _UPLINK_TRACK_LOCK:
        if _UPLINK_TRACK_CLASS is None:
            _UPLINK_TRACK_CLASS = _make_uplink_track_class()
        return _UPLINK_TRACK_CLASS


def _make_uplink_track_class() -> Any:
    import asyncio
    import fractions

    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    av = import_av()
    rate = UPLINK_SAMPLE_RATE
    samples = _UPLINK_FRAME_SAMPLES
    time_base = fractions.Fraction(1, rate)

    class UplinkTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, uplink: UplinkAudio) -> None:
            super().__init__()
            self._uplink = uplink
            self._start: float | None = None
            self._pts = 0

        async def recv(self) -> Any:
            if self.readyState != "live":
                raise MediaStreamError
            loop = asyncio.get_running_loop()
            if self._start is None:
                self._start = loop.time()
            else:
                # Real time: frame n goes out n * 20 ms after the first one.
                self._pts += samples
                delay = self._start + self._pts / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
            frame.planes[0].update(self._uplink.next_frame_pcm())
            frame.sample_rate = rate
            frame.pts = self._pts
            frame.time_base = time_base
            return frame

    return UplinkTrack
