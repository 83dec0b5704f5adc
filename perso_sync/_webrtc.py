"""The async WebRTC core of a session: peer connection, `message` channel, liveness, media, STF.

Runs only on an event loop (in production the runtime's loop; in tests any anyio/asyncio loop):
nothing here blocks, starts threads of its own, or touches the runtime thread. The sync facade
(:mod:`perso_sync.session`) drives it through ``get_runtime().call(...)``.

Wire protocol: PROTOCOL.md §5 (setup), §7 (the ``message`` channel) and §8 (STF upload).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import anyio
import anyio.abc
import attrs

if TYPE_CHECKING:
    import av

__all__ = ["CoreHooks", "CoreOptions", "WebRtcCore"]


@attrs.frozen(kw_only=True)
class CoreOptions:
    """Tuning of one WebRTC session core.

    - ``connect_timeout``: seconds until ready (a remote track arrived *and* the ``message``
      channel is open), else :class:`perso_sync.errors.Timeout`.
    - ``ping_interval``: seconds between our ``ping`` messages.
    - ``ping_timeout``: seconds without a server ``ping`` before the session is closed as lost
      (``on_closed(False, 408, "Request Timeout")``).
    - ``receive_video``: ``False`` stops the video receiver right after the connection is ready,
      so no video is depacketized or decoded (the SDP still offers recvonly video, as the server
      requires; the server keeps sending RTP, which is dropped unread). ``video_track`` is then
      ``None`` and there are no video frames.
    - ``close_timeout``: upper bound in seconds for closing the peer connection.
    """

    connect_timeout: float = 5.0
    ping_interval: float = 1.0
    ping_timeout: float = 30.0
    receive_video: bool = True
    close_timeout: float = 5.0


class CoreHooks(Protocol):
    """Loop-side callbacks of a :class:`WebRtcCore`. Called ON the loop: they must not block."""

    def on_server_message(self, msg_type: str, data: dict[str, Any]) -> None:
        """Every well-formed server message on the ``message`` channel except ``ping``."""

    def on_closed(self, manual: bool, code: int, reason: str) -> None:
        """The core closed; called exactly once. ``manual`` is False when the session was lost
        (watchdog, connection failed, channel closed by the server): code 408,
        "Request Timeout"."""


class WebRtcCore:
    """One WebRTC session with the Perso server (use :meth:`connect` to make one).

    Every method must be called on the loop the core was connected on.
    """

    @classmethod
    async def connect(
        cls,
        *,
        ice_servers: list[dict[str, Any]],
        exchange: Callable[[dict[str, str]], Awaitable[dict[str, str]]],
        width: int,
        height: int,
        hooks: CoreHooks,
        options: CoreOptions,
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> WebRtcCore:
        """Open the session per PROTOCOL §5 steps 2-7 and return it once ready.

        ``ice_servers``: RTCIceServer dicts (``urls`` str or list, optional ``username`` /
        ``credential``; unknown keys ignored). ``exchange(offer)`` receives the offer
        ``{"type": "offer", "sdp": ...}`` and returns the server's answer dict (the facade runs
        ``client.exchange_sdp`` off the loop); its own exceptions (ApiError, ...) propagate
        unchanged. ``task_group``: where the core's long-lived jobs (pinger, watchdog, track
        drains) live; ``None`` makes the core host them in one task of its own, which
        :meth:`close` cancels and awaits. If ``task_group`` is cancelled, the core closes
        (``on_closed(True, 200, "OK")``).

        After ready it sends ``change-size`` with ``width``/``height``. Raises
        :class:`perso_sync.errors.Timeout` ("WebRTC connection timeout") when not ready within
        ``options.connect_timeout``; :class:`perso_sync.errors.InvalidResponseError` when the
        answer is malformed or rejected by aiortc; :class:`perso_sync.errors.PersoConnectionError`
        for other aiortc failures. On any failure (and on cancellation) everything opened so far
        is closed before the exception propagates, and ``hooks.on_closed`` is NOT called (the
        session never opened).
        """
        raise NotImplementedError

    def send(self, msg_type: str, data: dict[str, Any]) -> None:
        """Send ``{"type": msg_type, "data": data}`` on the ``message`` channel (JSON text).

        Never blocks. Raises :class:`perso_sync.errors.SessionClosedError` when the core is
        closed (or the channel is no longer open).
        """
        raise NotImplementedError

    async def upload_file(
        self,
        source: BinaryIO,
        *,
        total: int | None,
        progress: Callable[[int, int | None], None] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Upload ``source`` on a new ``file`` channel (PROTOCOL §8) and return the file_ref.

        Reads ``source`` from its current position in 64 KiB chunks, off the loop, as it sends
        (the file is never held in memory whole). ``total`` is the expected byte count, only
        passed on to ``progress``; ``progress(sent_bytes, total)`` is called ON the loop after
        each chunk (it must not block). Raises :class:`perso_sync.errors.STFError` with
        "File transfer timed out" after ``timeout`` seconds for the whole transfer, when the
        channel closes before the file_ref arrives, or when reading ``source`` fails;
        :class:`perso_sync.errors.SessionClosedError` when the core is closed. Several uploads
        may run at once (one channel each).
        """
        raise NotImplementedError

    async def close(self, *, manual: bool = True, code: int = 200, reason: str = "OK") -> None:
        """Close everything: jobs, recorder, channels, then the peer connection (bounded by
        ``options.close_timeout``). Idempotent: only the first call's arguments count and
        ``hooks.on_closed(manual, code, reason)`` fires once; later calls wait for the first
        one to finish. Never raises aiortc errors; safe to call from any task on the loop."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started (by the user, the watchdog or the server)."""
        raise NotImplementedError

    @property
    def audio_track(self) -> Any:
        """The remote aiortc audio ``MediaStreamTrack``, or None. The core drains it itself:
        do not call ``recv()`` on it (use :meth:`start_recording`)."""
        raise NotImplementedError

    @property
    def video_track(self) -> Any:
        """The remote aiortc video ``MediaStreamTrack``, or None (also None when
        ``receive_video`` is False). The core drains it itself: do not call ``recv()`` on it
        (use :meth:`subscribe_video_frames` / :meth:`latest_video_frame`)."""
        raise NotImplementedError

    def latest_video_frame(self) -> av.VideoFrame | None:
        """The most recent decoded video frame, or None before the first one."""
        raise NotImplementedError

    def subscribe_video_frames(self, max_buffer: int = 2) -> AsyncIterator[av.VideoFrame]:
        """Async iterator of decoded video frames from now on.

        Holds at most ``max_buffer`` frames (>= 1): when the consumer is slower, the oldest are
        dropped, so memory stays bounded. Ends when the core closes (or the video track ends);
        closing the iterator (``aclose()`` / leaving ``async for``) unsubscribes. Several
        subscribers may run at once.
        """
        raise NotImplementedError

    async def start_recording(self, path: str) -> None:
        """Record the avatar's media to ``path`` with aiortc's ``MediaRecorder``.

        ``.wav`` records audio only; any other extension (``.mp4``, ``.mkv``, ...) records audio
        and video (video only when received). Encoding runs on the loop, so keep sizes small.
        Raises :class:`perso_sync.errors.RecordingError` when already recording or the file
        cannot be opened, :class:`perso_sync.errors.SessionClosedError` when closed. The
        recording stops (and the file is finalized) at :meth:`stop_recording` or at close.
        """
        raise NotImplementedError

    async def stop_recording(self) -> None:
        """Stop recording and finalize the file. No-op when not recording."""
        raise NotImplementedError
