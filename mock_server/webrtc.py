"""The mock server's WebRTC answerer (aiortc): one peer connection per `exchange` offer.

Shaped like aiortc's ``examples/server/server.py``: the ``Answerer`` (not a module global) owns
its peers; every handler is registered before ``setRemoteDescription``; channel handlers are
attached inside ``on("datachannel")``; ``close_all`` closes every connection with ``gather``.

What a peer does (docs/PROTOCOL.md §5, §7, §8):

* sends one audio and one video track of a synthetic avatar (``mock_server.media``) in ONE
  MediaStream (aiortc gives every sender of a connection the same ``a=msid`` stream id);
* on the ``message`` channel: a server ``ping`` every ``ping_interval`` (stoppable), ``ttstf``
  / ``stf`` → an ``stf {message, duration}`` after ``speech_delay``, ``clear-buffer``,
  ``set-template``, ``change-size``, legacy ``record-*`` → ``stt`` / ``stt-error``;
* legacy voice chat: records the client's audio track (if its offer sends one) from
  ``record-start`` to ``record-end-stt`` / ``record-end-translate`` (allowing for the audio's
  latency, see ``_Take``), answering the transcript ``on_speech`` finds, else ``stt_text``;
* on each ``file`` channel: empty "ready" text, binary chunks, empty binary EOF, one text
  answer with a new ``file_ref`` (size limit and malformed transfers close the channel; see
  ``mock_server.file_channel``).

Speech: utterances play one after another (the avatar's timeline); each ``stf`` reply is sent
``speech_delay`` after its request, in order. ``clear-buffer`` drops requests not answered yet;
the utterance playing finishes, queued ones are cut. ``stf`` with an unknown ``file_ref`` is
ignored (it is in the journal as received).

Callbacks (called on the answerer's loop; they must not block):

* ``on_message(session_id, channel, direction, payload)``: ``message`` channel: the decoded
  dict both ways (a malformed text message: the raw string; binary: ``{"binary": size}``).
  ``file`` channel: out ``""`` (ready) and out ``file_ref``; in, once per transfer,
  ``{"file_ref", "size", "sha256"}`` or ``{"error": reason, "size": received}``.
* ``on_speech(session_id, voiced_seconds)`` (optional): the transcript of a voice-chat take
  whose voiced part lasts ``voiced_seconds``, or None when it recognises nothing.
* ``on_state(session_id, event)``, at most one end event per peer: ``"connected"`` (ICE/DTLS
  up and ``message`` open), then ``"closed"`` (the client closed its channel or connection),
  ``"lost"`` (connection failed, the client vanished — see ``lost_after_silence`` — or sent no
  ping for ``client_ping_timeout``) or ``"failed"`` (never connected / unusable offer). A close
  by the server itself (``Answerer.close``, ``close_all``, a new offer) reports nothing.

Threads: everything runs on the answerer's loop. From another thread, ``stop_pings`` /
``start_pings``, edits of ``Peer.config`` and reads of ``speaking``, ``files``, ``received``
are safe; coroutines (``close_message_channel``, ``Answerer.close``) must be run on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ClassVar, TypeGuard

import attrs
import av
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from mock_server._loopback import ensure_loopback_candidates
from mock_server.file_channel import FILE_LABEL, FileInfo, Upload
from mock_server.media import Avatar, AvatarAudioTrack, AvatarVideoTrack, SpeechTimeline
from mock_server.speech import voiced_duration

__all__ = [
    "FILE_LABEL",
    "MESSAGE_LABEL",
    "Answerer",
    "FileInfo",
    "InvalidOfferError",
    "OnMessage",
    "OnSpeech",
    "OnState",
    "Peer",
    "PeerConfig",
]

logger = logging.getLogger("mock_server.webrtc")

MESSAGE_LABEL = "message"
#: Bound on answering one offer (gathering host candidates is local, so this is generous).
ANSWER_TIMEOUT = 10.0
#: Bound on closing one peer connection; close_all waits at most this long in total.
CLOSE_TIMEOUT = 5.0
MIN_SPEECH_MS = 300.0
#: change-size values outside [1, MAX_DIMENSION] are ignored (and journaled as received).
MAX_DIMENSION = 8192

OnMessage = Callable[[str, str, str, Any], None]
OnState = Callable[[str, str], None]
OnSpeech = Callable[[str, float], "str | None"]
#: Rate at which uplink audio is kept (mono, 16-bit), as the platform's STT takes it.
UPLINK_RATE = 16000
#: Seconds from a client sending audio to its frame leaving our track (Opus encoder, network,
#: the jitter buffer's prefetch: measured about 0.1 s on loopback), allowed for when cutting a
#: take. Too large cuts the start of a take, too small its end.
UPLINK_LATENCY = 0.1
#: Upper bound in seconds on waiting, after ``record-end-*``, for the frames sent before it
#: (a client that stopped sending audio never delivers them).
UPLINK_TAIL_TIMEOUT = 1.0

_AIORTC_ERRORS = (
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    InvalidAccessError,
    InvalidStateError,
    InternalError,
    OperationError,
)


class InvalidOfferError(ValueError):
    """The client's offer is not a usable SDP offer (the HTTP side answers 400)."""


@attrs.define
class PeerConfig:
    """Per-session knobs of the mock peer; mutable, read live (changes apply at once)."""

    ping_interval: float = 1.0
    pings_enabled: bool = True
    speech_delay: float = 0.05
    """Seconds from ``ttstf``/``stf`` to the server's ``stf`` reply."""
    ms_per_char: float = 60.0
    """``stf`` duration is ``max(300, len(text) * ms_per_char)``, or the audio's own length."""
    video_max_width: int = 320
    """Render cap: frames are rendered at the requested size fitted into this box."""
    video_max_height: int = 240
    fps: int = 10
    audio_dtx: bool = False
    """While idle, send one audio packet every 400 ms (Opus DTX) instead of every 20 ms: far
    less CPU per idle peer (for tests with many sessions); receivers see gaps in idle audio."""
    max_file_size: int = 50 * 1024 * 1024
    stall_file_channel: bool = False
    """Receive uploads but never answer the ``file_ref`` (client timeout tests)."""
    stt_text: str = "hello from the microphone"
    """Legacy ``record-end-stt`` answer when the recorded audio is silent, absent (no audio
    track in the offer) or not recognised."""
    stt_error_code: int | None = None
    """When set, legacy STT/translate answer ``stt-error {code}`` instead."""
    client_ping_timeout: float | None = 30.0
    """No client ``ping`` for this long (after the channel opened) → the peer is lost."""
    lost_after_silence: float = 10.0
    """A connection that ends after this long without any packet from the client ended
    because the client vanished (ICE consent expired), so it is "lost", not "closed". A live
    client sends RTCP reports and pings every second or so; a graceful close comes from a
    client that was still talking."""


@attrs.define
class _Take:
    """One legacy voice-chat recording of the client's audio (16-bit mono at UPLINK_RATE).

    Audio reaches the track ``UPLINK_LATENCY`` or so after the client sent it (encoder,
    network, the receiver's jitter buffer), while a ``record-*`` message arrives at once. So a
    take holds the frames that come out of the track from ``start + UPLINK_LATENCY`` to
    ``end + UPLINK_LATENCY``: what the client sent between its two messages, even when the next
    turn starts right after (takes never overlap).
    """

    start: float
    end: float | None = None
    pcm: bytearray = attrs.field(factory=bytearray)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)

    def add(self, pcm: bytes, arrived_at: float) -> None:
        if arrived_at < self.start + UPLINK_LATENCY:
            return
        if self.end is not None and arrived_at >= self.end + UPLINK_LATENCY:
            self.done.set()  # every frame sent before record-end-* is in
            return
        self.pcm += pcm


@attrs.define
class _Speech:
    message: str
    duration_ms: float
    due: float
    generation: int
    audio_duration_ms: asyncio.Future[float | None] | None = None
    """Measured off the loop (probing a large file takes a while); wins when known."""


class Peer:
    """One client connection: its peer connection, channels, avatar and speech.

    A handle for the HTTP side and for tests (fault injection, inspection). Attributes:
    ``config`` (live ``PeerConfig``), ``width``/``height`` (the size the client asked for;
    frames are rendered at ``render_size``), ``speaking``, ``template``, ``files``
    (file_ref → FileInfo), ``received`` (decoded inbound ``message`` channel messages),
    ``sent`` (outbound ones), ``state`` (the last event reported: "new", "connected",
    "closed", "lost", "failed"), ``connected`` / ``finished`` (asyncio events on the loop),
    ``uplink_frames`` (audio frames received from the client), ``takes`` (voiced seconds of
    each legacy voice-chat recording, in order).
    """

    def __init__(
        self,
        session_id: str,
        pc: RTCPeerConnection,
        config: PeerConfig,
        *,
        on_message: OnMessage,
        on_state: OnState,
        on_finished: Callable[[Peer], None],
        on_speech: OnSpeech | None = None,
    ) -> None:
        self.session_id = session_id
        self.pc = pc
        self.config = config
        self.files: dict[str, FileInfo] = {}
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.recording = False
        self.uplink_frames = 0
        self.takes: list[float] = []
        self._open_takes: list[_Take] = []  # recording, or in the tail after record-end-*
        self._on_speech = on_speech
        self.state = "new"
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()
        self._on_message = on_message
        self._on_state = on_state
        self._on_finished = on_finished
        self._loop = asyncio.get_running_loop()
        self._timeline = SpeechTimeline()
        self._speech: asyncio.Queue[_Speech] = asyncio.Queue()
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._message_channel: RTCDataChannel | None = None
        self._channel_closed_by_server = False
        self._closing = False
        self._last_client_ping = self._loop.time()
        self._last_activity = self._loop.time()
        self.avatar = Avatar(
            width=config.video_max_width,
            height=config.video_max_height,
            settings=config,
            speaking=lambda: self._timeline.speaking(self._loop.time()),
        )
        self._audio = AvatarAudioTrack(self.avatar)
        self._video = AvatarVideoTrack(self.avatar)

    # -- public handle ---------------------------------------------------------------------

    @property
    def width(self) -> int:
        """The width the client asked for (``change-size``); see ``render_size``."""
        return self.avatar.width

    @property
    def height(self) -> int:
        """The height the client asked for (``change-size``); see ``render_size``."""
        return self.avatar.height

    @property
    def render_size(self) -> tuple[int, int]:
        """The size frames are actually rendered at (requested size fitted into the cap)."""
        return self.avatar.render_size

    @property
    def speaking(self) -> bool:
        """Whether the avatar is speaking right now."""
        return self.avatar.speaking

    @property
    def template(self) -> dict[str, str] | None:
        """The last ``set-template`` data (``{"model", "dress"}``), or None."""
        return self.avatar.template

    def stop_pings(self) -> None:
        """Stop the server pings (the client's watchdog should then close as lost)."""
        self.config.pings_enabled = False

    def start_pings(self) -> None:
        """Resume the server pings."""
        self.config.pings_enabled = True

    async def close_message_channel(self) -> None:
        """Fault: close the ``message`` channel from the server side (the pc stays up)."""
        channel = self._message_channel
        if channel is not None and channel.readyState in ("connecting", "open"):
            self._channel_closed_by_server = True
            channel.close()

    def send_raw(self, text: str) -> bool:
        """Fault: send ``text`` as is on the ``message`` channel (a hostile or broken server).

        Call it on the server loop (``server.call(peer.send_raw, text)``); returns whether the
        channel was open. Journaled as an outbound ``{"raw": length}``.
        """
        channel = self._message_channel
        if channel is None or channel.readyState != "open":
            return False
        channel.send(text)
        self._journal(MESSAGE_LABEL, "out", {"raw": len(text)})
        return True

    async def close(self) -> None:
        """Close the connection from the server side (no on_state event). Idempotent."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._audio.stop()
        self._video.stop()
        try:
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("session %s: peer connection did not close in time", self.session_id)
        self.finished.set()

    # -- setup (called by the Answerer, in this order) -------------------------------------

    def _register_handlers(self) -> None:
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == MESSAGE_LABEL:
                self._attach_message_channel(channel)
            elif channel.label == FILE_LABEL:
                self._attach_file_channel(channel)
            else:
                self._journal(channel.label, "in", {"unexpected_channel": channel.label})

        @pc.on("connectionstatechange")
        def on_connectionstatechange() -> None:
            state = pc.connectionState
            if state == "connected":
                self._maybe_connected()
            elif state in ("failed", "disconnected"):
                self._finish("lost" if self.state == "connected" else "failed")
            elif state == "closed" and not self._closing:
                # The client closed its side (DTLS close_notify makes aiortc close ours), or
                # it vanished and ICE consent expired, which also ends in "closed".
                self._finish_closed()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            # A client may send audio (legacy voice chat): record it between record-start and
            # record-end-*, drain it otherwise so it never piles up.
            if track.kind == "audio":
                self._spawn(self._receive_uplink(track))
            else:
                self._spawn(self._drain(track))

    def _add_tracks(self) -> None:
        """Attach the avatar tracks to the transceivers the offer asked for."""
        kinds = {transceiver.kind for transceiver in self.pc.getTransceivers()}
        for track in (self._audio, self._video):
            if track.kind in kinds:
                self.pc.addTrack(track)

    def _use_negotiated_codecs(self) -> None:
        """Send pre-encoded Opus when the answer chose Opus (see ``mock_server.media``)."""
        for media in SessionDescription.parse(self.pc.localDescription.sdp).media:
            if media.kind == "audio" and media.rtp.codecs:
                self._audio.preencoded_opus = media.rtp.codecs[0].mimeType.lower() == "audio/opus"

    # -- message channel -------------------------------------------------------------------

    def _attach_message_channel(self, channel: RTCDataChannel) -> None:
        self._message_channel = channel

        @channel.on("message")
        def on_message(raw: str | bytes) -> None:
            self._on_message_channel(raw)

        @channel.on("close")
        def on_close() -> None:
            if not self._channel_closed_by_server and not self._closing:
                self._finish_closed()

        def on_open() -> None:
            self._last_client_ping = self._loop.time()
            self._spawn(self._ping_loop(channel))
            self._spawn(self._client_ping_watchdog())
            self._spawn(self._speech_worker(channel))
            self._maybe_connected()

        if channel.readyState == "open":
            on_open()
        else:
            channel.once("open", on_open)

    def _on_message_channel(self, raw: str | bytes) -> None:
        self._last_activity = self._loop.time()
        if isinstance(raw, bytes):
            self._journal(MESSAGE_LABEL, "in", {"binary": len(raw)})
            return
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._journal(MESSAGE_LABEL, "in", raw)
            logger.info("session %s: ignoring malformed message %.80r", self.session_id, raw)
            return
        self.received.append(message)
        self._journal(MESSAGE_LABEL, "in", message)
        data = message.get("data")
        if not isinstance(data, dict):
            data = {}
        handler = self._handlers.get(message["type"])
        if handler is None:
            logger.info("session %s: ignoring message type %r", self.session_id, message["type"])
        else:
            handler(self, data)

    def _send(self, channel: RTCDataChannel | None, type_: str, data: dict[str, Any]) -> bool:
        """Send ``{type, data}`` if the channel is open; return whether it was sent."""
        if channel is None or channel.readyState != "open":
            return False
        message = {"type": type_, "data": data}
        channel.send(json.dumps(message))
        self.sent.append(message)
        self._journal(channel.label, "out", message)
        return True

    def _handle_ping(self, data: dict[str, Any]) -> None:
        self._last_client_ping = self._loop.time()

    def _handle_ttstf(self, data: dict[str, Any]) -> None:
        text = data.get("message")
        if not isinstance(text, str):
            logger.info("session %s: ttstf without a text message", self.session_id)
            return
        self._queue_speech(text, self._text_duration_ms(text))

    def _handle_stf(self, data: dict[str, Any]) -> None:
        file_ref = data.get("file_ref")
        info = self.files.get(file_ref) if isinstance(file_ref, str) else None
        if info is None:
            logger.warning("session %s: stf with unknown file_ref %r", self.session_id, file_ref)
            return
        hint = data.get("format")
        if isinstance(hint, str):
            info.format = hint
        text = data.get("message")
        text = text if isinstance(text, str) else ""
        # Probing a large non-audio file takes a noticeable time: keep it off the loop. The
        # speech queue stays in order, the worker awaits the measurement when its turn comes.
        measured = self._loop.run_in_executor(None, info.audio_duration_ms)
        self._queue_speech(text, self._text_duration_ms(text), measured)

    def _handle_clear_buffer(self, data: dict[str, Any]) -> None:
        self._generation += 1
        while not self._speech.empty():
            self._speech.get_nowait()
        self._timeline.cut(self._loop.time())

    def _handle_set_template(self, data: dict[str, Any]) -> None:
        self.avatar.template = {
            key: str(data[key]) for key in ("model", "dress") if data.get(key) is not None
        }

    def _handle_change_size(self, data: dict[str, Any]) -> None:
        width, height = data.get("width"), data.get("height")
        if _is_dimension(width) and _is_dimension(height):
            self.avatar.width, self.avatar.height = width, height
        else:
            logger.info("session %s: ignoring change-size %r", self.session_id, data)

    def _handle_record_start(self, data: dict[str, Any]) -> None:
        # What comes from now on belongs to the new take: a previous one's tail ends here.
        now = self._loop.time()
        for take in self._open_takes:
            if take.end is None:
                take.end = now
        self._open_takes.append(_Take(start=now))
        self.recording = True

    def _handle_record_end_stt(self, data: dict[str, Any]) -> None:
        self._spawn(self._answer_recording(self._end_take(), ""))

    def _handle_record_end_translate(self, data: dict[str, Any]) -> None:
        self.recording = False
        target = data.get("dst_lang")
        prefix = f"[{target}] " if isinstance(target, str) and target else ""
        self._spawn(self._answer_recording(self._end_take(), prefix))

    def _end_take(self) -> _Take:
        """The take being recorded, now ended (a fresh empty one if none was)."""
        self.recording = False
        now = self._loop.time()
        take = self._open_takes[-1] if self._open_takes else _Take(start=now)
        if take.end is None:
            take.end = now
        if not self.uplink_frames:  # no audio track: nothing more will come
            take.done.set()
        return take

    _handlers: ClassVar[Mapping[str, Callable[[Peer, dict[str, Any]], None]]] = {
        "ping": _handle_ping,
        "ttstf": _handle_ttstf,
        "stf": _handle_stf,
        "clear-buffer": _handle_clear_buffer,
        "set-template": _handle_set_template,
        "change-size": _handle_change_size,
        "record-start": _handle_record_start,
        "record-end-stt": _handle_record_end_stt,
        "record-end-translate": _handle_record_end_translate,
    }

    def _text_duration_ms(self, text: str) -> float:
        return max(MIN_SPEECH_MS, len(text) * self.config.ms_per_char)

    def _queue_speech(
        self,
        message: str,
        duration_ms: float,
        audio_duration_ms: asyncio.Future[float | None] | None = None,
    ) -> None:
        due = self._loop.time() + self.config.speech_delay
        self._speech.put_nowait(
            _Speech(message, duration_ms, due, self._generation, audio_duration_ms)
        )

    async def _speech_worker(self, channel: RTCDataChannel) -> None:
        while True:
            speech = await self._speech.get()
            if speech.audio_duration_ms is not None:
                measured = await speech.audio_duration_ms
                if measured is not None:
                    speech.duration_ms = measured
            delay = speech.due - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if speech.generation != self._generation:
                continue  # dropped by clear-buffer while it waited
            self._timeline.add(self._loop.time(), speech.duration_ms / 1000.0)
            self._send(
                channel, "stf", {"message": speech.message, "duration": round(speech.duration_ms)}
            )

    async def _receive_uplink(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=UPLINK_RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                self.uplink_frames += 1
                arrived_at = self._loop.time()
                pcm = b"".join(
                    bytes(out.planes[0])[: out.samples * 2] for out in resampler.resample(frame)
                )
                for take in self._open_takes:
                    take.add(pcm, arrived_at)

    async def _answer_recording(self, take: _Take, prefix: str) -> None:
        """Transcribe ``take`` (the client's audio since record-start), then answer ``stt``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(take.done.wait(), UPLINK_TAIL_TIMEOUT)
        if take in self._open_takes:
            self._open_takes.remove(take)
        pcm = bytes(take.pcm)
        voiced = await self._loop.run_in_executor(None, voiced_duration, pcm, UPLINK_RATE)
        self.takes.append(voiced)
        text = None
        if voiced > 0 and self._on_speech is not None:
            try:
                text = self._on_speech(self.session_id, voiced)
            except Exception:  # the HTTP side's bug must not kill the connection's handlers
                logger.exception("session %s: on_speech callback failed", self.session_id)
        await self._answer_stt(prefix + (text if text is not None else self.config.stt_text))

    async def _answer_stt(self, text: str) -> None:
        await asyncio.sleep(self.config.speech_delay)
        code = self.config.stt_error_code
        if code is not None:
            self._send(self._message_channel, "stt-error", {"code": code})
        else:
            self._send(self._message_channel, "stt", {"text": text})

    async def _ping_loop(self, channel: RTCDataChannel) -> None:
        while channel.readyState == "open":
            await asyncio.sleep(self.config.ping_interval)
            if self.config.pings_enabled:
                self._send(channel, "ping", {})

    async def _client_ping_watchdog(self) -> None:
        while True:
            timeout = self.config.client_ping_timeout
            if timeout is None:
                await asyncio.sleep(1.0)
                continue
            remaining = self._last_client_ping + timeout - self._loop.time()
            if remaining <= 0:
                logger.info("session %s: no client ping for %.1f s", self.session_id, timeout)
                self._finish("lost")
                return
            await asyncio.sleep(remaining)

    # -- file channel ----------------------------------------------------------------------

    def _attach_file_channel(self, channel: RTCDataChannel) -> None:
        upload = Upload(
            channel,
            session_id=self.session_id,
            settings=self.config,
            files=self.files,
            journal=self._journal,
        )

        @channel.on("message")
        def on_message(raw: str | bytes) -> None:
            self._last_activity = self._loop.time()
            upload.receive(raw)

        if channel.readyState == "open":
            upload.ready()
        else:
            channel.once("open", upload.ready)

    # -- lifecycle -------------------------------------------------------------------------

    def _maybe_connected(self) -> None:
        channel = self._message_channel
        if (
            self.state == "new"
            and self.pc.connectionState == "connected"
            and channel is not None
            and channel.readyState == "open"
        ):
            self.state = "connected"
            self.connected.set()
            self._last_activity = self._loop.time()
            self._spawn(self._activity_monitor())
            self._emit_state("connected")

    def _finish_closed(self) -> None:
        silence = self._loop.time() - self._last_activity
        if self.state == "connected" and silence > self.config.lost_after_silence:
            logger.info("session %s: closed after %.1f s of silence", self.session_id, silence)
            self._finish("lost")
        else:
            self._finish("closed")

    async def _activity_monitor(self) -> None:
        """Note when packets last came from the client (RTCP, SCTP, DTLS: all count)."""
        received = -1
        while True:
            await asyncio.sleep(min(1.0, self.config.lost_after_silence / 3))
            if self.pc.connectionState == "closed":
                return
            report = await self.pc.getStats()
            total = sum(
                stats.packetsReceived for stats in report.values() if stats.type == "transport"
            )
            if total != received:
                received = total
                self._last_activity = self._loop.time()

    def _finish(self, event: str) -> None:
        """Report the peer's end once, then close it (from a task: we are in a handler)."""
        if self.state in ("closed", "lost", "failed") or self._closing:
            return
        self.state = event
        self._emit_state(event)
        self._on_finished(self)

    def _emit_state(self, event: str) -> None:
        try:
            self._on_state(self.session_id, event)
        except Exception:  # the HTTP side's bug must not kill the connection's handlers
            logger.exception("session %s: on_state callback failed", self.session_id)

    def _journal(self, channel: str, direction: str, payload: Any) -> None:
        try:
            self._on_message(self.session_id, channel, direction, payload)
        except Exception:  # the HTTP side's bug must not kill the connection's handlers
            logger.exception("session %s: on_message callback failed", self.session_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closing:
            coro.close()
            return
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("session %s: peer task failed", self.session_id, exc_info=task.exception())

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()


def _is_dimension(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DIMENSION


class Answerer:
    """Answers offers with avatar peers; owns every peer it created (one per session id)."""

    def __init__(
        self, *, on_message: OnMessage, on_state: OnState, on_speech: OnSpeech | None = None
    ) -> None:
        ensure_loopback_candidates()
        self._on_message = on_message
        self._on_state = on_state
        self._on_speech = on_speech
        self._peers: dict[str, Peer] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()

    async def answer(
        self, session_id: str, offer: dict[str, str], config: PeerConfig
    ) -> dict[str, str]:
        """Answer ``offer`` (``{"type": "offer", "sdp": ...}``) with a new peer.

        A previous peer of the same session is closed first. Raises ``InvalidOfferError``
        when the offer is not a usable SDP offer (after an on_state "failed").
        """
        if (
            not isinstance(offer, dict)
            or offer.get("type") != "offer"
            or not isinstance(offer.get("sdp"), str)
        ):
            self._on_state(session_id, "failed")
            raise InvalidOfferError('client_sdp must be {"type": "offer", "sdp": "<sdp>"}')
        previous = self._peers.pop(session_id, None)
        if previous is not None:
            await previous.close()
        pc = RTCPeerConnection()
        peer = Peer(
            session_id,
            pc,
            config,
            on_message=self._on_message,
            on_state=self._on_state,
            on_finished=self._close_finished,
            on_speech=self._on_speech,
        )
        peer._register_handlers()
        self._peers[session_id] = peer
        try:
            answer = await asyncio.wait_for(self._negotiate(peer, offer["sdp"]), ANSWER_TIMEOUT)
        except (*_AIORTC_ERRORS, asyncio.TimeoutError) as exc:
            peer._finish("failed")
            await peer.close()
            if isinstance(exc, InvalidOfferError):
                raise
            raise InvalidOfferError(f"cannot answer the offer: {exc!r}") from exc
        return {"type": answer.type, "sdp": answer.sdp}

    @staticmethod
    async def _negotiate(peer: Peer, sdp: str) -> RTCSessionDescription:
        await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if peer.pc.sctp is None:
            # aiortc accepts an SDP without any section; the protocol cannot work without the
            # `message` channel, so say what is missing instead of answering an empty session.
            raise InvalidOfferError(
                "the offer has no data channel section: create the 'message' channel "
                "before createOffer"
            )
        peer._add_tracks()
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        peer._use_negotiated_codecs()
        return peer.pc.localDescription

    def peer(self, session_id: str) -> Peer | None:
        """The session's latest peer (also after it ended, until ``close``), or None."""
        return self._peers.get(session_id)

    async def close(self, session_id: str) -> None:
        """Close and forget the session's peer (no on_state event)."""
        peer = self._peers.pop(session_id, None)
        if peer is not None:
            await peer.close()

    async def close_all(self) -> None:
        """Close every peer concurrently, bounded by ``CLOSE_TIMEOUT`` in total."""
        peers = list(self._peers.values())
        self._peers.clear()
        pending = [peer.close() for peer in peers] + list(self._closing_tasks)
        if not pending:
            return
        try:
            await asyncio.wait_for(
                asyncio.gather(*pending, return_exceptions=True), CLOSE_TIMEOUT + 1.0
            )
        except asyncio.TimeoutError:
            logger.warning("close_all: some peer connections did not close in time")

    def _close_finished(self, peer: Peer) -> None:
        # Called from an aiortc event handler: close in a task the answerer owns.
        task = asyncio.get_running_loop().create_task(peer.close())
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)
