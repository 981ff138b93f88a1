"""Load and chaos traffic goes to loopback only, unless the user explicitly allows a remote target.

A load test pointed at the wrong host is an attack on somebody else's service; so every target URL is checked
before anything is sent, and a name is resolved to see where it really points.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeTargetError(ValueError):
    pass


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_target(url: str, *, allow_remote: bool, what: str = "target") -> None:
    """Raise :class:`UnsafeTargetError` unless ``url`` points at loopback (or remote targets are allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise UnsafeTargetError(f"{what} {url!r}: expected an http(s):// or ws(s):// URL with a host")
    if allow_remote:
        return
    if not is_loopback_host(parts.hostname):
        raise UnsafeTargetError(
            f"{what} {url!r} is not on loopback (127.0.0.0/8, ::1). voicechaos sends load and faults; it refuses "
            "other hosts unless you pass --allow-remote and own the target."
        )
