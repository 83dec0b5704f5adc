"""End to end through HTTP: a raw aiortc client exchanges its offer with the running mock
(``POST /api/v1/session/{id}/exchange/``), talks on the data channels, and the session's status
and journal follow. Not perso_sync: the mock is checked independently of its client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import requests
from aiortc import RTCPeerConnection, RTCSessionDescription

from mock_server import MockPersoServer

DEADLINE = 5.0


async def wait_for(event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), DEADLINE)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_offer_exchanged_over_http_gives_a_live_session_that_ends_gracefully() -> None:
    with MockPersoServer() as server:
        session_id = server.create_session_id()

        async def scenario() -> None:
            pc = RTCPeerConnection()
            channel = pc.createDataChannel("message", protocol="message")
            pc.addTransceiver("audio", direction="recvonly")
            pc.addTransceiver("video", direction="recvonly")
            opened, got_stf = asyncio.Event(), asyncio.Event()
            stf: list[dict[str, Any]] = []
            kinds: list[str] = []
            channel.on("open", opened.set)

            @channel.on("message")
            def on_message(raw: str) -> None:
                message = json.loads(raw)
                if message["type"] == "stf":
                    stf.append(message["data"])
                    got_stf.set()

            pc.on("track", lambda track: kinds.append(track.kind))
            try:
                await pc.setLocalDescription(await pc.createOffer())
                offer = {"type": "offer", "sdp": pc.localDescription.sdp}
                response = await asyncio.to_thread(
                    requests.post,
                    f"{server.url}/api/v1/session/{session_id}/exchange/",
                    json={"client_sdp": offer},
                    timeout=DEADLINE,
                )
                assert response.status_code == 200, response.text
                answer = response.json()["server_sdp"]
                assert answer["type"] == "answer"
                await pc.setRemoteDescription(RTCSessionDescription(**answer))
                await wait_for(opened, "the message channel")
                await asyncio.to_thread(server.wait_for_status, session_id, "IN_PROGRESS")
                assert sorted(kinds) == ["audio", "video"]

                channel.send(json.dumps({"type": "ttstf", "data": {"message": "hi"}}))
                await wait_for(got_stf, "stf")
                assert stf == [{"message": "hi", "duration": 300}]
                entry = await asyncio.to_thread(
                    server.journal.wait_for,
                    lambda e: e.payload.get("type") == "stf",
                    DEADLINE,
                    session_id=session_id,
                    channel="message",
                    direction="out",
                )
                assert entry.payload["data"] == {"message": "hi", "duration": 300}
            finally:
                await pc.close()

        asyncio.run(asyncio.wait_for(scenario(), 15))
        session = server.wait_for_status(session_id, "TERMINATED")
        assert session.termination_reason == "GRACEFUL_TERMINATION"


def test_a_garbage_offer_is_refused_over_http() -> None:
    with MockPersoServer() as server:
        session_id = server.create_session_id()
        response = requests.post(
            f"{server.url}/api/v1/session/{session_id}/exchange/",
            json={"client_sdp": {"type": "offer", "sdp": "v=0\r\nnot sdp\r\n"}},
            timeout=DEADLINE,
        )
        assert response.status_code == 400
        (error,) = response.json()["errors"]
        assert error["attr"] == "client_sdp"
        assert "data channel" in error["detail"]
