"""WebRTC ready latency: ``client.create_session`` until it returns vs bare aiortc.

Both sides open sessions against the same mock server (``MockPersoServer``, its own thread and
loop, HTTP on 127.0.0.1), interleaved, in one process:

- ours: the public API, ``client.create_session(sid, width, height)``: session info, ICE
  servers, offer, exchange, ready (a remote track and the ``message`` channel open), then
  ``change-size`` sent; through the runtime loop thread.
- baseline: the bare minimum a script could write with aiortc on its own loop: one peer
  connection, the ``message`` channel, recvonly audio and video, offer, the same exchange call
  (``client.exchange_sdp``), then wait for a track and the channel to open.

Bar: ours <= 1.2x the baseline (median) and <= 500 ms absolute.

Then the same with 50 ms added by the mock to every session request (session info, ICE servers,
exchange: its delay-only fault), where round trips dominate: the baseline fetches the ICE
servers, builds its peer connection with them, then exchanges (two round trips, the least any
client needs). Bar: ours <= 1.15x.

A second measurement isolates the async core: ``WebRtcCore.connect`` vs the same bare aiortc
steps, both on one loop with the mock's answerer called in-process (no HTTP, no runtime hop),
so what remains between the two is the core's own work.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from bench._report import Row, format_table

ROUNDS = int(os.environ.get("BENCH_READY_ROUNDS", "20"))
WIDTH, HEIGHT = 160, 120
# A WAN-like round trip added by the mock to each session request (its delay-only fault).
API_DELAY = 0.05


async def _bare_ready(client: Any, session_id: str, fetch_ice: bool = False) -> float:
    """Seconds from a new peer connection until a track arrived and the channel is open.

    With ``fetch_ice``, the ICE servers are fetched first (a plain blocking call) and the peer
    connection built with them: the bare sequence of docs/PROTOCOL.md §5 minus the session info.
    """
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    start = time.perf_counter()
    servers = client.get_ice_servers(session_id) if fetch_ice else []
    pc = RTCPeerConnection(
        RTCConfiguration(iceServers=[RTCIceServer(urls=s["urls"]) for s in servers])
    )
    track_arrived = asyncio.Event()
    channel_open = asyncio.Event()
    pc.on("track", lambda track: track_arrived.set())
    channel = pc.createDataChannel("message", protocol="message")
    channel.on("open", channel_open.set)
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}
        answer = client.exchange_sdp(session_id, offer)  # a plain blocking call, as a script would
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(asyncio.gather(track_arrived.wait(), channel_open.wait()), 10)
        return time.perf_counter() - start
    finally:
        await pc.close()


def _ours_ready(client: Any, session_id: str) -> float:
    start = time.perf_counter()
    session = client.create_session(session_id, width=WIDTH, height=HEIGHT)
    elapsed = time.perf_counter() - start
    session.stop_session()
    return elapsed


def _measure(api_delay: float = 0.0) -> tuple[list[float], list[float]]:
    """Interleaved rounds of ours and bare. ``api_delay``: seconds the mock waits before
    answering each session request (info, ICE servers, exchange), like a WAN round trip; the
    bare side then fetches the ICE servers first, as a minimal client must."""
    from mock_server import MockPersoServer
    from perso_sync import PersoClient

    ours: list[float] = []
    bare: list[float] = []
    with (
        MockPersoServer(api_key="bench-key") as server,
        PersoClient(api_key=server.api_key, api_server=server.url) as client,
    ):
        if api_delay:
            for endpoint in ("session_info", "ice_servers", "exchange"):
                server.faults.add(endpoint, delay=api_delay, times=None)
        fetch_ice = bool(api_delay)
        # Warm-up: imports, the runtime thread, the mock's first render and codecs.
        _ours_ready(client, server.create_session_id())
        asyncio.run(_bare_ready(client, server.create_session_id(), fetch_ice))
        loop = asyncio.new_event_loop()
        try:
            for _ in range(ROUNDS):  # interleaved, so drift in machine load hits both
                bare.append(
                    loop.run_until_complete(
                        _bare_ready(client, server.create_session_id(), fetch_ice)
                    )
                )
                ours.append(_ours_ready(client, server.create_session_id()))
        finally:
            loop.close()
    return ours, bare


class _Hooks:
    def on_server_message(self, msg_type: str, data: dict[str, Any]) -> None:
        pass

    def on_closed(self, manual: bool, code: int, reason: str) -> None:
        pass


async def _measure_core() -> tuple[list[float], list[float]]:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from mock_server.webrtc import Answerer, PeerConfig
    from perso_sync._webrtc import CoreOptions, WebRtcCore

    answerer = Answerer(on_message=lambda *args: None, on_state=lambda *args: None)
    config = PeerConfig()

    async def bare(session_id: str) -> float:
        start = time.perf_counter()
        pc = RTCPeerConnection()
        track_arrived = asyncio.Event()
        channel_open = asyncio.Event()
        pc.on("track", lambda track: track_arrived.set())
        channel = pc.createDataChannel("message", protocol="message")
        channel.on("open", channel_open.set)
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            offer = {"type": "offer", "sdp": pc.localDescription.sdp}
            answer = await answerer.answer(session_id, offer, config)
            await pc.setRemoteDescription(RTCSessionDescription(**answer))
            await asyncio.wait_for(asyncio.gather(track_arrived.wait(), channel_open.wait()), 10)
            return time.perf_counter() - start
        finally:
            await pc.close()
            await answerer.close(session_id)

    async def ours(session_id: str) -> float:
        start = time.perf_counter()
        core = await WebRtcCore.connect(
            ice_servers=[],
            exchange=lambda offer: answerer.answer(session_id, offer, config),
            width=WIDTH,
            height=HEIGHT,
            hooks=_Hooks(),
            options=CoreOptions(connect_timeout=10),
        )
        elapsed = time.perf_counter() - start
        await core.close()
        await answerer.close(session_id)
        return elapsed

    ours_times: list[float] = []
    bare_times: list[float] = []
    try:
        await bare("warm-bare")
        await ours("warm-ours")
        for i in range(ROUNDS):
            bare_times.append(await bare(f"bare-{i}"))
            ours_times.append(await ours(f"ours-{i}"))
    finally:
        await answerer.close_all()
    return ours_times, bare_times


def run() -> list[Row]:
    core_ours, core_bare = asyncio.run(_measure_core())
    ours, bare = _measure()
    ours_ms = statistics.median(ours) * 1000
    bare_ms = statistics.median(bare) * 1000
    wan_ours, wan_bare = _measure(api_delay=API_DELAY)
    wan_ours_ms = statistics.median(wan_ours) * 1000
    wan_bare_ms = statistics.median(wan_bare) * 1000
    return [
        Row(
            metric=f"WebRTC ready, median of {ROUNDS} (create_session vs bare aiortc)",
            ours=ours_ms,
            baseline=bare_ms,
            unit="ms",
            bar="<= 1.2x bare aiortc and <= 500 ms",
            passed=ours_ms <= 1.2 * bare_ms and ours_ms <= 500,
        ),
        Row(
            metric=f"WebRTC ready, worst of {ROUNDS}",
            ours=max(ours) * 1000,
            baseline=max(bare) * 1000,
            unit="ms",
            bar="(info)",
            passed=True,
        ),
        Row(
            metric=f"WebRTC ready, core only, same loop, median of {ROUNDS}",
            ours=statistics.median(core_ours) * 1000,
            baseline=statistics.median(core_bare) * 1000,
            unit="ms",
            bar="(info: the core's own cost)",
            passed=True,
        ),
        Row(
            metric=(
                f"WebRTC ready with {API_DELAY * 1000:g} ms added per API request, median of "
                f"{ROUNDS} (create_session vs bare: ICE servers, then exchange)"
            ),
            ours=wan_ours_ms,
            baseline=wan_bare_ms,
            unit="ms",
            bar="<= 1.15x bare",
            passed=wan_ours_ms <= 1.15 * wan_bare_ms,
        ),
    ]


if __name__ == "__main__":
    print(format_table(run()))
