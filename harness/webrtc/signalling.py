"""WebRTC signalling the way real runtimes take it: one HTTP offer/answer exchange.

The caller POSTs its offer as JSON ``{"sdp", "type": "offer", "pc_id", "restart_pc"}`` and gets the answer back as
``{"sdp", "type": "answer", "pc_id"}``: the shape Pipecat's SmallWebRTC transport serves (``/api/offer``), and what
the reference runtime answers too. Candidates travel inside the SDP (no trickle ICE), so the answer's are checked
against loopback before the caller uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiortc import RTCSessionDescription

from harness.safety import check_target
from harness.webrtc.loopback import check_candidates


class SignallingError(RuntimeError):
    """The offer/answer exchange failed; the message names the URL and what went wrong. ``status`` is the HTTP
    status when the server answered with an error (503: at capacity)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Answer:
    description: RTCSessionDescription
    pc_id: str | None


async def exchange_offer(http: aiohttp.ClientSession, url: str, offer: RTCSessionDescription, *,
                         timeout_s: float = 10.0, allow_remote: bool = False, pc_id: str | None = None) -> Answer:
    """Send ``offer`` to ``url``; return the checked answer (refused when it offers candidates outside loopback)."""
    check_target(url, allow_remote=allow_remote, what="the WebRTC offer URL")
    body = {"sdp": offer.sdp, "type": offer.type, "pc_id": pc_id, "restart_pc": False}
    try:
        async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            text = await response.text()
            if response.status != 200:
                raise SignallingError(f"{url} answered the offer with HTTP {response.status}: {text[:200].strip()}",
                                      response.status)
            try:
                data = await response.json(content_type=None)
            except ValueError:
                raise SignallingError(f"{url} answered the offer with something that is not JSON: "
                                      f"{text[:120]!r}") from None
    except TimeoutError:
        raise SignallingError(f"{url} did not answer the offer within {timeout_s:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        raise SignallingError(f"{url}: cannot connect ({exc.os_error.strerror or exc.os_error})") from None
    except aiohttp.ClientError as exc:
        raise SignallingError(f"{url}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sdp"), str) or data.get("type") != "answer":
        raise SignallingError(f"{url} answered without an SDP answer (want {{'sdp': ..., 'type': 'answer'}}, "
                              f"got keys {sorted(data) if isinstance(data, dict) else type(data).__name__})")
    check_candidates(data["sdp"], allow_remote=allow_remote, what=f"the answer from {url}")
    return Answer(RTCSessionDescription(sdp=data["sdp"], type="answer"), data.get("pc_id"))
