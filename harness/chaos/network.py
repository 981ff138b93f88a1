"""Which Toxiproxy a run uses, and the proxy in front of each dependency of the runtime.

The real Toxiproxy is used whenever it is there: ``TOXIPROXY_URL`` pointing at a running server (docker-compose
sets it), or ``toxiproxy-server`` on PATH (started by the stack). Otherwise the embedded one (a Python server that
keeps the same API contract, :mod:`harness.chaos.toxiproxy`) is started. All three are driven the same way, through
:class:`~harness.chaos.toxiproxy_client.ToxiproxyClient`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from harness.chaos.toxiproxy_client import ProxyInfo


@dataclass(frozen=True, slots=True)
class ToxiproxyChoice:
    kind: Literal["external", "binary", "embedded"]
    url: str | None = None  # external: where it runs
    binary: str | None = None  # binary: the toxiproxy-server to start

    def describe(self) -> str:
        if self.kind == "external":
            return f"the Toxiproxy server at {self.url} (TOXIPROXY_URL)"
        if self.kind == "binary":
            return f"toxiproxy-server from PATH ({self.binary})"
        return "the embedded Toxiproxy (no TOXIPROXY_URL, no toxiproxy-server on PATH)"


def choose_toxiproxy(environ: Mapping[str, str], which: Callable[[str], str | None] = shutil.which) -> ToxiproxyChoice:
    url = environ.get("TOXIPROXY_URL", "").strip()
    if url:
        return ToxiproxyChoice("external", url=url if "://" in url else f"http://{url}")
    binary = which("toxiproxy-server")
    if binary:
        return ToxiproxyChoice("binary", binary=binary)
    return ToxiproxyChoice("embedded")


@dataclass(frozen=True, slots=True)
class Dependency:
    """One dependency of the runtime as the stack wired it: the fake (or store) itself, and the proxy the runtime
    reaches it through."""

    name: str  # stt, tts, llm, crm, storage
    service: str  # what serves it: deepgram, elevenlabs, openai, crm, storage
    upstream_url: str  # the service itself (http://127.0.0.1:port)
    proxy: ProxyInfo
    control_url: str | None  # the fake's fault control API; None for object storage

    @property
    def url(self) -> str:
        """The address the runtime is given: the proxy's."""
        scheme = urlsplit(self.upstream_url).scheme or "http"
        host = self.proxy.listen.rsplit(":", 1)[0]
        return f"{scheme}://{host}:{self.proxy.port}"

    def to_json(self) -> dict[str, object]:
        return {"service": self.service, "upstream": self.upstream_url, "proxy": self.proxy.name,
                "proxied_url": self.url, "control_url": self.control_url}


def upstream_of(url: str) -> str:
    """``http://127.0.0.1:8001/x`` -> ``127.0.0.1:8001``: what a Toxiproxy proxy forwards to."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"cannot proxy {url!r}: it needs a host and a port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"
