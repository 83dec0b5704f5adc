"""The async WebRTC core (perso_sync._webrtc) over real WebRTC against a mock answerer.

Each test runs the core on its own fresh asyncio loop (anyio's pytest plugin), with no runtime
thread: the core only needs a loop and a task group.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import io
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import av
import pytest
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from hypothesis import given
from hypothesis import strategies as st

from mock_server._loopback import ensure_loopback_candidates
from perso_sync._webrtc import CoreOptions, WebRtcCore, _ice_servers, parse_server_message
from perso_sync.errors import ApiError, SessionClosedError, STFError, Timeout

pytestmark = pytest.mark.anyio

WIDTH, HEIGHT = 160, 120  # small: the mock encodes VP8 on our 2 shared cores
FAST = CoreOptions(connect_timeout=10.0, ping_interval=0.05, ping_timeout=5.0, close_timeout=5.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- the answerer


class _PacedTrack(MediaStreamTrack):
    """Frames at real-time pace, as a server's avatar would send them."""

    def __init__(self, period: float, clock_rate: int) -> None:
        super().__init__()
        self._period = period
        self._clock_rate = clock_rate
        self._start: float | None = None
        self._count = 0

    async def _next_pts(self) -> int:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._count * self._period
        await asyncio.sleep(max(0.0, due - loop.time()))
        self._count += 1
        return round((self._count - 1) * self._period * self._clock_rate)


class GreyVideo(_PacedTrack):
    kind = "video"

    def __init__(self, size: list[int]) -> None:
        super().__init__(1 / 15, 90_000)
        self.size = size  # [width, height], changed by change-size

    async def recv(self) -> av.VideoFrame:
        pts = await self._next_pts()
        frame = av.VideoFrame(self.size[0], self.size[1], "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, fractions.Fraction(1, 90_000)
        return frame


class ToneAudio(_PacedTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__(0.02, 48_000)

    async def recv(self) -> av.AudioFrame:
        pts = await self._next_pts()
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(bytes(range(256)) * 7 + bytes(128))
        frame.sample_rate = 48_000
        frame.pts, frame.time_base = pts, fractions.Fraction(1, 48_000)
        return frame


class LocalAnswerer:
    """A small Perso-like WebRTC answerer: avatar audio+video in one stream, `message` channel
    with server pings, `file` channels that store uploads under their sha256."""

    def __init__(self, *, server_ping_interval: float = 0.05, file_mode: str = "normal") -> None:
        self.server_ping_interval = server_ping_interval
        self.pinging = True
        self.file_mode = file_mode  # normal | stall (never ready) | close (closes after ready)
        self.messages: list[dict[str, Any]] = []
        self.message_seen = anyio.Event()
        self.files: dict[str, bytes] = {}
        self.pcs: set[RTCPeerConnection] = set()
        self.channels: list[RTCDataChannel] = []
        self.size = [WIDTH, HEIGHT]
        self._tasks: set[asyncio.Task[None]] = set()

    def sent(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == msg_type]

    async def exchange(self, offer: dict[str, str]) -> dict[str, str]:
        ensure_loopback_candidates()
        pc = RTCPeerConnection()
        self.pcs.add(pc)
        pc.on("datachannel", self._on_datachannel)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        pc.addTrack(ToneAudio())
        pc.addTrack(GreyVideo(self.size))
        await pc.setLocalDescription(await pc.createAnswer())
        return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.channels.append(channel)
        if channel.label == "message":
            channel.on("message", self._on_message)
            task = asyncio.get_running_loop().create_task(self._ping(channel))
            self._tasks.add(task)
        elif channel.label == "file":
            self._serve_file(channel)

    def _on_message(self, raw: str | bytes) -> None:
        self.messages.append(json.loads(raw))
        self.message_seen.set()
        self.message_seen = anyio.Event()
        msg = self.messages[-1]
        if msg["type"] == "change-size":
            self.size[:] = [msg["data"]["width"], msg["data"]["height"]]

    async def _ping(self, channel: RTCDataChannel) -> None:
        while channel.readyState in ("connecting", "open"):
            if self.pinging and channel.readyState == "open":
                channel.send(json.dumps({"type": "ping", "data": {}}))
            await asyncio.sleep(self.server_ping_interval)

    def _serve_file(self, channel: RTCDataChannel) -> None:
        if self.file_mode == "stall":
            return
        received = bytearray()

        def on_message(data: str | bytes) -> None:
            if isinstance(data, bytes) and data:
                received.extend(data)
                if self.file_mode == "close":
                    channel.close()
            elif data == b"":
                ref = hashlib.sha256(received).hexdigest()
                self.files[ref] = bytes(received)
                channel.send(ref)

        channel.on("message", on_message)
        channel.send("")  # ready to receive

    def send_raw(self, text: str) -> None:
        message_channel = next(c for c in self.channels if c.label == "message")
        message_channel.send(text)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pc in list(self.pcs):
            await pc.close()
        self.pcs.clear()


class Hooks:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.closes: list[tuple[bool, int, str]] = []
        self.closed = anyio.Event()
        self.message_seen = anyio.Event()

    def on_server_message(self, msg_type: str, data: dict[str, Any]) -> None:
        self.messages.append((msg_type, data))
        self.message_seen.set()

    def on_closed(self, manual: bool, code: int, reason: str) -> None:
        self.closes.append((manual, code, reason))
        self.closed.set()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` holds; the mock's side has no event to await."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def decoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith("-decoder") and t.is_alive()]


@pytest.fixture
async def answerer() -> AsyncIterator[LocalAnswerer]:
    server = LocalAnswerer()
    try:
        yield server
    finally:
        await server.close()


async def open_core(
    server: LocalAnswerer,
    hooks: Hooks,
    tg: anyio.abc.TaskGroup | None,
    options: CoreOptions = FAST,
) -> WebRtcCore:
    return await WebRtcCore.connect(
        ice_servers=[],
        exchange=server.exchange,
        width=WIDTH,
        height=HEIGHT,
        hooks=hooks,
        options=options,
        task_group=tg,
    )


# --------------------------------------------------------------------------- lifecycle


async def test_connect_sends_change_size_and_pings_both_ways(answerer: LocalAnswerer) -> None:
    hooks = Hooks()
    options = CoreOptions(ping_interval=0.05, ping_timeout=0.4)
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg, options)
        try:
            assert core.audio_track is not None
            assert core.video_track is not None
            await wait_until(lambda: len(answerer.sent("change-size")) == 1)
            assert answerer.sent("change-size")[0]["data"] == {"width": WIDTH, "height": HEIGHT}
            # Our pings flow for well over ping_timeout; the server's pings keep us open.
            await wait_until(lambda: len(answerer.sent("ping")) >= 20)
            assert not core.closed
            assert hooks.closes == []
            assert all(t != "ping" for t, _ in hooks.messages)  # pings stay internal
        finally:
            await core.close()
    assert hooks.closes == [(True, 200, "OK")]


async def test_server_messages_reach_the_hook_and_malformed_ones_are_dropped(
    answerer: LocalAnswerer,
) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            for raw in ["not json", '{"type": 1}', "[1, 2]", '{"type": "x", "data": 3}']:
                answerer.send_raw(raw)
            answerer.send_raw(json.dumps({"type": "stf", "data": {"message": "hi", "duration": 5}}))
            answerer.send_raw(json.dumps({"type": "stt-error", "data": None}))
            await wait_until(lambda: len(hooks.messages) >= 2)
            assert hooks.messages == [
                ("stf", {"message": "hi", "duration": 5}),
                ("stt-error", {}),
            ]
        finally:
            await core.close()


async def test_watchdog_closes_as_lost_when_the_server_stops_pinging(
    answerer: LocalAnswerer,
) -> None:
    hooks = Hooks()
    options = CoreOptions(ping_interval=0.05, ping_timeout=0.5)
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg, options)
        answerer.pinging = False
        with anyio.fail_after(10):
            await hooks.closed.wait()
        assert core.closed
        assert hooks.closes == [(False, 408, "Request Timeout")]
        with pytest.raises(SessionClosedError):
            core.send("ttstf", {"message": "too late"})
        await core.close()  # idempotent: no second notification
    assert hooks.closes == [(False, 408, "Request Timeout")]
    assert decoder_threads() == []


async def test_server_closing_the_connection_closes_as_lost(answerer: LocalAnswerer) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        await open_core(answerer, hooks, tg)
        await answerer.close()
        with anyio.fail_after(10):
            await hooks.closed.wait()
    assert hooks.closes == [(False, 408, "Request Timeout")]


async def test_manual_close_notifies_once_and_releases_everything(
    answerer: LocalAnswerer,
) -> None:
    hooks = Hooks()
    core = await open_core(answerer, hooks, None)  # no task group: the core hosts its jobs
    assert decoder_threads() != []
    async with anyio.create_task_group() as tg:  # concurrent closes: one notification
        tg.start_soon(core.close)
        tg.start_soon(core.close)
    await core.close(manual=False, code=408, reason="ignored")
    assert hooks.closes == [(True, 200, "OK")]
    assert core.closed
    assert decoder_threads() == []
    with pytest.raises(SessionClosedError):
        core.send("ping", {})
    with pytest.raises(SessionClosedError):
        await core.upload_file(io.BytesIO(b"x"), total=1)


async def test_cancelling_the_owner_task_group_closes_the_core(answerer: LocalAnswerer) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        tg.cancel_scope.cancel()
    assert core.closed
    assert hooks.closes == [(True, 200, "OK")]
    assert decoder_threads() == []


async def test_ready_timeout_when_the_exchange_never_answers() -> None:
    hooks = Hooks()
    exchange_started = anyio.Event()

    async def never_answers(offer: dict[str, str]) -> dict[str, str]:
        assert offer["type"] == "offer"
        assert "m=application" in offer["sdp"]  # the message channel was created first
        exchange_started.set()
        await anyio.sleep_forever()
        raise AssertionError

    tasks_before = asyncio.all_tasks()
    async with anyio.create_task_group() as tg:
        with pytest.raises(Timeout, match="WebRTC connection timeout"):
            await WebRtcCore.connect(
                ice_servers=[],
                exchange=never_answers,
                width=WIDTH,
                height=HEIGHT,
                hooks=hooks,
                options=CoreOptions(connect_timeout=0.5),
                task_group=tg,
            )
    assert exchange_started.is_set()
    assert hooks.closes == []  # never opened, so never "closed"
    assert decoder_threads() == []
    assert asyncio.all_tasks() <= tasks_before


async def test_exchange_errors_propagate_and_nothing_stays_open() -> None:
    hooks = Hooks()

    async def refuses(offer: dict[str, str]) -> dict[str, str]:
        raise ApiError(404, "not_found", "no such session")

    with pytest.raises(ApiError):
        await WebRtcCore.connect(
            ice_servers=[{"urls": [], "username": None, "extra": 1}, "junk"],  # type: ignore[list-item]
            exchange=refuses,
            width=WIDTH,
            height=HEIGHT,
            hooks=hooks,
            options=FAST,
        )
    assert hooks.closes == []
    assert decoder_threads() == []


# --------------------------------------------------------------------------- STF upload


async def test_upload_of_5_mb_is_byte_exact_with_progress(answerer: LocalAnswerer) -> None:
    hooks = Hooks()
    payload = os.urandom(5 * 1024 * 1024 + 123)
    progress: list[tuple[int, int | None]] = []
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            ref = await core.upload_file(
                io.BytesIO(payload),
                total=len(payload),
                progress=lambda sent, total: progress.append((sent, total)),
            )
            assert hashlib.sha256(answerer.files[ref]).digest() == hashlib.sha256(payload).digest()
            assert progress[-1] == (len(payload), len(payload))
            assert [sent for sent, _ in progress] == sorted(sent for sent, _ in progress)
            assert len(progress) == -(-len(payload) // (64 * 1024))
            # The message channel is untouched by the upload.
            core.send("stf", {"message": "", "file_ref": ref, "format": "wav"})
            await wait_until(lambda: len(answerer.sent("stf")) == 1)
            assert answerer.sent("stf")[0]["data"]["file_ref"] == ref
        finally:
            await core.close()


async def test_stalled_file_channel_times_out(answerer: LocalAnswerer) -> None:
    answerer.file_mode = "stall"
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            with pytest.raises(STFError, match="File transfer timed out"):
                await core.upload_file(io.BytesIO(b"x" * 1000), total=1000, timeout=0.5)
            core.send("ttstf", {"message": "still open"})  # the session survives
            assert not core.closed
        finally:
            await core.close()


async def test_file_channel_closed_early_fails_the_upload(answerer: LocalAnswerer) -> None:
    answerer.file_mode = "close"
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            with pytest.raises(STFError, match="closed before"):
                await core.upload_file(io.BytesIO(os.urandom(1 << 20)), total=None, timeout=10)
            assert not core.closed
        finally:
            await core.close()


# --------------------------------------------------------------------------- media


async def test_video_frames_have_the_requested_size(answerer: LocalAnswerer) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            frames = core.subscribe_video_frames(max_buffer=2)
            seen = []
            with anyio.fail_after(10):
                async for frame in frames:
                    seen.append(frame)
                    if len(seen) == 3:
                        break
            assert [(f.width, f.height) for f in seen] == [(WIDTH, HEIGHT)] * 3
            latest = core.latest_video_frame()
            assert latest is not None
            assert (latest.width, latest.height) == (WIDTH, HEIGHT)
        finally:
            await core.close()


async def test_frame_subscription_ends_when_the_core_closes(answerer: LocalAnswerer) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        frames = core.subscribe_video_frames()
        ended = anyio.Event()

        async def consume() -> None:
            async for _ in frames:
                pass
            ended.set()

        tg.start_soon(consume)
        await core.close()
        with anyio.fail_after(5):
            await ended.wait()


async def test_recording_to_mp4_has_video_and_audio(
    answerer: LocalAnswerer, tmp_path: Path
) -> None:
    hooks = Hooks()
    path = tmp_path / "avatar.mp4"
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            await core.start_recording(str(path))
            count = 0
            with anyio.fail_after(10):
                async for _ in core.subscribe_video_frames(max_buffer=8):
                    count += 1
                    if count == 10:
                        break
            await core.stop_recording()
        finally:
            await core.close()
    with av.open(str(path)) as container:
        assert container.streams.audio, "no audio stream recorded"
        video = container.streams.video[0]
        decoded = list(container.decode(video))
    assert len(decoded) >= 5
    assert (decoded[0].width, decoded[0].height) == (WIDTH, HEIGHT)


async def test_recording_stops_at_close_and_wav_is_audio_only(
    answerer: LocalAnswerer, tmp_path: Path
) -> None:
    hooks = Hooks()
    path = tmp_path / "avatar.wav"
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        await core.start_recording(str(path))
        pings_before = len(answerer.sent("ping"))
        await wait_until(lambda: len(answerer.sent("ping")) >= pings_before + 10)  # ~0.5 s
        await core.close()  # finalizes the file
    with av.open(str(path)) as container:
        assert not container.streams.video
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples > 0


async def test_receive_video_false_stops_video_decoding(answerer: LocalAnswerer) -> None:
    hooks = Hooks()
    options = CoreOptions(receive_video=False)
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg, options)
        try:
            assert core.video_track is None
            assert core.audio_track is not None
            assert decoder_threads() == ["audio-decoder"]
            assert core.latest_video_frame() is None
        finally:
            await core.close()


# --------------------------------------------------------------------------- sans-IO parse


@given(st.text())
def test_parse_server_message_never_raises(raw: str) -> None:
    parsed = parse_server_message(raw)
    if parsed is not None:
        msg_type, data = parsed
        assert isinstance(msg_type, str)
        assert isinstance(data, dict)


@given(
    st.text(),
    st.dictionaries(st.text(), st.integers() | st.text()) | st.none(),
)
def test_parse_server_message_round_trips(msg_type: str, data: dict[str, Any] | None) -> None:
    raw = json.dumps({"type": msg_type, "data": data})
    assert parse_server_message(raw) == (msg_type, data or {})
    assert parse_server_message(raw.encode()) is None


def test_ice_server_dicts_tolerate_unknown_keys_and_skip_unusable_entries() -> None:
    servers = _ice_servers(
        [
            {"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c", "ttl": 86400},
            {"urls": ["stun:127.0.0.1:3478"], "credentialType": "password"},
            {"username": "no-urls"},
            "not an object",
        ]
    )
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        (["turn:127.0.0.1:3478"], "u", "c"),
        (["stun:127.0.0.1:3478"], None, None),
    ]
