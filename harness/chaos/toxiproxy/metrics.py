"""``GET /metrics``: Prometheus text exposition of the proxies' byte and connection counters.

The real server exposes ``toxiproxy_proxy_received_bytes_total`` and ``toxiproxy_proxy_sent_bytes_total`` (labels
``direction``, ``listener``, ``proxy``, ``upstream``) only when started with its metrics flags; this one always does,
counted live rather than when a connection ends, and adds connection counts (``toxiproxy_proxy_connections_total``,
``toxiproxy_proxy_active_connections``). Rendered by hand: the project keeps no global collector registry.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.chaos.toxiproxy.proxy import Proxy
from harness.chaos.toxiproxy.wire import Stream

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items())) + "}"


def render_metrics(proxies: Iterable[Proxy]) -> str:
    proxies = sorted(proxies, key=lambda p: p.name)
    lines: list[str] = []
    for metric, help_text, attribute in (
        ("toxiproxy_proxy_received_bytes_total", "Bytes read from the source of each direction.", "received"),
        ("toxiproxy_proxy_sent_bytes_total", "Bytes written to the sink of each direction.", "sent"),
    ):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for proxy in proxies:
            for stream in Stream:
                value = getattr(proxy.stats[stream], attribute)
                labels = _labels(
                    direction=stream.value, listener=proxy.listen, proxy=proxy.name, upstream=proxy.upstream
                )
                lines.append(f"{metric}{labels} {value}")
    lines += [
        "# HELP toxiproxy_proxy_connections_total Client connections accepted.",
        "# TYPE toxiproxy_proxy_connections_total counter",
    ]
    for proxy in proxies:
        labels = _labels(listener=proxy.listen, proxy=proxy.name, upstream=proxy.upstream)
        lines.append(f"toxiproxy_proxy_connections_total{labels} {proxy.connections_total}")
    lines += [
        "# HELP toxiproxy_proxy_active_connections Client connections open now.",
        "# TYPE toxiproxy_proxy_active_connections gauge",
    ]
    for proxy in proxies:
        labels = _labels(listener=proxy.listen, proxy=proxy.name, upstream=proxy.upstream)
        lines.append(f"toxiproxy_proxy_active_connections{labels} {len(proxy.links)}")
    return "\n".join(lines) + "\n"
