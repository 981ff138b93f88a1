"""The Voice and Chaos pages of the load engine's web UI: JSON routes and one static page, on any Flask app.

Locust's own UI is a built React app that can show extra tabs, but only as plain-text tables fed through
``/stats/requests`` (``extended_tabs`` / ``extended_tables`` in its template args, ``extended_stats`` in that JSON).
So there are two views of the same figures:

- ``/voicechaos/``: our page (vanilla JS, served from this package, no network), with live voice figures, fault
  buttons, and load controls that post to Locust's own ``/swarm`` and ``/stop``;
- Locust's UI: a Voice tab and a Chaos tab (read-only tables) and a fixed "Voice & Chaos" link to our page.

This module imports Flask only, never Locust (``import locust`` patches the whole process with gevent): the Locust
``WebUI`` object is duck-typed (``template_args``, ``auth_required_if_enabled``), and Locust's routes are recognised
by their endpoint names (``locust.index``, ``locust.request_stats``) or their paths.

Routes (all JSON except the page), under :data:`PREFIX`:

- ``GET  /voicechaos/``                          the page;
- ``GET  /voicechaos/api/voice``                 ``stats()``, the :class:`~harness.load.voice_stats.VoiceStats`
  snapshot;
- ``GET  /voicechaos/api/chaos``                 ``{"dependencies", "faults", "presets"}``; 404 without a control;
- ``POST /voicechaos/api/chaos/faults``          body: one fault (:class:`harness.chaos.faults.Fault` JSON) -> 201
  with its window; 400 ``{"error"}`` when it is malformed or cannot be applied (the control validates it);
- ``DELETE /voicechaos/api/chaos/faults/<i>``    end fault window ``i`` -> 200 with the window; 404 if unknown.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import flask

from harness.chaos.faults import DEPENDENCIES, PROVIDER_FAULT_TARGETS

log = logging.getLogger(__name__)

PREFIX = "/voicechaos"
STATIC = Path(__file__).with_name("static")
VOICE_TAB = "voicechaos-voice"
CHAOS_TAB = "voicechaos-chaos"
#: the mark of the link injected into Locust's page (also how a second injection is avoided)
LINK_ID = "voicechaos-link"

#: Locust's extended tabs and tables (the structure keys are the row keys; Locust camel-cases both the same way)
EXTENDED_TABS = [{"title": "Voice", "key": VOICE_TAB}, {"title": "Chaos", "key": CHAOS_TAB}]
EXTENDED_TABLES = [
    {"key": VOICE_TAB, "structure": [{"key": "name", "title": "Figure"}, {"key": "window", "title": "Window"},
                                     {"key": "run", "title": "Whole run"}]},
    {"key": CHAOS_TAB, "structure": [{"key": "name", "title": "Dependency"},
                                     {"key": "active", "title": "Active faults"}]},
]


class ChaosError(ValueError):
    """A fault the user asked for that cannot be applied; the message says why."""


class ChaosControl(Protocol):
    def dependencies(self) -> list[dict[str, Any]]: ...  # [{"name": "llm", "proxy": "llm", "provider_faults": True,
    #                                                        "active": [<fault window json>...]}, ...]
    def faults(self) -> list[dict[str, Any]]: ...  # every fault window of the run, scheduled and on demand
    #                                                 (harness.chaos.timeline.FaultWindow.to_json())
    def apply(self, fault: dict[str, Any]) -> dict[str, Any]: ...  # the scenario's fault JSON -> the window json;
    #                                                                 raises ChaosError
    def remove(self, index: int) -> dict[str, Any]: ...  # raises KeyError


# --- presets ----------------------------------------------------------------------------------------------------------


def _latency(target: str, ms: int, jitter: int) -> dict[str, Any]:
    return {"name": f"{target}: +{ms} ms ± {jitter}", "target": target,
            "toxic": {"type": "latency", "attributes": {"latency": ms, "jitter": jitter}}}


def _provider(target: str, label: str, **provider: Any) -> dict[str, Any]:
    return {"name": f"{target}: {label}", "target": target, "provider": provider}


def presets() -> list[dict[str, Any]]:
    """One-click faults per dependency: ``{"target", "label", "fault"}``, ``fault`` being the scenario's fault JSON
    without ``at``/``duration`` (the page adds the duration the user chose). Drawn from the incidents in
    ``scenarios/incidents``: slow or gone dependencies, rate limits, 5xx, slow first bytes, stalled streams."""
    out: list[dict[str, Any]] = []

    def add(label: str, fault: dict[str, Any]) -> None:
        out.append({"target": fault["target"], "label": label, "fault": fault})

    for target in DEPENDENCIES:
        add("latency 500 ms ± 100", _latency(target, 500, 100))
        add("latency 2 s ± 500", _latency(target, 2000, 500))
        if target == "storage":  # the storage outage incident: requests swallowed, uploads hang
            add("requests hang", {"name": f"{target}: requests hang", "target": target,
                                  "toxic": {"type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}}})
        add("down", {"name": f"{target}: down", "target": target, "down": True})
        if target in PROVIDER_FAULT_TARGETS:
            add("429 rate limit", _provider(target, "429 rate limit", kind="rate_limit"))
            add("500 errors", _provider(target, "500 errors", kind="error", status=500))
            add("slow first byte 2 s", _provider(target, "slow first byte 2 s", kind="slow_first_byte",
                                                 delay_ms=2000))
            add("stream stalls", _provider(target, "stream stalls until the client gives up", kind="stall",
                                           after_chunks=1, stall_ms=None))
    return out


# --- Locust's read-only tabs ------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def voice_rows(snapshot: dict[str, Any]) -> list[dict[str, str]]:
    """One row per figure: ``name``, ``window`` (the last ``window_s`` seconds, or now), ``run`` (the whole run)."""
    latency = snapshot["response_latency_ms"]
    greeting = snapshot["greeting_latency_ms"]
    gaps = snapshot["gaps_ms"]
    lateness = snapshot["lateness"]
    validity = snapshot["validity"]
    window_s = snapshot.get("window_s", 60)
    rows = [{"name": "window", "window": f"last {window_s:g} s", "run": "whole run"}]
    for q in ("p50", "p95", "p99", "max"):
        rows.append({"name": f"response latency {q}", "window": _ms(latency["window"][q]),
                     "run": _ms(latency["run"][q])})
    rows += [
        {"name": "replies measured", "window": str(latency["window"]["count"]), "run": str(latency["run"]["count"])},
        {"name": "greeting latency p95", "window": _ms(greeting["window"]["p95"]), "run": _ms(greeting["run"]["p95"])},
        {"name": "silence gap p95", "window": _ms(gaps["window"]["p95"]), "run": _ms(gaps["run"]["p95"])},
        {"name": "silence gap max", "window": _ms(gaps["window"]["max"]), "run": _ms(gaps["run"]["max"])},
        {"name": f"dead air gaps (> {gaps['dead_air_ms']:g} ms)", "window": str(gaps["window"]["dead_air"]),
         "run": str(gaps["run"]["dead_air"])},
        {"name": "active calls", "window": str(snapshot["active_calls"]["total"]),
         "run": f"{snapshot['calls']['started']} started, {snapshot['calls']['ended']} ended"},
        {"name": "calls by outcome", "window": "", "run": _counts(snapshot["calls"]["by_outcome"])},
        {"name": "turns by status", "window": "", "run": _counts(snapshot["turns"]["by_status"])},
        {"name": "harness pacing lateness p99", "window": "",
         "run": f"{_ms(lateness['p99_ms'])} over {lateness['frames']} frames (limit {lateness['limit_ms']:g} ms)"},
        {"name": "run validity", "window": "",
         "run": ("valid: " if validity["valid"] else "INVALID: ") + validity["reason"]},
    ]
    return rows


def chaos_rows(chaos: ChaosControl | None, page_url: str) -> list[dict[str, str]]:
    """One row per dependency with its active faults, and a last row pointing at the page that can change them."""
    hint = {"name": "apply/remove faults:", "active": f"{page_url}#chaos"}
    if chaos is None:
        return [{"name": "no chaos control in this process", "active": ""}, hint]
    rows = []
    for dependency in chaos.dependencies():
        labels = [str(w.get("label") or w.get("index")) for w in dependency.get("active") or []]
        rows.append({"name": str(dependency.get("name")), "active": ", ".join(labels) or "none"})
    rows.append(hint)
    return rows


# --- the routes -------------------------------------------------------------------------------------------------------


def _error(status: int, message: str) -> flask.Response:
    response = flask.jsonify({"error": message})
    response.status_code = status
    return response


def _json_body() -> tuple[dict[str, Any] | None, str]:
    """The request's JSON object, or None and what is wrong with it (said plainly: this is a user's typing)."""
    raw = flask.request.get_data(as_text=True)
    if not raw.strip():
        return None, "empty body: send the fault as a JSON object"
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"body is not JSON: {exc}"
    if not isinstance(body, dict):
        return None, f"a fault is a JSON object, not {type(body).__name__}"
    return body, ""


def _locust_base(app: flask.Flask) -> str | None:
    """Where Locust's routes are (its blueprint's ``web_base_path``); None when Locust's UI is not on this app."""
    blueprint = app.blueprints.get("locust")
    if blueprint is None:
        return None
    return flask.request.script_root + (blueprint.url_prefix or "").rstrip("/")


def install(app: flask.Flask, *, stats: Callable[[], dict[str, Any]], chaos: ChaosControl | None,
            web_ui: Any | None = None) -> None:
    """Add the Voice & Chaos routes and page to ``app``; with Locust's ``web_ui``, also its tabs and a link."""
    page = flask.Blueprint("voicechaos", __name__, url_prefix=PREFIX, static_folder=str(STATIC),
                           static_url_path="/static")
    # behind Locust's login (--web-login) like Locust's own routes; the static assets stay public, as Locust's do.
    # Endpoints are named explicitly: a guard that does not functools.wraps its view would give them all one name.
    guard: Callable[[Callable[..., Any]], Callable[..., Any]] = getattr(
        web_ui, "auth_required_if_enabled", None) or (lambda view: view)

    @page.get("/", endpoint="index")
    @guard
    def index() -> flask.Response:
        text = (STATIC / "index.html").read_text(encoding="utf-8")
        base = _locust_base(app)
        text = text.replace('data-locust-base=""', f'data-locust-base="{html.escape(base or "")}"', 1)
        text = text.replace('data-locust=""', f'data-locust="{"yes" if base is not None else "no"}"', 1)
        response = flask.make_response(text)
        response.mimetype = "text/html"
        response.headers["Cache-Control"] = "no-store"
        return response

    @page.get("/api/voice", endpoint="voice")
    @guard
    def voice() -> flask.Response:
        return flask.jsonify(stats())

    @page.get("/api/chaos", endpoint="chaos")
    @guard
    def chaos_state() -> flask.Response:
        if chaos is None:
            return _error(404, "no chaos control in this process")
        return flask.jsonify({"dependencies": chaos.dependencies(), "faults": chaos.faults(), "presets": presets()})

    @page.post("/api/chaos/faults", endpoint="apply_fault")
    @guard
    def apply_fault() -> flask.Response:
        if chaos is None:
            return _error(404, "no chaos control in this process")
        body, problem = _json_body()
        if body is None:
            return _error(400, problem)
        try:
            window = chaos.apply(body)
        except ChaosError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # the user must see why in the page, not a bare 500 (and the load goes on)
            log.exception("applying fault %r failed", body)
            return _error(500, f"{exc.__class__.__name__}: {exc}")
        response = flask.jsonify(window)
        response.status_code = 201
        return response

    @page.delete("/api/chaos/faults/<int:index>", endpoint="remove_fault")
    @guard
    def remove_fault(index: int) -> flask.Response:
        if chaos is None:
            return _error(404, "no chaos control in this process")
        try:
            return flask.jsonify(chaos.remove(index))
        except KeyError:
            return _error(404, f"no fault window {index}")
        except ChaosError as exc:
            return _error(400, str(exc))
        except Exception as exc:
            log.exception("removing fault window %d failed", index)
            return _error(500, f"{exc.__class__.__name__}: {exc}")

    app.register_blueprint(page)
    if web_ui is not None:
        _wire_locust(app, web_ui, stats, chaos)


def _wire_locust(app: flask.Flask, web_ui: Any, stats: Callable[[], dict[str, Any]],
                 chaos: ChaosControl | None) -> None:
    web_ui.template_args["extended_tabs"] = EXTENDED_TABS
    web_ui.template_args["extended_tables"] = EXTENDED_TABLES

    def is_locust(endpoint: str, path: str) -> bool:
        # by endpoint when Locust serves it (under any --web-base-path), by path for a bare app in the tests
        return flask.request.endpoint == f"locust.{endpoint}" or flask.request.path == path

    @app.after_request
    def extend_locust(response: flask.Response) -> flask.Response:
        # never break Locust's own UI: a failure here only loses our rows or our link
        try:
            if is_locust("request_stats", "/stats/requests") and response.is_json and response.status_code == 200:
                _add_extended_stats(response, stats, chaos)
            elif is_locust("index", "/") and response.mimetype == "text/html" and response.status_code == 200:
                _add_link(response)
        except Exception:
            log.exception("extending Locust's %s failed", flask.request.path)
        return response


def _add_extended_stats(response: flask.Response, stats: Callable[[], dict[str, Any]],
                        chaos: ChaosControl | None) -> None:
    report = json.loads(response.get_data(as_text=True))
    page_url = flask.request.host_url.rstrip("/") + flask.request.script_root + PREFIX + "/"
    ours = [{"key": VOICE_TAB, "data": voice_rows(stats())}, {"key": CHAOS_TAB, "data": chaos_rows(chaos, page_url)}]
    # Locust memoizes this response object for a moment, and other extensions may add their own tables: replace
    # our entries, keep theirs
    others = [e for e in report.get("extended_stats") or [] if e.get("key") not in (VOICE_TAB, CHAOS_TAB)]
    report["extended_stats"] = others + ours
    response.set_data(json.dumps(report))


def _add_link(response: flask.Response) -> None:
    text = response.get_data(as_text=True)
    if LINK_ID in text or "</body>" not in text:
        return
    href = html.escape(flask.request.script_root + PREFIX + "/")
    # plain HTML outside React's root: fixed in a corner, so it survives whatever the React app renders
    link = (f'<a id="{LINK_ID}" href="{href}" target="_blank" rel="noopener" style="position:fixed;right:12px;'
            'bottom:12px;z-index:2147483647;padding:6px 10px;border-radius:6px;background:#1565c0;color:#fff;'
            'font:600 13px system-ui,sans-serif;text-decoration:none;box-shadow:0 1px 4px rgba(0,0,0,.3)">'
            'Voice &amp; Chaos ↗</a>')
    head, _, tail = text.rpartition("</body>")
    response.set_data(head + link + "</body>" + tail)
