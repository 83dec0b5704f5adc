"""The async WebRTC core (perso_sync._webrtc) over real WebRTC against the mock's answerer.

Each test runs the core on its own fresh asyncio loop (anyio's pytest plugin), with no runtime
thread: the core only needs a loop and a task group. The mock's WebRTC answerer
(``mock_server.webrtc.Answerer``) runs in-process on the same loop; one test goes through the
``perso_mock`` server's HTTP exchange endpoint instead.
"""

from __future__ import annotations

import asyncio
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
from hypothesis import given
from hypothesis import strategies as st

from mock_server.webrtc import Answerer, Peer, PeerConfig
from perso_sync._webrtc import CoreOptions, WebRtcCore, _ice_servers, parse_server_message
from perso_sync.errors import ApiError, SessionClosedError, STFError, Timeout

pytestmark = pytest.mark.anyio

WIDTH, HEIGHT = 160, 120  # small: the mock encodes VP8 on our 2 shared cores
FAST = CoreOptions(connect_timeout=10.0, ping_interval=0.05, ping_timeout=5.0, close_timeout=5.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- the answerer


SESSION = "sess-webrtc-core"


class MockPeerServer:
    """The mock server's WebRTC answerer (mock_server.webrtc) on the test's own loop.

    ``exchange`` answers the offer directly, as the mock's exchange endpoint would (the REST hop
    is the facade's job and is tested there).
    """

    def __init__(self) -> None:
        self.journal: list[tuple[str, str, Any]] = []
        self.config = PeerConfig(ping_interval=0.05, fps=10)
        self.answerer = Answerer(
            on_message=lambda sid, channel, direction, payload: self.journal.append(
                (channel, direction, payload)
            ),
            on_state=lambda sid, event: None,
        )

    async def exchange(self, offer: dict[str, str]) -> dict[str, str]:
        return await self.answerer.answer(SESSION, offer, self.config)

    @property
    def peer(self) -> Peer:
        peer = self.answerer.peer(SESSION)
        assert peer is not None
        return peer

    def received(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.peer.received if m["type"] == msg_type]

    def send_raw(self, text: str) -> None:
        channel = self.peer._message_channel  # test-only: the mock has no raw-send fault
        assert channel is not None
        channel.send(text)


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


_threads_before_test: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _snapshot_threads() -> None:
    """Decoder threads left by other tests in this process (e.g. sessions on the shared mock)
    are not ours to judge."""
    _threads_before_test.clear()
    _threads_before_test.update(threading.enumerate())


def decoder_threads() -> list[str]:
    """aiortc's decoder threads started during this test and still alive (pc.close() joins
    them; they are non-daemon, so a leak would also hang interpreter exit)."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if t.name.endswith("-decoder") and t.is_alive() and t not in _threads_before_test
    )


async def wait_for_requested_size(core: WebRtcCore) -> None:
    """Frames sent before the server applied our change-size have its default size."""
    with anyio.fail_after(10):
        async for frame in core.subscribe_video_frames(max_buffer=1):
            if (frame.width, frame.height) == (WIDTH, HEIGHT):
                return


@pytest.fixture
async def answerer() -> AsyncIterator[MockPeerServer]:
    server = MockPeerServer()
    try:
        yield server
    finally:
        await server.answerer.close_all()


async def open_core(
    server: MockPeerServer,
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


async def test_connect_sends_change_size_and_pings_both_ways(answerer: MockPeerServer) -> None:
    hooks = Hooks()
    options = CoreOptions(ping_interval=0.05, ping_timeout=0.4)
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg, options)
        try:
            assert core.audio_track is not None
            assert core.video_track is not None
            await wait_until(lambda: len(answerer.received("change-size")) == 1)
            assert answerer.received("change-size")[0]["data"] == {"width": WIDTH, "height": HEIGHT}
            # Our pings flow for well over ping_timeout; the server's pings keep us open.
            await wait_until(lambda: len(answerer.received("ping")) >= 20)
            assert not core.closed
            assert hooks.closes == []
            assert all(t != "ping" for t, _ in hooks.messages)  # pings stay internal
        finally:
            await core.close()
    assert hooks.closes == [(True, 200, "OK")]


async def test_server_messages_reach_the_hook_and_malformed_ones_are_dropped(
    answerer: MockPeerServer,
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
    answerer: MockPeerServer,
) -> None:
    hooks = Hooks()
    options = CoreOptions(ping_interval=0.05, ping_timeout=0.5)
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg, options)
        answerer.peer.stop_pings()
        with anyio.fail_after(10):
            await hooks.closed.wait()
        assert core.closed
        assert hooks.closes == [(False, 408, "Request Timeout")]
        with pytest.raises(SessionClosedError):
            core.send("ttstf", {"message": "too late"})
        await core.close()  # idempotent: no second notification
    assert hooks.closes == [(False, 408, "Request Timeout")]
    assert decoder_threads() == []


async def test_server_closing_the_connection_closes_as_lost(answerer: MockPeerServer) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        await open_core(answerer, hooks, tg)
        await answerer.answerer.close(SESSION)
        with anyio.fail_after(10):
            await hooks.closed.wait()
    assert hooks.closes == [(False, 408, "Request Timeout")]


async def test_manual_close_notifies_once_and_releases_everything(
    answerer: MockPeerServer,
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


async def test_cancelling_the_owner_task_group_closes_the_core(answerer: MockPeerServer) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        tg.cancel_scope.cancel()
    assert core.closed
    assert hooks.closes == [(True, 200, "OK")]
    assert decoder_threads() == []


async def test_an_exchange_that_never_answers_is_the_callers_to_bound() -> None:
    """The exchange is not under the ready timeout (the platform may take seconds to answer
    it): the caller bounds it, and giving up leaves nothing open."""
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
        with anyio.move_on_after(1.0) as caller_deadline:  # 2x the ready timeout
            await WebRtcCore.connect(
                ice_servers=[],
                exchange=never_answers,
                width=WIDTH,
                height=HEIGHT,
                hooks=hooks,
                options=CoreOptions(connect_timeout=0.5),
                task_group=tg,
            )
    assert caller_deadline.cancelled_caught  # no Timeout of the core's own before that
    assert exchange_started.is_set()
    assert hooks.closes == []  # never opened, so never "closed"
    assert decoder_threads() == []
    assert asyncio.all_tasks() <= tasks_before


async def test_the_ready_timeout_counts_from_the_applied_answer(
    answerer: MockPeerServer,
) -> None:
    """An answer that takes longer than the ready timeout still opens the session."""
    hooks = Hooks()
    ready_timeout = 0.5

    async def slow_exchange(offer: dict[str, str]) -> dict[str, str]:
        await anyio.sleep(2 * ready_timeout)
        return await answerer.exchange(offer)

    async with anyio.create_task_group() as tg:
        core = await WebRtcCore.connect(
            ice_servers=[],
            exchange=slow_exchange,
            width=WIDTH,
            height=HEIGHT,
            hooks=hooks,
            options=CoreOptions(connect_timeout=ready_timeout),
            task_group=tg,
        )
        try:
            assert core.audio_track is not None
            await wait_until(lambda: bool(answerer.received("change-size")))
        finally:
            await core.close()


async def test_ready_timeout_when_the_answered_peer_never_connects(
    answerer: MockPeerServer,
) -> None:
    hooks = Hooks()

    async def answer_then_vanish(offer: dict[str, str]) -> dict[str, str]:
        answer = await answerer.exchange(offer)
        await answerer.answerer.close(SESSION)  # the server side goes away before ICE
        return answer

    tasks_before = asyncio.all_tasks()
    async with anyio.create_task_group() as tg:
        with pytest.raises(Timeout, match="WebRTC connection timeout"):
            await WebRtcCore.connect(
                ice_servers=[],
                exchange=answer_then_vanish,
                width=WIDTH,
                height=HEIGHT,
                hooks=hooks,
                options=CoreOptions(connect_timeout=0.5),
                task_group=tg,
            )
    assert hooks.closes == []
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


async def test_upload_of_5_mb_is_byte_exact_with_progress(answerer: MockPeerServer) -> None:
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
            assert answerer.peer.files[ref].sha256 == hashlib.sha256(payload).hexdigest()
            assert progress[-1] == (len(payload), len(payload))
            assert [sent for sent, _ in progress] == sorted(sent for sent, _ in progress)
            assert len(progress) == -(-len(payload) // (64 * 1024))
            # The message channel is untouched by the upload.
            core.send("stf", {"message": "", "file_ref": ref, "format": "wav"})
            await wait_until(lambda: len(answerer.received("stf")) == 1)
            assert answerer.received("stf")[0]["data"]["file_ref"] == ref
        finally:
            await core.close()


async def test_stalled_file_channel_times_out(answerer: MockPeerServer) -> None:
    answerer.config.stall_file_channel = True
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


async def test_file_channel_closed_early_fails_the_upload(answerer: MockPeerServer) -> None:
    answerer.config.max_file_size = 100_000  # the mock closes the channel past this
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


async def test_video_frames_have_the_requested_size(answerer: MockPeerServer) -> None:
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            await wait_for_requested_size(core)
            seen = []
            with anyio.fail_after(10):
                async for frame in core.subscribe_video_frames(max_buffer=2):
                    seen.append(frame)
                    if len(seen) == 3:
                        break
            assert [(f.width, f.height) for f in seen] == [(WIDTH, HEIGHT)] * 3
            latest = core.latest_video_frame()
            assert latest is not None
            assert (latest.width, latest.height) == (WIDTH, HEIGHT)
        finally:
            await core.close()


async def test_frame_subscription_ends_when_the_core_closes(answerer: MockPeerServer) -> None:
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
    answerer: MockPeerServer, tmp_path: Path
) -> None:
    hooks = Hooks()
    path = tmp_path / "avatar.mp4"
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        try:
            await wait_for_requested_size(core)
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
    answerer: MockPeerServer, tmp_path: Path
) -> None:
    hooks = Hooks()
    path = tmp_path / "avatar.wav"
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        await core.start_recording(str(path))
        pings_before = len(answerer.received("ping"))
        await wait_until(lambda: len(answerer.received("ping")) >= pings_before + 10)  # ~0.5 s
        await core.close()  # finalizes the file
    with av.open(str(path)) as container:
        assert not container.streams.video
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples > 0


async def test_receive_video_false_stops_video_decoding(answerer: MockPeerServer) -> None:
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


# --------------------------------------------------------------------------- over HTTP


async def test_connect_through_the_mock_servers_http_exchange(perso_mock: Any) -> None:
    """The same core, with the offer going through the mock's REST exchange endpoint (as the
    Session facade does it) and the mock's journal as the witness."""
    import requests

    from perso_sync import _endpoints as endpoints

    sid = perso_mock.create_session_id()
    http = requests.Session()

    def post_exchange(offer: dict[str, str]) -> dict[str, str]:
        url = perso_mock.url + endpoints.exchange(sid)
        response = http.post(url, json={"client_sdp": offer}, timeout=10)
        response.raise_for_status()
        answer: dict[str, str] = response.json()["server_sdp"]
        return answer

    async def exchange(offer: dict[str, str]) -> dict[str, str]:
        return await anyio.to_thread.run_sync(post_exchange, offer, abandon_on_cancel=True)

    hooks = Hooks()
    try:
        async with anyio.create_task_group() as tg:
            core = await WebRtcCore.connect(
                ice_servers=[],
                exchange=exchange,
                width=WIDTH,
                height=HEIGHT,
                hooks=hooks,
                options=FAST,
                task_group=tg,
            )
            try:
                entry = await anyio.to_thread.run_sync(
                    lambda: perso_mock.journal.wait_for(
                        session_id=sid, channel="message", direction="in", type="change-size"
                    )
                )
                assert entry.payload["data"] == {"width": WIDTH, "height": HEIGHT}
                ref = await core.upload_file(io.BytesIO(b"RIFF" + bytes(4000)), total=4004)
                assert perso_mock.peer(sid).files[ref].size == 4004
            finally:
                await core.close()
    finally:
        http.close()
    assert hooks.closes == [(True, 200, "OK")]


@pytest.mark.parametrize(
    "answer",
    [
        {"type": "answer", "sdp": "v=0 not an sdp"},
        {"type": "answer"},
        {"sdp": "v=0"},
        "not a dict",
    ],
)
async def test_a_malformed_answer_is_an_invalid_response(answer: Any) -> None:
    from perso_sync.errors import InvalidResponseError

    async def bad_exchange(offer: dict[str, str]) -> Any:
        return answer

    hooks = Hooks()
    with pytest.raises(InvalidResponseError):
        await WebRtcCore.connect(
            ice_servers=[],
            exchange=bad_exchange,
            width=WIDTH,
            height=HEIGHT,
            hooks=hooks,
            options=FAST,
        )
    assert hooks.closes == []
    assert decoder_threads() == []


async def test_closing_the_session_mid_upload_raises_session_closed(
    answerer: MockPeerServer,
) -> None:
    answerer.config.stall_file_channel = True
    hooks = Hooks()
    async with anyio.create_task_group() as tg:
        core = await open_core(answerer, hooks, tg)
        failure: list[BaseException] = []

        async def upload() -> None:
            try:
                await core.upload_file(io.BytesIO(b"x" * 100_000), total=None, timeout=30)
            except (SessionClosedError, STFError) as exc:
                failure.append(exc)

        tg.start_soon(upload)
        await wait_until(lambda: any(e[0] == "file" for e in answerer.journal))
        await core.close()
        await wait_until(lambda: failure != [])
    assert isinstance(failure[0], SessionClosedError)
