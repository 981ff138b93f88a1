"""The Voice and Chaos pages of the load engine's web UI: JSON routes and one static page, on any Flask app.

Locust's own UI is a built React app. Its extra tabs (``extended_tabs`` in its template args) can only render
plain-text tables, and a Chaos tab must have buttons. So the figures and the fault controls live in one page of ours,
and Locust's tabs show it:

- ``/voicechaos/``: our page (vanilla JS, served from this package, no network), with live voice figures, fault
  buttons, and load controls that post to Locust's own ``/swarm`` and ``/stop``;
- Locust's UI gets a Voice tab and a Chaos tab with no table of their own, and a small script
  (``static/locust-tabs.js``) that, while one of them is selected, shows that part of our page under Locust's tab bar
  (``/voicechaos/?embed=1#voice`` or ``#chaos`` in a same-origin frame); and a fixed "Voice & Chaos" link to the whole
  page.

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
#: the script injected into Locust's page that fills our two tabs
TABS_SCRIPT_ID = "voicechaos-tabs"

#: Locust's extended tabs. With no ``extended_tables`` entry for their keys Locust renders nothing in them (its tab
#: panel draws a table only when it has the table's structure), which leaves the space to the injected script.
EXTENDED_TABS = [{"title": "Voice", "key": VOICE_TAB}, {"title": "Chaos", "key": CHAOS_TAB}]
#: which part of our page each tab shows (its fragment)
TAB_PANELS = {VOICE_TAB: "voice", CHAOS_TAB: "chaos"}


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
    """Add the Voice & Chaos routes and page to ``app``; with Locust's ``web_ui``, also its two tabs and a link."""
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
        _wire_locust(app, web_ui)


def _wire_locust(app: flask.Flask, web_ui: Any) -> None:
    web_ui.template_args["extended_tabs"] = EXTENDED_TABS

    def is_locust_index() -> bool:
        # by endpoint when Locust serves it (under any --web-base-path), by path for a bare app in the tests
        return flask.request.endpoint == "locust.index" or flask.request.path == "/"

    @app.after_request
    def extend_locust(response: flask.Response) -> flask.Response:
        # never break Locust's own UI: a failure here only loses our tabs' content or our link
        try:
            if is_locust_index() and response.mimetype == "text/html" and response.status_code == 200:
                _add_tabs_and_link(response)
        except Exception:
            log.exception("extending Locust's %s failed", flask.request.path)
        return response


def _add_tabs_and_link(response: flask.Response) -> None:
    text = response.get_data(as_text=True)
    if LINK_ID in text or "</body>" not in text:
        return
    page = html.escape(flask.request.script_root + PREFIX + "/")
    # plain HTML outside React's root: fixed in a corner, so it survives whatever the React app renders
    link = (f'<a id="{LINK_ID}" href="{page}" target="_blank" rel="noopener" style="position:fixed;right:12px;'
            'bottom:12px;z-index:2147483647;padding:6px 10px;border-radius:6px;background:#1565c0;color:#fff;'
            'font:600 13px system-ui,sans-serif;text-decoration:none;box-shadow:0 1px 4px rgba(0,0,0,.3)">'
            'Voice &amp; Chaos ↗</a>')
    panels = html.escape(json.dumps(TAB_PANELS))
    script = (f'<script id="{TABS_SCRIPT_ID}" src="{page}static/locust-tabs.js" data-page="{page}" '
              f'data-panels="{panels}"></script>')
    head, _, tail = text.rpartition("</body>")
    response.set_data(head + link + script + "</body>" + tail)
