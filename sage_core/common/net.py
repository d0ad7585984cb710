"""Small network helpers shared by the servers (gateway, scheduler, workers)."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: str | None) -> bool:
    """Whether a listening host only accepts connections from this machine.

    An empty host (or ``None``) means every interface, so it is not loopback; so are
    names other than ``localhost`` (they may resolve to any interface).

    Args:
        host: a hostname or IP address, optionally in brackets (``[::1]``) or with a
            ``scheme://`` prefix (``tls://127.0.0.1``).
    """
    if not host:
        return False
    host = host.split("://", 1)[-1].strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # host:port
        host = host.split(":", 1)[0]
    if not host:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
