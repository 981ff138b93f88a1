"""WebRTC peers that offer and accept loopback candidates only.

Load and chaos traffic stays on loopback. An unmodified aiortc peer does not: aioice's ``get_host_addresses`` leaves
127.0.0.1 *out* of the host candidates it gathers (and ::1 with it) and offers every other interface of the machine,
and without ``iceServers`` aiortc adds Google's STUN server. So a voicechaos peer:

- has no STUN or TURN server (``RTCConfiguration(iceServers=[])``);
- gathers exactly one host candidate per component, on 127.0.0.1 (:func:`gather_on_loopback_only`, called after the
  peer's transceivers exist and before ``setLocalDescription``);
- refuses a remote description with any candidate outside loopback (:func:`check_candidates`), unless the user allowed
  remote targets; the refusal names the candidate.

RFC 8839 §5.1 gives the ``a=candidate`` grammar read here: foundation, component, transport, priority, address, port,
``typ`` and the type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection

from harness.safety import is_loopback_host

LOOPBACK = "127.0.0.1"
_CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d+) (\S+) (\d+) (\S+) (\d+) typ (\S+)", re.MULTILINE)


class NonLoopbackCandidate(ValueError):
    """A description offered a candidate outside loopback."""


@dataclass(frozen=True)
class Candidate:
    component: int
    transport: str
    address: str
    port: int
    type: str

    def __str__(self) -> str:
        return f"{self.type} {self.transport} {self.address}:{self.port} (component {self.component})"


def candidates(sdp: str) -> list[Candidate]:
    """Every ``a=candidate`` line of a session description (RFC 8839 §5.1)."""
    return [Candidate(component=int(m.group(2)), transport=m.group(3).lower(), address=m.group(5),
                      port=int(m.group(6)), type=m.group(7)) for m in _CANDIDATE.finditer(sdp)]


def check_candidates(sdp: str, *, allow_remote: bool = False, what: str = "the remote description") -> list[Candidate]:
    """The description's candidates; raises :class:`NonLoopbackCandidate` naming the first outside loopback (a
    mDNS ``.local`` name counts as outside: it would be resolved on the network)."""
    found = candidates(sdp)
    if not allow_remote:
        for candidate in found:
            if candidate.address.endswith(".local") or not is_loopback_host(candidate.address):
                raise NonLoopbackCandidate(f"{what} offers {candidate}, outside loopback; voicechaos talks to "
                                           "loopback only unless --allow-remote is given")
    return found


def loopback_peer() -> RTCPeerConnection:
    """A peer connection without STUN or TURN. Call :func:`gather_on_loopback_only` once its tracks are added."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def gather_on_loopback_only(pc: RTCPeerConnection) -> None:
    """Make every ICE transport of ``pc`` gather one host candidate per component on 127.0.0.1, and nothing else.

    aioice gathers through ``Connection.gather_candidates``, which asks ``get_host_addresses`` for the machine's
    interfaces; this replaces that method on *these* connections only (no process-wide patch), keeping aioice's own
    ``get_component_candidates`` for the sockets. It reads aioice's private state, so the aioice version is pinned in
    pyproject.toml and ``tests/test_webrtc_loopback.py`` fails if it changes under us.
    """
    for connection in _ice_connections(pc):
        if getattr(connection, "_voicechaos_loopback", False):
            continue
        connection._voicechaos_loopback = True
        connection.gather_candidates = _loopback_gatherer(connection)


def _ice_connections(pc: RTCPeerConnection) -> Iterable[Any]:
    seen: set[int] = set()
    transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        if dtls is None:
            continue
        connection = dtls.transport.iceGatherer._connection
        if id(connection) not in seen:
            seen.add(id(connection))
            yield connection


def _loopback_gatherer(connection: Any) -> Any:
    async def gather_candidates() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        for component in connection._components:
            connection._local_candidates += await connection.get_component_candidates(
                component=component, addresses=[LOOPBACK])
        connection._local_candidates_end = True

    return gather_candidates
