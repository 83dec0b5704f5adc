"""exchange over HTTP into the WebRTC answerer, and the status it drives (raw aiortc offerer)."""

from __future__ import annotations

import asyncio

import pytest
import requests
from _http_helpers import TIMEOUT, create
from aiortc import RTCPeerConnection, RTCSessionDescription

from mock_server import MockPersoServer


async def _offer_exchange_close(server: MockPersoServer, session_id: str) -> dict[str, str]:
    pc = RTCPeerConnection()
    opened = asyncio.Event()
    channel = pc.createDataChannel("message", protocol="message")
    channel.on("open", opened.set)
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        url = f"{server.url}/api/v1/session/{session_id}/exchange/"
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(
            None, lambda: requests.post(url, json={"client_sdp": offer}, timeout=TIMEOUT)
        )
        assert response.status_code == 200, response.text
        answer = response.json()["server_sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(opened.wait(), 5)
        channel.send('{"type": "ping", "data": {}}')
        await loop.run_in_executor(None, server.wait_for_status, session_id, "IN_PROGRESS")
        return dict(answer)
    finally:
        await pc.close()


def test_exchange_answers_and_the_session_moves_through_its_statuses(
    perso_mock: MockPersoServer,
) -> None:
    session_id = create(perso_mock).json()["session_id"]
    answer = asyncio.run(asyncio.wait_for(_offer_exchange_close(perso_mock, session_id), 15))
    assert answer["type"] == "answer"
    assert "a=msid" in answer["sdp"]
    session = perso_mock.wait_for_status(session_id, "TERMINATED")
    assert session.termination_reason == "GRACEFUL_TERMINATION"
    info = requests.get(f"{perso_mock.url}/api/v1/session/{session_id}/", timeout=TIMEOUT).json()
    assert info["server_sdp"] == answer["sdp"]
    assert info["client_sdp"].startswith("v=0")
    assert perso_mock.journal.wait_for(kind="datachannel", type="ping", direction="in", timeout=5)
    # A second exchange of the same session is refused.
    again = requests.post(
        f"{perso_mock.url}/api/v1/session/{session_id}/exchange/",
        json={"client_sdp": {"type": "offer", "sdp": "v=0\r\n"}},
        timeout=TIMEOUT,
    )
    assert again.status_code == 400


def test_data_channel_fault_helpers(perso_mock: MockPersoServer) -> None:
    session_id = perso_mock.create_session_id()
    perso_mock.stop_pings(session_id)
    assert perso_mock.sessions[session_id].peer_config.pings_enabled is False
    with pytest.raises(RuntimeError, match="no WebRTC peer"):
        perso_mock.close_message_channel(session_id)
