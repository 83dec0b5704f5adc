"""The mock's WebRTC answerer, checked with a raw aiortc client (not perso_sync).

Each test runs its own event loop (``asyncio.run``) holding an ``Answerer`` and one or more raw
clients that follow docs/PROTOCOL.md §5, §7 and §8 by hand. Waiting is always on events with a
deadline; where a test must show that something does *not* happen, it waits for a later
event that would have come after it (or for frames, which arrive at a known pace).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import random
import struct
import sys
import textwrap
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aioice.ice
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from mock_server.media import indicator_band
from mock_server.webrtc import Answerer, InvalidOfferError, Peer, PeerConfig

T = TypeVar("T")
DEADLINE = 5.0
CHUNK = 64 * 1024


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


class Recorder:
    """Everything the answerer reports through its callbacks, waitable."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str, Any]] = []
        self.states: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def on_message(self, session_id: str, channel: str, direction: str, payload: Any) -> None:
        self.messages.append((session_id, channel, direction, payload))
        self.changed.set()

    def on_state(self, session_id: str, event: str) -> None:
        self.states.append((session_id, event))
        self.changed.set()

    async def wait_state(self, session_id: str, event: str) -> None:
        await wait_until(self.changed, lambda: (session_id, event) in self.states, event)


async def wait_until(changed: asyncio.Event, predicate: Callable[[], T], what: str) -> T:
    """Wait until ``predicate()`` is truthy, re-checking whenever ``changed`` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not (result := predicate()):
        changed.clear()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {what}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), remaining)
    return result


class RawClient:
    """A hand-written offerer: message channel, recvonly audio + video, frame collection."""

    def __init__(
        self, audio_codec: str | None = None, send_audio: MediaStreamTrack | None = None
    ) -> None:
        self.pc = RTCPeerConnection()
        self.changed = asyncio.Event()
        self.messages: list[dict[str, Any]] = []
        self.video_frames: list[Any] = []
        self.audio_frames: list[Any] = []
        self.video_count = 0  # every video frame received, unlike the capped list
        self.tracks: list[MediaStreamTrack] = []
        self.answer_sdp = ""
        self._consumers: list[asyncio.Task[None]] = []
        self.channel = self.pc.createDataChannel("message", protocol="message")
        self.channel.on("message", self._on_message)
        self.channel.on("open", self.changed.set)
        self.channel.on("close", self.changed.set)
        if send_audio is not None:  # legacy voice chat: the offer sends our audio too
            audio = self.pc.addTransceiver(send_audio, direction="sendrecv")
        else:
            audio = self.pc.addTransceiver("audio", direction="recvonly")
        if audio_codec is not None:
            codecs = RTCRtpReceiver.getCapabilities("audio").codecs
            audio.setCodecPreferences([c for c in codecs if c.mimeType == audio_codec])
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", self._on_track)

    def _on_message(self, raw: str | bytes) -> None:
        assert isinstance(raw, str)
        self.messages.append(json.loads(raw))
        self.changed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tracks.append(track)
        sink = self.video_frames if track.kind == "video" else self.audio_frames
        self._consumers.append(asyncio.get_running_loop().create_task(self._consume(track, sink)))

    async def _consume(self, track: MediaStreamTrack, sink: list[Any]) -> None:
        try:
            while True:
                sink.append(await track.recv())
                del sink[:-50]  # keep memory flat; tests look at recent frames
                if track.kind == "video":
                    self.video_count += 1
                self.changed.set()
        except MediaStreamError:
            self.changed.set()

    async def connect(self, answerer: Answerer, session_id: str, config: PeerConfig) -> Peer:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        answer = await answerer.answer(session_id, offer, config)
        self.answer_sdp = answer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        await self.wait(lambda: self.channel.readyState == "open" and self.tracks, "ready")
        peer = answerer.peer(session_id)
        assert peer is not None
        return peer

    def send(self, type_: str, data: dict[str, Any] | None = None) -> None:
        self.channel.send(json.dumps({"type": type_, "data": data or {}}))

    async def wait(self, predicate: Callable[[], T], what: str) -> T:
        return await wait_until(self.changed, predicate, what)

    async def next_message(self, type_: str, after: int = 0) -> dict[str, Any]:
        """The first message of ``type_`` at index >= ``after``."""

        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages[after:] if m["type"] == type_), None)

        found = await self.wait(find, f"a {type_!r} message")
        assert found is not None
        return found

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == type_]

    async def frames_pass(self, count: int) -> None:
        """Let ``count`` more video frames arrive: a clock that runs at the avatar's pace."""
        target = self.video_count + count
        await self.wait(lambda: self.video_count >= target, f"{count} frames")

    async def close(self) -> None:
        await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)


@contextlib.asynccontextmanager
async def answerer_and_client(
    audio_codec: str | None = None,
    send_audio: MediaStreamTrack | None = None,
    on_speech: Callable[[str, float], str | None] | None = None,
) -> AsyncIterator[tuple[Recorder, Answerer, RawClient]]:
    """An answerer reporting to a :class:`Recorder`, and one client; both closed on exit."""
    recorder = Recorder()
    answerer = Answerer(
        on_message=recorder.on_message, on_state=recorder.on_state, on_speech=on_speech
    )
    client = RawClient(audio_codec, send_audio)
    try:
        yield recorder, answerer, client
    finally:
        await client.close()
        await answerer.close_all()


class Upload:
    """The client side of one `file` channel transfer (docs/PROTOCOL.md §8), step by step."""

    def __init__(self, client: RawClient) -> None:
        self.changed = client.changed
        self.texts: list[str] = []
        self.channel: RTCDataChannel = client.pc.createDataChannel("file", protocol="file")
        self.channel.bufferedAmountLowThreshold = 256 * 1024
        self.channel.on("message", self._on_message)
        self.channel.on("close", self.changed.set)
        self.channel.on("bufferedamountlow", self.changed.set)

    def _on_message(self, raw: str | bytes) -> None:
        assert isinstance(raw, str), "the server only sends text on the file channel"
        self.texts.append(raw)
        self.changed.set()

    async def ready(self) -> None:
        await wait_until(self.changed, lambda: self.texts == [""], "the empty ready message")

    async def send(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            if self.channel.readyState != "open":
                return  # the server closed the channel (what some tests expect)
            if self.channel.bufferedAmount > 512 * 1024:
                await wait_until(
                    self.changed,
                    lambda: (
                        self.channel.bufferedAmount <= 256 * 1024
                        or self.channel.readyState != "open"
                    ),
                    "buffered amount low",
                )
                if self.channel.readyState != "open":
                    return
            self.channel.send(data[start : start + CHUNK])

    async def finish(self) -> str:
        self.channel.send(b"")
        texts = await wait_until(self.changed, lambda: self.texts[1:], "the file_ref")
        return texts[0]

    async def closed_by_server(self) -> None:
        await wait_until(self.changed, lambda: self.channel.readyState == "closed", "close")


def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(struct.pack("<h", 1000) * int(seconds * rate))
    return buffer.getvalue()


def band_luma(frame: Any) -> float:
    """Mean luma of the speaking indicator band of a decoded frame."""
    plane = frame.planes[0]
    data = bytes(plane)
    start, stop = indicator_band(frame.width, frame.height)
    rows = [
        data[y * plane.line_size : y * plane.line_size + frame.width] for y in range(start, stop)
    ]
    return sum(sum(row) for row in rows) / sum(len(row) for row in rows)


def peak(frame: Any) -> int:
    samples = struct.unpack(f"<{len(bytes(frame.planes[0])) // 2}h", bytes(frame.planes[0]))
    return max(abs(s) for s in samples)


def test_tracks_arrive_in_one_stream_at_the_requested_size_capped() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig())
            await recorder.wait_state("s1", "connected")
            media = SessionDescription.parse(client.answer_sdp).media
            msids = {m.kind: m.msid for m in media if m.kind in ("audio", "video")}
            assert set(msids) == {"audio", "video"}
            streams = {msid.split()[0] for msid in msids.values() if msid}
            assert len(streams) == 1, f"audio and video must share one stream: {msids}"
            assert sorted(track.kind for track in client.tracks) == ["audio", "video"]

            client.send("change-size", {"width": 160, "height": 120})
            await client.wait(
                lambda: any((f.width, f.height) == (160, 120) for f in client.video_frames),
                "a 160x120 frame",
            )
            assert (peer.width, peer.height) == (160, 120)
            # Bigger than the cap (320x240): rendered at the cap, aspect ratio kept.
            client.send("change-size", {"width": 1280, "height": 720})
            await client.wait(
                lambda: any((f.width, f.height) == (320, 180) for f in client.video_frames),
                "a 320x180 frame",
            )
            assert (peer.width, peer.height, peer.render_size) == (1280, 720, (320, 180))
            # Nonsense sizes are ignored, not fatal.
            client.send("change-size", {"width": -5, "height": "big"})
            client.send("ttstf", {"message": "still alive"})
            await client.next_message("stf")
            assert (peer.width, peer.height) == (1280, 720)
            assert client.audio_frames, "audio arrives too"

    run(scenario)


def test_pings_arrive_every_interval_and_stop_when_stopped() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(ping_interval=0.05, fps=20))
            await client.wait(lambda: len(client.of_type("ping")) >= 3, "three pings")
            assert ("s1", "message", "out", {"type": "ping", "data": {}}) in recorder.messages

            peer.stop_pings()
            sent_at_stop = sum(1 for m in peer.sent if m["type"] == "ping")
            await client.frames_pass(10)  # 0.5 s: ten ping intervals
            assert sum(1 for m in peer.sent if m["type"] == "ping") == sent_at_stop
            assert len(client.of_type("ping")) == sent_at_stop

            peer.start_pings()
            await client.wait(lambda: len(client.of_type("ping")) > sent_at_stop, "pings again")

    run(scenario)


def test_ttstf_is_answered_with_stf_and_the_avatar_speaks() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(ms_per_char=50.0, fps=20))
            client.send("change-size", {"width": 96, "height": 64})
            await client.wait(
                lambda: client.video_frames and client.video_frames[-1].width == 96, "resize"
            )
            assert band_luma(client.video_frames[-1]) < 64, "idle: dark indicator band"
            assert peak(client.audio_frames[-1]) == 0, "idle: silence"

            client.send("ttstf", {"message": "hello there"})
            stf = await client.next_message("stf")
            assert stf["data"] == {"message": "hello there", "duration": 550}
            assert (
                "s1",
                "message",
                "in",
                {"type": "ttstf", "data": {"message": "hello there"}},
            ) in (recorder.messages)
            await client.wait(
                lambda: client.video_frames and band_luma(client.video_frames[-1]) > 160,
                "a speaking frame",
            )
            await client.wait(
                lambda: client.audio_frames and peak(client.audio_frames[-1]) > 1000, "the tone"
            )
            assert peer.speaking
            # Short texts still speak for 300 ms; the avatar goes quiet afterwards.
            client.send("ttstf", {"message": "ok"})
            second = await client.next_message("stf", after=client.messages.index(stf) + 1)
            assert second["data"] == {"message": "ok", "duration": 300}
            await client.wait(
                lambda: client.video_frames and band_luma(client.video_frames[-1]) < 64,
                "an idle frame after the speech",
            )

    run(scenario)


def test_idle_audio_with_dtx_is_sparse_and_speech_is_continuous() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (_, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(audio_dtx=True, fps=20))
            assert peer._audio.preencoded_opus, "aiortc offers Opus first"
            await client.frames_pass(5)
            client.audio_frames.clear()
            await client.frames_pass(20)  # one second; continuous audio would be 50 frames
            idle = len(client.audio_frames)
            assert idle <= 10, f"DTX: about 2.5 idle packets a second, got {idle}"

            client.send("ttstf", {"message": "x" * 20})  # 1.2 s of speech
            await client.next_message("stf")
            client.audio_frames.clear()
            await client.wait(
                lambda: sum(peak(f) > 1000 for f in client.audio_frames) >= 20, "20 tone frames"
            )

    run(scenario)


def test_audio_without_opus_is_encoded_by_aiortc() -> None:
    async def scenario() -> None:
        async with answerer_and_client(audio_codec="audio/PCMU") as (_, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(audio_dtx=True))
            assert not peer._audio.preencoded_opus
            client.send("ttstf", {"message": "tone"})
            await client.next_message("stf")
            await client.wait(
                lambda: client.audio_frames and peak(client.audio_frames[-1]) > 1000, "the tone"
            )

    run(scenario)


def test_clear_buffer_drops_speech_not_yet_announced() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (_, answerer, client):
            await client.connect(answerer, "s1", PeerConfig(speech_delay=0.3))
            client.send("ttstf", {"message": "dropped"})
            client.send("clear-buffer")
            client.send("ttstf", {"message": "kept"})
            stf = await client.next_message("stf")
            # Speech is announced in order, so "dropped" would have come first.
            assert stf["data"]["message"] == "kept"
            assert [m["data"]["message"] for m in client.of_type("stf")] == ["kept"]

    run(scenario)


def test_set_template_and_legacy_speech_recognition() -> None:
    async def scenario() -> None:
        config = PeerConfig(stt_text="bonjour")
        async with answerer_and_client() as (_, answerer, client):
            peer = await client.connect(answerer, "s1", config)
            client.send("set-template", {"model": "m1", "dress": "suit"})
            client.send("record-start")
            client.send("record-end-stt", {"language": "fr"})
            stt = await client.next_message("stt")
            assert stt["data"] == {"text": "bonjour"}
            assert peer.template == {"model": "m1", "dress": "suit"}

            client.send("record-end-translate", {"src_lang": "fr", "dst_lang": "en"})
            mark = len(client.messages)
            translated = await client.next_message("stt", after=mark)
            assert translated["data"]["text"].endswith("bonjour")
            assert "en" in translated["data"]["text"]

            config.stt_error_code = 4001
            client.send("record-start")
            client.send("record-end-stt", {"language": "fr"})
            error = await client.next_message("stt-error")
            assert error["data"] == {"code": 4001}

    run(scenario)


def test_malformed_messages_are_journaled_and_ignored() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig())
            junk: list[str | bytes] = ["not json", "[1, 2]", '{"data": {}}', "[" * 50_000, b"\x00"]
            for raw in junk:
                client.channel.send(raw)
            client.send("ttstf", {"message": 42})  # not text: no speech
            client.send("no-such-type", {"x": 1})
            client.send("ttstf", {"message": "still here"})
            stf = await client.next_message("stf")
            assert stf["data"]["message"] == "still here"
            inbound = [p for (_, c, d, p) in recorder.messages if c == "message" and d == "in"]
            assert inbound[:3] == ["not json", "[1, 2]", '{"data": {}}']
            assert {"binary": 1} in inbound
            assert [m["type"] for m in peer.received] == ["ttstf", "no-such-type", "ttstf"]
            assert peer.state == "connected"

    run(scenario)


def test_a_5_mb_upload_arrives_byte_exact_and_can_be_spoken() -> None:
    payload = random.Random(3).randbytes(5 * 1024 * 1024 + 123)

    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(fps=5))
            upload = Upload(client)
            await upload.ready()
            await upload.send(payload)
            file_ref = await upload.finish()
            assert file_ref
            info = peer.files[file_ref]
            assert (info.size, info.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
            assert info.data == payload
            assert (
                "s1",
                "file",
                "in",
                {"file_ref": file_ref, "size": len(payload), "sha256": info.sha256},
            ) in recorder.messages

            # A WAV upload: the stf duration is the audio's own length.
            wav_upload = Upload(client)
            await wav_upload.ready()
            await wav_upload.send(tone_wav(1.5))
            wav_ref = await wav_upload.finish()
            client.send("stf", {"message": "", "file_ref": "file-unknown", "format": "wav"})
            client.send("stf", {"message": "lip sync", "file_ref": wav_ref, "format": "wav"})
            stf = await client.next_message("stf")
            # the unknown file_ref was ignored: the first stf is the known one's
            assert stf["data"] == {"message": "lip sync", "duration": 1500}
            assert peer.files[wav_ref].format == "wav"

    run(scenario)


def test_oversize_and_malformed_uploads_close_the_channel() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(max_file_size=100_000))
            too_big = Upload(client)
            await too_big.ready()
            await too_big.send(bytes(300_000))
            await too_big.closed_by_server()
            assert too_big.texts == [""], "no file_ref for an oversize file"

            text_instead_of_binary = Upload(client)
            await text_instead_of_binary.ready()
            text_instead_of_binary.channel.send("not binary")
            await text_instead_of_binary.closed_by_server()

            empty = Upload(client)
            await empty.ready()
            empty.channel.send(b"")
            await empty.closed_by_server()

            assert peer.files == {}
            errors = [p for (_, c, d, p) in recorder.messages if c == "file" and "error" in p]
            assert len(errors) == 3
            # The session itself is unharmed.
            client.send("ttstf", {"message": "fine"})
            await client.next_message("stf")

    run(scenario)


def test_a_stalled_file_channel_receives_but_never_answers() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(stall_file_channel=True))
            upload = Upload(client)
            await upload.ready()
            await upload.send(b"abc" * 1000)
            upload.channel.send(b"")
            await wait_until(recorder.changed, lambda: peer.files, "the upload on the server")
            # A round trip on the message channel after the upload completed.
            client.send("ttstf", {"message": "after"})
            await client.next_message("stf")
            assert upload.texts == [""]
            assert not [p for (_, c, d, p) in recorder.messages if c == "file" and d == "out" and p]

    run(scenario)


def test_client_closing_is_reported_closed() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig())
            await recorder.wait_state("s1", "connected")
            await client.pc.close()
            await recorder.wait_state("s1", "closed")
            await asyncio.wait_for(peer.finished.wait(), DEADLINE)
            assert peer.pc.connectionState == "closed"
            assert [event for _, event in recorder.states] == ["connected", "closed"]

    run(scenario)


def test_a_client_that_goes_silent_is_reported_lost_and_closed() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(client_ping_timeout=0.5))
            await recorder.wait_state("s1", "connected")
            # This client never pings.
            await recorder.wait_state("s1", "lost")
            await asyncio.wait_for(peer.finished.wait(), DEADLINE)
            await client.wait(lambda: client.channel.readyState == "closed", "the channel closed")
            assert [event for _, event in recorder.states] == ["connected", "lost"]

    run(scenario)


def test_pinging_client_stays_connected_and_server_side_channel_close_is_a_fault() -> None:
    async def scenario() -> None:
        async with answerer_and_client() as (recorder, answerer, client):
            peer = await client.connect(answerer, "s1", PeerConfig(client_ping_timeout=0.3, fps=20))
            for _ in range(10):  # 0.5 s of client pings, longer than the timeout
                client.send("ping")
                await client.frames_pass(1)
            assert peer.state == "connected"

            await peer.close_message_channel()
            await client.wait(lambda: client.channel.readyState == "closed", "the channel closed")
            # Not a graceful close by the client: no "closed"; the connection stays up.
            assert [event for _, event in recorder.states] == ["connected"]
            assert peer.pc.connectionState == "connected"

    run(scenario)


def test_close_all_closes_every_peer_and_a_new_offer_replaces_the_old_peer() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        answerer = Answerer(on_message=recorder.on_message, on_state=recorder.on_state)
        first, second, again = RawClient(), RawClient(), RawClient()
        try:
            old = await first.connect(answerer, "s1", PeerConfig())
            await second.connect(answerer, "s2", PeerConfig())
            replacement = await again.connect(answerer, "s1", PeerConfig())
            assert old.finished.is_set()
            assert replacement is not old
            assert answerer.peer("s1") is replacement

            await answerer.close_all()
            for client in (first, second, again):
                await client.wait(lambda c=client: c.channel.readyState == "closed", "closed")
            assert answerer.peer("s1") is None
            assert answerer.peer("s2") is None
            # Server-side closes are not client events.
            assert "closed" not in [event for _, event in recorder.states]
        finally:
            for client in (first, second, again):
                await client.close()
            await answerer.close_all()

    run(scenario)


@pytest.mark.parametrize(
    "offer",
    [
        {"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n"},
        {"type": "answer", "sdp": "v=0\r\n"},
        {"sdp": 42},
        "not a dict",
    ],
)
def test_an_unusable_offer_is_refused(offer: Any) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        answerer = Answerer(on_message=recorder.on_message, on_state=recorder.on_state)
        with pytest.raises(InvalidOfferError):
            await answerer.answer("s1", offer, PeerConfig())
        assert recorder.states == [("s1", "failed")]
        await answerer.close_all()

    run(scenario)


VANISHING_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiortc import RTCPeerConnection, RTCSessionDescription

    async def main():
        pc = RTCPeerConnection()
        pc.createDataChannel("message", protocol="message")
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        print(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await pc.setRemoteDescription(RTCSessionDescription(**json.loads(line)))
        await asyncio.Event().wait()  # until killed

    asyncio.run(main())
    """
)


def test_a_client_that_vanishes_is_reported_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shorten ICE consent freshness (RFC 7675) from ~30 s to ~1 s, as aiortc's own tests
    # shorten aioice timers; the client ping watchdog is off, so consent is what notices.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)

    async def scenario() -> None:
        recorder = Recorder()
        answerer = Answerer(on_message=recorder.on_message, on_state=recorder.on_state)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            VANISHING_CLIENT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            offer = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
            config = PeerConfig(client_ping_timeout=None, lost_after_silence=0.3)
            answer = await answerer.answer("s1", offer, config)
            process.stdin.write((json.dumps(answer) + "\n").encode())
            await process.stdin.drain()
            await recorder.wait_state("s1", "connected")
            process.kill()  # no goodbye: no DTLS close_notify, no SCTP abort
            await process.wait()
            await recorder.wait_state("s1", "lost")
            assert [event for _, event in recorder.states] == ["connected", "lost"]
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await answerer.close_all()

    run(scenario)


class VoiceTrack(MediaStreamTrack):
    """The client's microphone: 20 ms frames of 24 kHz mono PCM in real time, silence unless a
    clip is playing; ``played`` is set when the clip's last frame went out."""

    kind = "audio"
    RATE = 24000
    SAMPLES = 480

    def __init__(self) -> None:
        super().__init__()
        self._pcm = b""
        self._pts = 0
        self._start: float | None = None
        self.played = asyncio.Event()

    def play(self, pcm: bytes) -> None:
        self._pcm = pcm
        self.played.clear()

    async def recv(self) -> Any:
        import fractions

        import av

        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += self.SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._pts / self.RATE - loop.time()))
        size = self.SAMPLES * 2
        chunk, self._pcm = self._pcm[:size], self._pcm[size:]
        if chunk and not self._pcm:
            self.played.set()
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(chunk.ljust(size, b"\x00"))
        frame.sample_rate = self.RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


def test_legacy_voice_chat_transcribes_the_audio_sent_between_start_and_end() -> None:
    from mock_server.speech import synthesize_wav

    text = "Two coffees, please."
    wav = synthesize_wav(text)
    pcm = wav[wav.index(b"data") + 8 : wav.index(b"pmtx")]  # the samples, no text chunk
    clip_seconds = len(pcm) / 2 / VoiceTrack.RATE
    heard: list[float] = []

    def on_speech(session_id: str, voiced: float) -> str | None:
        heard.append(voiced)
        return f"{session_id} heard {voiced:.1f} s"

    async def scenario() -> None:
        voice = VoiceTrack()
        async with answerer_and_client(send_audio=voice, on_speech=on_speech) as (_, ans, client):
            peer = await client.connect(ans, "s1", PeerConfig())
            # Spoken before record-start: not part of the take.
            voice.play(pcm)
            await asyncio.wait_for(voice.played.wait(), DEADLINE)
            client.send("record-start")
            voice.play(pcm)
            await asyncio.wait_for(voice.played.wait(), DEADLINE)
            client.send("record-end-stt")
            stt = await client.next_message("stt")

            assert peer.uplink_frames > 0
            (voiced,) = heard
            assert peer.takes == [voiced]
            assert voiced == pytest.approx(clip_seconds, abs=0.1)
            assert stt["data"] == {"text": f"s1 heard {voiced:.1f} s"}

            # A take of silence is answered with the configured text, without asking on_speech.
            client.send("record-start")
            await client.frames_pass(3)
            client.send("record-end-stt")
            stt = await client.next_message("stt", after=client.messages.index(stt) + 1)
            assert stt["data"] == {"text": "hello from the microphone"}
            assert peer.takes == [voiced, 0.0]
            assert heard == [voiced]

    run(scenario)
