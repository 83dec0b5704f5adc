"""CPU per video frame: ``session.frames()`` in a user thread vs a bare aiortc ``recv()`` loop.

The mock runs in a child process (``python -m mock_server``) and sends video at its own frame
rate (10 fps, 320x240); only this process is measured. Windows alternate (ours, bare, ...),
one session at a time, best of N each, so load from other processes hits both alike.

- ours: a WebRTC session opened with ``create_session``, its frames read with
  ``session.frames()`` from this thread. Figures: the consumer thread's own CPU per frame
  (``time.thread_time``: the cost of crossing from the loop to the user's thread), and the
  whole process's CPU per frame (receiving, decoding, the runtime loop, the crossing).
- baseline: a bare aiortc client on its own asyncio loop (ICE servers, offer, exchange, then
  ``await track.recv()`` in a loop): the loop thread's CPU per frame, and the process's.

Bar: process CPU per frame <= 1.3x bare (decoding dominates both; what is left is ours).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from bench._mock_process import MockProcess
from bench._report import Row, format_table

FRAMES = int(os.environ.get("BENCH_FRAMES", "40"))
ROUNDS = int(os.environ.get("BENCH_FRAMES_ROUNDS", "3"))
WIDTH, HEIGHT = 320, 240
BAR = 1.3


def _ours(client: Any, session_id: str) -> tuple[float, float]:
    """(consumer-thread CPU, process CPU) per frame over FRAMES frames."""
    session = client.create_session(session_id, width=WIDTH, height=HEIGHT)
    try:
        with session.frames(timeout=10) as frames:
            next(frames)  # the stream runs: start counting from a frame boundary
            thread0, process0 = time.thread_time(), time.process_time()
            for count, _ in enumerate(frames, 1):
                if count == FRAMES:
                    break
            thread1, process1 = time.thread_time(), time.process_time()
    finally:
        session.stop_session()
    return (thread1 - thread0) / FRAMES, (process1 - process0) / FRAMES


async def _bare_async(client: Any, session_id: str) -> tuple[float, float]:
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    servers = client.get_ice_servers(session_id)
    pc = RTCPeerConnection(
        RTCConfiguration(iceServers=[RTCIceServer(urls=s["urls"]) for s in servers])
    )
    video: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    drains: set[asyncio.Task[None]] = set()

    def on_track(track: Any) -> None:
        if track.kind == "video" and not video.done():
            video.set_result(track)
        elif track.kind == "audio":
            drains.add(asyncio.ensure_future(_drain(track)))  # aiortc queues audio until read

    pc.on("track", on_track)
    channel = pc.createDataChannel("message", protocol="message")
    channel.on("message", lambda message: None)
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = client.exchange_sdp(session_id, {"type": "offer", "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        track = await asyncio.wait_for(video, 10)
        await asyncio.wait_for(track.recv(), 10)
        thread0, process0 = time.thread_time(), time.process_time()
        for _ in range(FRAMES):
            await asyncio.wait_for(track.recv(), 10)
        thread1, process1 = time.thread_time(), time.process_time()
        return (thread1 - thread0) / FRAMES, (process1 - process0) / FRAMES
    finally:
        await pc.close()


async def _drain(track: Any) -> None:
    from aiortc.mediastreams import MediaStreamError

    try:
        while True:
            await track.recv()
    except MediaStreamError:
        return


def _bare(client: Any, session_id: str) -> tuple[float, float]:
    """Run the bare client on a loop in its own thread (as the runtime runs ours)."""
    result: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(_bare_async(client, session_id)))
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=main, name="bare-aiortc")
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    if not result:
        raise RuntimeError("the bare aiortc client did not finish in 60 s")
    return result[0]


def run() -> list[Row]:
    import perso_sync

    ours: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    with MockProcess() as mock:
        params = mock.session_params()
        with perso_sync.PersoClient(api_key=mock.api_key, api_server=mock.url) as client:
            _ours(client, client.create_session_id(params=params))  # warm-up
            _bare(client, client.create_session_id(params=params))
            for _ in range(ROUNDS):
                ours.append(_ours(client, client.create_session_id(params=params)))
                bare.append(_bare(client, client.create_session_id(params=params)))
    ours_thread = min(t for t, _ in ours) * 1e6
    bare_thread = min(t for t, _ in bare) * 1e6
    ours_process = min(p for _, p in ours) * 1e6
    bare_process = min(p for _, p in bare) * 1e6
    return [
        Row(
            metric=f"frames() {WIDTH}x{HEIGHT}: consumer thread CPU/frame (vs bare loop thread)",
            ours=ours_thread,
            baseline=bare_thread,
            unit="us",
            bar="(info: the crossing's cost)",
            passed=True,
        ),
        Row(
            metric=f"frames() {WIDTH}x{HEIGHT}: process CPU/frame, best of {ROUNDS}",
            ours=ours_process,
            baseline=bare_process,
            unit="us",
            bar=f"<= {BAR:g}x bare aiortc recv() loop",
            passed=ours_process <= BAR * bare_process,
        ),
    ]


if __name__ == "__main__":
    print(format_table(run()))
