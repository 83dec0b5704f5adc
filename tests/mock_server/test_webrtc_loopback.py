"""The mock's WebRTC works on a host whose only interface is loopback (CI without a network).

The real check runs a small script in a network namespace of its own (``unshare -rn``), where
only ``lo`` exists: without the fallback aioice gathers no candidate at all there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import aioice.ice
import pytest

from mock_server import _loopback

REPO_ROOT = Path(__file__).resolve().parents[2]

NAMESPACE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from mock_server import _loopback
    from mock_server.webrtc import Answerer, PeerConfig

    async def offer_sdp(pc):
        pc.createDataChannel("message", protocol="message")
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    async def main():
        assert not _loopback.has_non_loopback_ipv4(), "expected a loopback-only namespace"
        unpatched = RTCPeerConnection()
        print("candidates before:", (await offer_sdp(unpatched)).count("a=candidate"))
        await unpatched.close()

        answerer = Answerer(on_message=lambda *a: None, on_state=lambda *a: None)
        pc = RTCPeerConnection()
        sdp = await offer_sdp(pc)
        print("candidates after:", sdp.count("a=candidate:"), "127.0.0.1" in sdp)
        answer = await answerer.answer("s1", {"type": "offer", "sdp": sdp}, PeerConfig())
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        peer = answerer.peer("s1")
        await asyncio.wait_for(peer.connected.wait(), 5)
        print("connected:", pc.connectionState)
        await pc.close()
        await answerer.close_all()

    asyncio.run(asyncio.wait_for(main(), 15))
    """
)


SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    import requests
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from mock_server import MockPersoServer

    async def talk(server, session_id):
        # As every client does: the offer (and its candidates) before the exchange.
        pc = RTCPeerConnection()
        channel = pc.createDataChannel("message", protocol="message")
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        got_stf = asyncio.Event()
        ttstf = json.dumps({"type": "ttstf", "data": {"message": "hi"}})
        channel.on("open", lambda: channel.send(ttstf))
        channel.on("message", lambda raw: json.loads(raw)["type"] == "stf" and got_stf.set())
        await pc.setLocalDescription(await pc.createOffer())
        if "a=candidate:" not in pc.localDescription.sdp:
            raise SystemExit("the client's offer has no ICE candidate: no loopback fallback")
        response = await asyncio.to_thread(
            requests.post,
            f"{server.url}/api/v1/session/{session_id}/exchange/",
            json={"client_sdp": {"type": "offer", "sdp": pc.localDescription.sdp}},
            timeout=5,
        )
        await pc.setRemoteDescription(RTCSessionDescription(**response.json()["server_sdp"]))
        await asyncio.wait_for(got_stf.wait(), 5)
        print("stf received")
        await pc.close()

    with MockPersoServer() as server:
        session_id = server.create_session_id()
        asyncio.run(talk(server, session_id))
        print("status:", server.wait_for_status(session_id, "TERMINATED").termination_reason)
    """
)


def _namespace_available() -> str | None:
    """None when `unshare -rn` works here, else the reason it does not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


def _run_in_namespace(script: str) -> list[str]:
    """Run ``script`` with this interpreter in a new network namespace with only ``lo`` up."""
    reason = _namespace_available()
    if reason is not None:
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    result = subprocess.run(
        [
            "unshare",
            "-rn",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" -c "$1"',
            sys.executable,
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_a_peer_connects_in_a_loopback_only_network_namespace() -> None:
    lines = _run_in_namespace(NAMESPACE_SCRIPT)
    assert "candidates before: 0" in lines, "aioice should find nothing without the fallback"
    assert any(line.startswith("candidates after:") and line.endswith(" True") for line in lines)
    assert "connected: connected" in lines


def test_the_mock_server_serves_webrtc_in_a_loopback_only_network_namespace() -> None:
    # MockPersoServer installs the fallback when it starts: a client makes its offer (with
    # its candidates) before the first exchange creates the answerer.
    lines = _run_in_namespace(SERVER_SCRIPT)
    assert "stf received" in lines
    assert "status: GRACEFUL_TERMINATION" in lines


def test_the_fallback_only_adds_loopback_when_aioice_finds_no_ipv4() -> None:
    def finds(addresses: list[str]) -> _loopback._HostAddresses:
        return lambda use_ipv4, use_ipv6: list(addresses)

    with_real_interface = _loopback._with_loopback_fallback(finds(["192.0.2.7", "fe80::1"]))
    assert with_real_interface(True, True) == ["192.0.2.7", "fe80::1"]
    only_ipv6 = _loopback._with_loopback_fallback(finds(["2001:db8::1"]))
    assert only_ipv6(True, True) == ["2001:db8::1", "127.0.0.1"]
    assert only_ipv6(False, True) == ["2001:db8::1"]
    nothing = _loopback._with_loopback_fallback(finds([]))
    assert nothing(True, False) == ["127.0.0.1"]


def test_a_host_with_a_real_interface_is_left_alone() -> None:
    if not _loopback.has_non_loopback_ipv4():
        pytest.skip("this host is loopback-only: the fallback is meant to be active here")
    original = aioice.ice.get_host_addresses
    assert _loopback.ensure_loopback_candidates() is False
    assert aioice.ice.get_host_addresses is original
