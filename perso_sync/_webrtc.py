"""The async WebRTC core of a session: peer connection, `message` channel, liveness, media, STF.

Runs only on an event loop (in production the runtime's loop; in tests any asyncio loop driven
through anyio): nothing here blocks the loop, starts threads of its own (aiortc's decoder threads
aside), or touches the runtime thread. A session's loop side
(:class:`perso_sync._session_loop.SessionLoop`, also the core's hooks object) owns it; the sync
facade (:mod:`perso_sync.session`) reaches it through ``get_runtime().call(...)``.

Wire protocol: docs/PROTOCOL.md §5 (setup), §7 (the ``message`` channel) and §8 (STF upload).

Memory and CPU of received media: aiortc's ``RemoteStreamTrack`` queues every decoded frame in an
unbounded queue until someone calls ``recv()``. The core therefore drains both remote tracks
continuously in its own task group and keeps only the latest video frame, plus bounded buffers
for frame subscribers and the recorder. Users who do not want video pass
``CoreOptions(receive_video=False)``: the SDP still offers a recvonly video transceiver (the
server expects one), but right after the connection is ready the core stops the video receiver
through aiortc's public ``RTCRtpReceiver.stop()``, which ends its decoder thread and unregisters
it, so incoming video RTP is dropped before depacketizing and decoding.

aiortc and av are imported lazily (on :meth:`WebRtcCore.connect`), so importing this module is
cheap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import anyio
import anyio.abc
import attrs

from perso_sync._webrtc_media import ReceivedMedia, Signal
from perso_sync.errors import (
    InvalidInputError,
    InvalidResponseError,
    PersoConnectionError,
    PersoError,
    RecordingError,
    SessionClosedError,
    STFError,
    Timeout,
)

if TYPE_CHECKING:
    import av
    from aiortc import (
        MediaStreamTrack,
        RTCDataChannel,
        RTCIceServer,
        RTCPeerConnection,
        RTCSessionDescription,
    )

__all__ = ["CoreHooks", "CoreOptions", "WebRtcCore"]

logger = logging.getLogger(__name__)

MESSAGE_CHANNEL = "message"
FILE_CHANNEL = "file"
STF_CHUNK_SIZE = 64 * 1024
#: WebRTC's default SCTP max-message-size (RFC 8841) when the answer does not state one.
DEFAULT_MAX_MESSAGE_SIZE = 65536
STF_BUFFERED_HIGH = 512 * 1024
STF_BUFFERED_LOW = 256 * 1024
LOST_CODE = 408
LOST_REASON = "Request Timeout"
# Reads per worker-thread hop during an upload: read-ahead is at most 8 x 64 KiB = 512 KiB.
_READ_BATCH = 8


@attrs.frozen(kw_only=True)
class CoreOptions:
    """Tuning of one WebRTC session core.

    - ``connect_timeout``: the ready timeout: seconds from the moment the server's answer is
      applied (the exchange returned and ``setRemoteDescription`` ran) until ready — a remote
      track arrived *and* the ``message`` channel is open (ICE/DTLS/SCTP) — else
      :class:`perso_sync.errors.Timeout`, counted as the official client counts it. The
      exchange is not counted (the platform may take seconds to answer it; the caller's
      ``exchange`` bounds itself, e.g. by its HTTP timeout). Creating the offer (ICE
      gathering) has a bound of its own of the same length.
    - ``ping_interval``: seconds between our ``ping`` messages.
    - ``ping_timeout``: seconds without a server ``ping`` before the session is closed as lost
      (``on_closed(False, 408, "Request Timeout")``).
    - ``receive_video``: ``False`` stops the video receiver right after the connection is ready,
      so no video is depacketized or decoded (the SDP still offers recvonly video, as the server
      requires; the server keeps sending RTP, which is dropped unread). ``video_track`` is then
      ``None`` and there are no video frames.
    - ``close_timeout``: upper bound in seconds for closing the peer connection.
    - ``outgoing_audio``: an aiortc audio track to send (legacy voice chat, see
      :class:`perso_sync.audio.UplinkAudio`): the offer's audio section is then ``sendrecv``
      with this track, as the official SDK's ``enableVoiceChat`` mode adds the microphone;
      ``None`` (the default) offers ``recvonly`` audio.
    """

    connect_timeout: float = 5.0
    ping_interval: float = 1.0
    ping_timeout: float = 30.0
    receive_video: bool = True
    close_timeout: float = 5.0
    outgoing_audio: Any = None


class CoreHooks(Protocol):
    """Loop-side callbacks of a :class:`WebRtcCore`. Called ON the loop: they must not block."""

    def on_server_message(self, msg_type: str, data: dict[str, Any]) -> None:
        """Every well-formed server message on the ``message`` channel except ``ping``."""

    def on_bad_message(self, error: InvalidResponseError) -> None:
        """A server message was malformed (not JSON, nested absurdly deep, no string ``type``,
        ...) and was dropped; ``error`` says why. The session carries on."""

    def on_closed(self, manual: bool, code: int, reason: str) -> None:
        """The core closed; called exactly once. ``manual`` is False when the session was lost
        (watchdog, connection failed, channel closed by the server): code 408,
        "Request Timeout"."""


def parse_server_message(raw: object) -> tuple[str, dict[str, Any]] | None:
    """Decode one ``message``-channel payload into ``(type, data)``; None when malformed.

    Well-formed means JSON text of an object with a string ``type``; ``data`` must be an object
    when present (a missing or null ``data`` becomes ``{}``). Never raises, not even for JSON
    nested thousands of levels deep (``RecursionError`` in the decoder).
    """
    if not isinstance(raw, str):
        return None
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict):
        return None
    msg_type = decoded.get("type")
    data = decoded.get("data")
    if data is None:
        data = {}
    if not isinstance(msg_type, str) or not isinstance(data, dict):
        return None
    return msg_type, data


def _ice_servers(configs: list[Any]) -> list[RTCIceServer]:
    """RTCIceServer objects from the endpoint's dicts; unknown keys and unusable entries are
    skipped (logged), never fatal."""
    from aiortc import RTCIceServer

    servers: list[RTCIceServer] = []
    for config in configs:
        if not isinstance(config, Mapping):
            logger.warning("ignoring ICE server entry that is not an object: %r", type(config))
            continue
        urls = config.get("urls", config.get("url"))
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            logger.warning("ignoring ICE server entry without usable urls")
            continue
        username = config.get("username")
        credential = config.get("credential")
        servers.append(
            RTCIceServer(
                urls=list(urls),
                username=username if isinstance(username, str) else None,
                credential=credential if isinstance(credential, str) else None,
            )
        )
    return servers


async def _wait_first(*events: anyio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait_one(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait_one, event)


class _FileTransfer:
    """Loop-side state of one STF upload channel, fed by aiortc's event callbacks."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.server_ready = False
        self.file_ref: str | None = None
        self.closed = False
        self.changed = Signal()
        channel.bufferedAmountLowThreshold = STF_BUFFERED_LOW
        channel.on("message", self._on_message)
        channel.on("close", self._on_close)
        channel.on("bufferedamountlow", self.changed.fire)

    def _on_message(self, message: str | bytes) -> None:
        if not message:
            self.server_ready = True
        elif self.file_ref is None:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            self.file_ref = text
        self.changed.fire()

    def _on_close(self) -> None:
        self.closed = True
        self.changed.fire()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self.closed or self.channel.readyState in ("closing", "closed"):
                raise STFError("File channel closed before the transfer finished")
            await self.changed.wait()


def _read_chunks(source: BinaryIO) -> tuple[list[bytes], bool]:
    """Up to ``_READ_BATCH`` reads of 64 KiB from ``source`` (runs in a worker thread);
    returns the non-empty chunks and whether the end of the file was reached."""
    chunks: list[bytes] = []
    for _ in range(_READ_BATCH):
        chunk = source.read(STF_CHUNK_SIZE)
        if not chunk:
            return chunks, True
        chunks.append(bytes(chunk))
    return chunks, False


class WebRtcCore:
    """One WebRTC session with the Perso server (use :meth:`connect` to make one).

    Every method must be called on the loop the core was connected on.
    """

    def __init__(self, *, width: int, height: int, hooks: CoreHooks, options: CoreOptions) -> None:
        # Private: use connect().
        self._width = width
        self._height = height
        self._hooks = hooks
        self._options = options
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._file_channels: set[RTCDataChannel] = set()
        self._audio_track: MediaStreamTrack | None = None
        self._video_track: MediaStreamTrack | None = None
        self._video_transceiver: Any = None
        self._media = ReceivedMedia(options.close_timeout)
        self._ready = anyio.Event()
        self._lost = anyio.Event()
        self._last_server_ping = 0.0
        self._jobs: anyio.abc.TaskGroup | None = None
        self._job_task_ids: set[int] = set()
        self._host_started = anyio.Event()
        self._host_done = anyio.Event()
        self._host_task: asyncio.Task[None] | None = None
        self._opened = False  # connect() succeeded: from then on closing notifies the hooks
        self._close_started = False
        self._close_done = anyio.Event()

    # ----------------------------------------------------------------------------- opening

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
        """Open the session per docs/PROTOCOL.md §5 steps 2-7 and return it once ready.

        ``ice_servers``: RTCIceServer dicts (``urls`` str or list, optional ``username`` /
        ``credential``; unknown keys ignored). ``exchange(offer)`` receives the offer
        ``{"type": "offer", "sdp": ...}`` and returns the server's answer dict (the facade runs
        ``client.exchange_sdp`` off the loop); its own exceptions (ApiError, ...) propagate
        unchanged; it must be cancellable (a caller that gives up cancels it). ``task_group``:
        where the core's long-lived jobs (pinger, watchdog, track drains) live; ``None`` makes
        the core host them in one asyncio task of its own, which :meth:`close` cancels and
        awaits. If ``task_group`` is cancelled, the core closes (``on_closed(True, 200, "OK")``).

        After ready it sends ``change-size`` with ``width``/``height``. Raises
        :class:`perso_sync.errors.Timeout` ("WebRTC connection timeout") when not ready within
        ``options.connect_timeout`` of the answer being applied (the exchange is not counted:
        ``exchange`` must bound itself), or when creating the offer takes longer than that;
        :class:`perso_sync.errors.InvalidResponseError` when the answer is malformed
        or rejected by aiortc; :class:`perso_sync.errors.PersoConnectionError` when the
        connection fails before ready or on other aiortc failures. On any failure (and on
        cancellation) everything opened so far is closed before the exception propagates, and
        ``hooks.on_closed`` is NOT called (the session never opened).
        """
        core = cls(width=width, height=height, hooks=hooks, options=options)
        try:
            await core._start_host(task_group)
            await core._negotiate(ice_servers, exchange, options.connect_timeout)
            # The ready timeout counts from the applied answer, as the official client's does.
            with anyio.move_on_after(options.connect_timeout) as deadline:
                await _wait_first(core._ready, core._lost)
            if deadline.cancelled_caught:
                raise Timeout("WebRTC connection timeout")
            if not core._ready.is_set():
                raise PersoConnectionError("WebRTC connection failed before it was ready")
            if not options.receive_video:
                await core._stop_video_receiver()
            core._last_server_ping = anyio.current_time()
            core._start_job(core._pinger)
            core._start_job(core._watchdog)
            core.send("change-size", {"width": width, "height": height})
            core._opened = True
        except BaseException:
            with anyio.CancelScope(shield=True):
                await core._teardown(notify=False, manual=True, code=200, reason="OK")
            raise
        return core

    async def _negotiate(
        self,
        ice_servers: list[dict[str, Any]],
        exchange: Callable[[dict[str, str]], Awaitable[dict[str, str]]],
        offer_timeout: float,
    ) -> None:
        from aiortc import RTCSessionDescription

        with anyio.move_on_after(offer_timeout) as offer_deadline:
            local = await self._make_offer(ice_servers)
        if offer_deadline.cancelled_caught:
            raise Timeout("WebRTC connection timeout")
        pc = self._pc
        assert pc is not None

        # No deadline of ours here: the exchange bounds itself (docs/PROTOCOL.md §5 step 6; the
        # platform may take seconds to answer while it allocates the avatar renderer).
        answer = await exchange({"type": local.type, "sdp": local.sdp})

        if (
            not isinstance(answer, Mapping)
            or not isinstance(answer.get("sdp"), str)
            or answer.get("type") not in ("answer", "pranswer")
        ):
            raise InvalidResponseError("the SDP exchange did not return an answer {type, sdp}")
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
            )
        except Exception as exc:  # aiortc: ValueError, InvalidStateError, OperationError, ...
            raise InvalidResponseError(f"the server's SDP answer was rejected: {exc}") from exc

    async def _make_offer(self, ice_servers: list[dict[str, Any]]) -> RTCSessionDescription:
        """Build the peer connection with its channel and transceivers (docs/PROTOCOL.md §5
        steps 2-4), set its offer as local description (ICE candidates gathered), return it."""
        from aiortc import RTCConfiguration, RTCPeerConnection

        try:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=_ice_servers(ice_servers)))
            self._pc = pc
            pc.on("track", self._on_track)
            pc.on("connectionstatechange", self._on_connection_state)
            channel = pc.createDataChannel(MESSAGE_CHANNEL, protocol=MESSAGE_CHANNEL)
            self._channel = channel
            channel.on("open", self._check_ready)
            channel.on("message", self._on_channel_message)
            channel.on("close", self._on_channel_close)
            if self._options.outgoing_audio is not None:
                pc.addTrack(self._options.outgoing_audio)  # sendrecv: the server hears it
            else:
                pc.addTransceiver("audio", direction="recvonly")
            self._video_transceiver = pc.addTransceiver("video", direction="recvonly")
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
            local: RTCSessionDescription = pc.localDescription
        except PersoError:
            raise
        except Exception as exc:  # aiortc/aioice raise assorted types; none may escape
            raise PersoConnectionError(f"could not create the WebRTC offer: {exc!r}") from exc
        return local

    async def _stop_video_receiver(self) -> None:
        transceiver = self._video_transceiver
        self._video_track = None
        if transceiver is None:
            return
        try:
            await transceiver.receiver.stop()
        except Exception:  # best effort: video then just keeps being drained
            logger.warning("could not stop the video receiver", exc_info=True)

    # ---------------------------------------------------------------------- aiortc callbacks

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._audio_track is None:
            self._audio_track = track
        elif track.kind == "video" and self._video_track is None:
            self._video_track = track
        else:
            logger.debug("ignoring extra remote %s track", track.kind)
        # Drain from the first moment: aiortc queues every decoded frame until read.
        self._start_job(self._drain, track)
        self._check_ready()

    def _check_ready(self) -> None:
        has_track = self._audio_track is not None or self._video_track is not None
        if has_track and self._channel is not None and self._channel.readyState == "open":
            self._ready.set()

    def _on_connection_state(self) -> None:
        pc = self._pc
        if pc is None or self._close_started:
            return
        if pc.connectionState in ("failed", "disconnected", "closed"):
            logger.info("WebRTC connection %s", pc.connectionState)
            self._lost.set()

    def _on_channel_close(self) -> None:
        if not self._close_started:
            logger.info("the server closed the message channel")
            self._lost.set()

    def _on_channel_message(self, raw: str | bytes) -> None:
        parsed = parse_server_message(raw)
        if parsed is None:
            kind = "binary" if isinstance(raw, bytes) else "text"
            logger.warning("ignoring malformed server message (%d chars, %s)", len(raw), kind)
            report = getattr(self._hooks, "on_bad_message", None)
            if report is not None:
                error = InvalidResponseError(
                    f"the server sent a malformed message ({len(raw)} chars, {kind}); dropped"
                )
                try:
                    report(error)
                except Exception:  # a hook bug must not break aiortc's event dispatch
                    logger.exception("on_bad_message hook raised")
            return
        msg_type, data = parsed
        if msg_type == "ping":
            self._last_server_ping = anyio.current_time()
            return
        try:
            self._hooks.on_server_message(msg_type, data)
        except Exception:  # a hook bug must not break aiortc's event dispatch
            logger.exception("on_server_message hook raised")

    # --------------------------------------------------------------------------- jobs

    async def _start_host(self, task_group: anyio.abc.TaskGroup | None) -> None:
        if task_group is not None:
            task_group.start_soon(self._host)
        else:
            self._host_task = asyncio.get_running_loop().create_task(self._host())
        await self._host_started.wait()

    async def _host(self) -> None:
        """Owns the task group of the core's long-lived jobs until close cancels it."""
        self._job_task_ids.add(anyio.get_current_task().id)
        try:
            async with anyio.create_task_group() as jobs:
                self._jobs = jobs
                self._host_started.set()
                await anyio.sleep_forever()
        finally:
            self._jobs = None
            self._host_started.set()  # never leave connect() waiting
            self._host_done.set()
            if not self._close_started:
                # Cancelled from outside (the owner's task group or the loop is going away).
                with anyio.CancelScope(shield=True):
                    await self._teardown(notify=self._opened, manual=True, code=200, reason="OK")

    def _start_job(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._jobs is None or self._close_started:
            return
        self._jobs.start_soon(self._run_job, fn, *args)

    async def _run_job(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        task_id = anyio.get_current_task().id
        self._job_task_ids.add(task_id)
        try:
            await fn(*args)
        except Exception:
            # A bug in a job must not take the host down silently: close as lost.
            logger.exception("WebRTC core job %s failed", getattr(fn, "__name__", fn))
            self._lost.set()
        finally:
            self._job_task_ids.discard(task_id)

    async def _pinger(self) -> None:
        while True:
            try:
                self.send("ping", {})
            except SessionClosedError:
                return
            await anyio.sleep(self._options.ping_interval)

    async def _watchdog(self) -> None:
        timeout = self._options.ping_timeout
        while True:
            remaining = self._last_server_ping + timeout - anyio.current_time()
            if remaining <= 0:
                logger.warning("no server ping for %.1f s: closing the session as lost", timeout)
                break
            with anyio.move_on_after(remaining):
                await self._lost.wait()
            if self._lost.is_set():
                break
        await self.close(manual=False, code=LOST_CODE, reason=LOST_REASON)

    async def _drain(self, track: MediaStreamTrack) -> None:
        from aiortc.mediastreams import MediaStreamError

        is_video = track.kind == "video"
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if is_video and track is not self._video_track:
                    continue  # receive_video=False or an extra track: discard
                self._media.push(track.kind, frame)
        finally:
            if is_video and track is self._video_track:
                self._media.end_video()

    # ------------------------------------------------------------------------ messages

    def send(self, msg_type: str, data: dict[str, Any]) -> None:
        """Send ``{"type": msg_type, "data": data}`` on the ``message`` channel (JSON text).

        Never blocks. Raises :class:`perso_sync.errors.SessionClosedError` when the core is
        closed (or the channel is no longer open).
        """
        channel = self._channel
        if self._close_started or channel is None or channel.readyState != "open":
            raise SessionClosedError("the session is closed")
        text = json.dumps({"type": msg_type, "data": data})
        # Checked here, not left to aiortc: its ValueError would read as a dying channel.
        size, limit = len(text.encode("utf-8")), self.max_message_size()
        if size > limit:
            raise InvalidInputError(
                f"a {msg_type!r} message of {size} bytes is too large: the data channel carries "
                f"at most {limit} bytes per message (the server's SCTP max-message-size)"
            )
        try:
            channel.send(text)
        except Exception as exc:  # aiortc InvalidStateError / ConnectionError on a dying channel
            raise SessionClosedError(f"the session is closed ({exc!r})") from exc

    def max_message_size(self) -> int:
        """The largest ``message``-channel message the server accepts, in bytes of JSON text.

        The server states it in its SDP answer (``a=max-message-size``; aiortc, and so the mock,
        says 262144); without that line WebRTC's default of 65536 applies.
        """
        pc = self._pc
        transport = None if pc is None else pc.sctp
        # aiortc keeps the negotiated value on the SCTP transport without a public accessor.
        limit = getattr(transport, "_remote_max_message_size", None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
        return DEFAULT_MAX_MESSAGE_SIZE

    # --------------------------------------------------------------------------- STF

    async def upload_file(
        self,
        source: BinaryIO,
        *,
        total: int | None,
        progress: Callable[[int, int | None], None] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Upload ``source`` on a new ``file`` channel (docs/PROTOCOL.md §8); return the file_ref.

        Reads ``source`` from its current position in 64 KiB chunks, off the loop, as it sends
        (the file is never held in memory whole). ``total`` is the expected byte count, only
        passed on to ``progress``; ``progress(sent_bytes, total)`` is called ON the loop after
        each chunk (it must not block; its exceptions abort the upload and propagate). Raises
        :class:`perso_sync.errors.STFError` with "File transfer timed out" after ``timeout``
        seconds for the whole transfer, when the channel closes before the file_ref arrives,
        or when reading ``source`` fails; :class:`perso_sync.errors.SessionClosedError` when
        the core is closed. Several uploads may run at once (one channel each).
        """
        from perso_sync._runtime import run_sync_off_loop

        pc = self._pc
        if self._close_started or pc is None:
            raise SessionClosedError("the session is closed")
        try:
            channel = pc.createDataChannel(FILE_CHANNEL, protocol=FILE_CHANNEL)
        except Exception as exc:
            raise STFError(f"could not open the file channel: {exc!r}") from exc
        self._file_channels.add(channel)
        transfer = _FileTransfer(channel)
        try:
            with anyio.move_on_after(timeout) as deadline:
                await transfer.wait_for(lambda: transfer.server_ready)
                sent = 0
                eof = False
                while not eof:
                    # One worker-thread hop per batch of 64 KiB reads (bounded read-ahead):
                    # a hop per chunk costs more than the reads themselves.
                    try:
                        chunks, eof = await run_sync_off_loop(_read_chunks, source)
                    except (OSError, ValueError) as exc:  # ValueError: a closed file
                        raise STFError(f"could not read the file to upload: {exc}") from exc
                    for chunk in chunks:
                        if channel.bufferedAmount > STF_BUFFERED_HIGH:
                            await transfer.wait_for(
                                lambda: channel.bufferedAmount <= STF_BUFFERED_LOW
                            )
                        self._send_file_data(transfer, chunk)
                        sent += len(chunk)
                        if progress is not None:
                            progress(sent, total)
                self._send_file_data(transfer, b"")  # end of file
                await transfer.wait_for(lambda: transfer.file_ref is not None)
            if deadline.cancelled_caught:
                raise STFError("File transfer timed out")
            assert transfer.file_ref is not None
            return transfer.file_ref
        except STFError as exc:
            if self._close_started:  # the channel died because the whole session closed
                raise SessionClosedError("the session closed during the upload") from exc
            raise
        finally:
            self._file_channels.discard(channel)
            self._close_channel(channel)

    def _send_file_data(self, transfer: _FileTransfer, data: bytes) -> None:
        if self._close_started:
            raise SessionClosedError("the session is closed")
        if transfer.closed or transfer.channel.readyState != "open":
            raise STFError("File channel closed before the transfer finished")
        try:
            transfer.channel.send(data)
        except Exception as exc:
            raise STFError("File channel closed before the transfer finished") from exc

    # --------------------------------------------------------------------------- closing

    async def close(self, *, manual: bool = True, code: int = 200, reason: str = "OK") -> None:
        """Close everything: jobs, recorder, channels, then the peer connection (bounded by
        ``options.close_timeout``). Idempotent: only the first call's arguments count and
        ``hooks.on_closed(manual, code, reason)`` fires once; later calls wait for the first
        one to finish. Never raises aiortc errors; safe to call from any task on the loop."""
        await self._teardown(notify=True, manual=manual, code=code, reason=reason)

    async def _teardown(self, *, notify: bool, manual: bool, code: int, reason: str) -> None:
        if self._close_started:
            if anyio.get_current_task().id not in self._job_task_ids:
                with anyio.move_on_after(self._options.close_timeout):
                    await self._close_done.wait()
            return
        self._close_started = True
        timeout = self._options.close_timeout
        with anyio.CancelScope(shield=True):
            try:
                try:
                    await self._media.finish_recording()
                except RecordingError:
                    logger.warning("recording could not be finalized", exc_info=True)
                self._media.end_video()
                if self._jobs is not None:
                    self._jobs.cancel_scope.cancel()
                for channel in [*self._file_channels, self._channel]:
                    if channel is not None:
                        self._close_channel(channel)
                if self._pc is not None:
                    with anyio.move_on_after(timeout) as scope:
                        try:
                            await self._pc.close()
                        except Exception:
                            logger.warning("closing the peer connection failed", exc_info=True)
                    if scope.cancelled_caught:
                        logger.warning("closing the peer connection took over %.1f s", timeout)
                if anyio.get_current_task().id not in self._job_task_ids:
                    with anyio.move_on_after(timeout):
                        await self._host_done.wait()
                    if self._host_task is not None and self._host_task.done():
                        self._host_task = None
            finally:
                self._close_done.set()
                if notify:
                    try:
                        self._hooks.on_closed(manual, code, reason)
                    except Exception:
                        logger.exception("on_closed hook raised")

    @staticmethod
    def _close_channel(channel: RTCDataChannel) -> None:
        if channel.readyState in ("closing", "closed"):
            return
        try:
            channel.close()
        except Exception:
            logger.debug("closing data channel %s failed", channel.label, exc_info=True)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started (by the user, the watchdog or the server)."""
        return self._close_started

    # ----------------------------------------------------------------------------- media

    @property
    def audio_track(self) -> MediaStreamTrack | None:
        """The remote aiortc audio ``MediaStreamTrack``, or None. The core drains it itself:
        do not call ``recv()`` on it (use :meth:`start_recording`)."""
        return self._audio_track

    @property
    def video_track(self) -> MediaStreamTrack | None:
        """The remote aiortc video ``MediaStreamTrack``, or None (also None when
        ``receive_video`` is False). The core drains it itself: do not call ``recv()`` on it
        (use :meth:`subscribe_video_frames` / :meth:`latest_video_frame`)."""
        return self._video_track

    def latest_video_frame(self) -> av.VideoFrame | None:
        """The most recent decoded video frame, or None before the first one."""
        return self._media.latest_video_frame

    def subscribe_video_frames(self, max_buffer: int = 2) -> AsyncIterator[av.VideoFrame]:
        """Async iterator of decoded video frames from now on.

        Holds at most ``max_buffer`` frames (>= 1): when the consumer is slower, the oldest are
        dropped, so memory stays bounded. Ends when the core closes (or the video track ends);
        closing the iterator (``aclose()`` / leaving ``async for``) unsubscribes. Several
        subscribers may run at once. Raises :class:`perso_sync.errors.SessionClosedError` when
        the core is already closed.
        """
        if self._close_started:
            raise SessionClosedError("the session is closed")
        return self._media.subscribe_video_frames(max_buffer, self._video_track is not None)

    async def start_recording(self, path: str) -> None:
        """Record the avatar's media to ``path`` with aiortc's ``MediaRecorder``.

        ``.wav`` records audio only; any other extension (``.mp4``, ``.mkv``, ...) records audio
        and video (video only when received). Encoding runs on the loop, so keep sizes small.
        Raises :class:`perso_sync.errors.RecordingError` when already recording or the file
        cannot be opened, :class:`perso_sync.errors.SessionClosedError` when closed. The
        recording stops (and the file is finalized) at :meth:`stop_recording` or at close.
        """
        if self._close_started:
            raise SessionClosedError("the session is closed")
        await self._media.start_recording(
            path, has_audio=self._audio_track is not None, has_video=self._video_track is not None
        )

    async def stop_recording(self) -> None:
        """Stop recording and finalize the file. No-op when not recording. Raises
        :class:`perso_sync.errors.RecordingError` when the file cannot be finalized."""
        await self._media.finish_recording()
