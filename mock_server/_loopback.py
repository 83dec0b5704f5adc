"""Make WebRTC work on hosts whose only network interface is loopback.

aioice never offers 127.0.0.1 as a host candidate. On a normal machine that is right: the
other interfaces carry the traffic, even between two peers on the same host. But CI
containers are often started without a network (or in a namespace with only ``lo``); there
aioice gathers *no* host candidate at all and no connection can ever form, not even between
the mock server and a client in the same process.

``ensure_loopback_candidates()`` detects that case (no IPv4 address outside 127.0.0.0/8) and
only then wraps ``aioice.ice.get_host_addresses`` so that it falls back to 127.0.0.1.

Trade-off, documented because it is process-wide: the patch affects every aioice connection
in *this* process, including a perso_sync client that runs next to the mock (a test, a demo).
That is exactly what lets such a client reach the mock on a loopback-only host, and it changes
nothing anywhere else: on a host with a real interface the patch is never installed, and even
once installed the fallback only applies while aioice finds no IPv4 address of its own. The
client library never installs it itself; against the real platform a loopback-only host has
no route anyway. A process that imports the mock server but talks to a remote peer over
loopback-only networking would advertise a 127.0.0.1 candidate that the remote cannot reach,
which is harmless (ICE just never nominates it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import aioice.ice
import ifaddr

__all__ = ["ensure_loopback_candidates", "has_non_loopback_ipv4"]

logger = logging.getLogger("mock_server.loopback")

LOOPBACK_ADDRESS = "127.0.0.1"
_HostAddresses = Callable[[bool, bool], list[str]]
_install_lock = threading.Lock()
_installed = False


def has_non_loopback_ipv4() -> bool:
    """Whether this host has an IPv4 address outside 127.0.0.0/8 (the one aioice would use)."""
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                return True
    return False


def _with_loopback_fallback(original: _HostAddresses) -> _HostAddresses:
    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and not any("." in address for address in addresses):
            addresses = [*addresses, LOOPBACK_ADDRESS]
        return addresses

    get_host_addresses.__wrapped__ = original  # type: ignore[attr-defined]
    return get_host_addresses


def ensure_loopback_candidates() -> bool:
    """On a loopback-only host, let aioice gather 127.0.0.1; return whether the patch is active.

    Idempotent and thread-safe; does nothing (returns False) on a host with a real IPv4
    interface.
    """
    global _installed
    with _install_lock:
        if _installed:
            return True
        if has_non_loopback_ipv4():
            return False
        patched = _with_loopback_fallback(aioice.ice.get_host_addresses)
        aioice.ice.get_host_addresses = patched  # type: ignore[assignment]
        _installed = True
        logger.info(
            "no non-loopback IPv4 interface: WebRTC in this process will use %s host candidates",
            LOOPBACK_ADDRESS,
        )
        return True
