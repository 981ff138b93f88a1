"""The Voice & Chaos web routes on a plain Flask app, with a fake chaos control and a real VoiceStats; Locust's UI
wiring against a duck-typed stand-in, and once against Locust's real WebUI (unpatched: see tests/conftest.py)."""

from __future__ import annotations

import html
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import flask
import pytest

from harness.chaos.faults import DEPENDENCIES, PROVIDER_FAULT_TARGETS, Fault
from harness.load.voice_stats import VoiceStats
from harness.load.webui import (
    CHAOS_TAB,
    LINK_ID,
    PREFIX,
    STATIC,
    TABS_SCRIPT_ID,
    VOICE_TAB,
    ChaosError,
    install,
    presets,
)


class FakeChaos:
    """Records what the routes asked for; windows are numbered as the timeline numbers them."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.removed: list[int] = []
        self.windows: list[dict[str, Any]] = [
            {"index": 0, "label": "llm rate-limited", "target": "llm", "action": "provider", "applied_at_s": 3.0,
             "removed_at_s": None, "error": None}]
        self.refuse: str | None = None

    def dependencies(self) -> list[dict[str, Any]]:
        return [{"name": name, "proxy": name, "provider_faults": name in PROVIDER_FAULT_TARGETS,
                 "active": [w for w in self.windows if w["target"] == name and w["removed_at_s"] is None]}
                for name in ("stt", "llm", "storage")]

    def faults(self) -> list[dict[str, Any]]:
        return self.windows

    def apply(self, fault: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            raise ChaosError(self.refuse)
        self.applied.append(fault)
        window = {"index": len(self.windows), "label": fault.get("name") or fault["target"],
                  "target": fault["target"], "action": "toxic", "applied_at_s": 9.5, "removed_at_s": None,
                  "error": None}
        self.windows.append(window)
        return window

    def remove(self, index: int) -> dict[str, Any]:
        window = self.windows[index]  # IndexError is not the contract: say KeyError
        self.removed.append(index)
        window["removed_at_s"] = 12.0
        return window


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def voice() -> VoiceStats:
    stats = VoiceStats(lateness_limit_ms=5.0, clock=Clock())
    stats.call_started("w1")
    stats.turn({"call_id": 1, "kind": "reply", "response_latency_ms": 640.0, "gaps_ms": [120.0], "status": "ok"})
    return stats


@pytest.fixture
def chaos() -> FakeChaos:
    return FakeChaos()


class SafeChaos(FakeChaos):
    def remove(self, index: int) -> dict[str, Any]:
        if index >= len(self.windows):
            raise KeyError(index)
        return super().remove(index)


@pytest.fixture
def client(voice: VoiceStats) -> tuple[flask.testing.FlaskClient, SafeChaos]:
    control = SafeChaos()
    app = flask.Flask(__name__)
    install(app, stats=lambda: {**voice.snapshot(), "run_dir": "runs/x"}, chaos=control)
    return app.test_client(), control


def test_voice_api_is_the_stats_callable(client: tuple[flask.testing.FlaskClient, SafeChaos]) -> None:
    c, _ = client
    response = c.get(f"{PREFIX}/api/voice")
    assert response.status_code == 200
    assert response.json["run_dir"] == "runs/x"
    assert response.json["response_latency_ms"]["window"]["max"] == 640.0
    assert response.json["active_calls"]["total"] == 1


def test_chaos_api_lists_dependencies_faults_and_presets(client: tuple[flask.testing.FlaskClient, SafeChaos]) -> None:
    c, _ = client
    response = c.get(f"{PREFIX}/api/chaos")
    assert response.status_code == 200
    assert [d["name"] for d in response.json["dependencies"]] == ["stt", "llm", "storage"]
    assert response.json["dependencies"][1]["active"][0]["label"] == "llm rate-limited"
    assert response.json["faults"][0]["index"] == 0
    assert response.json["presets"] == presets()


def test_apply_reaches_the_control_and_answers_201(client: tuple[flask.testing.FlaskClient, SafeChaos]) -> None:
    c, control = client
    fault = {"target": "llm", "toxic": {"type": "latency", "attributes": {"latency": 500}}, "duration": 30}
    response = c.post(f"{PREFIX}/api/chaos/faults", json=fault)
    assert response.status_code == 201
    assert response.json["index"] == 1
    assert control.applied == [fault]


def test_a_fault_the_control_refuses_is_a_400_with_its_reason(
        client: tuple[flask.testing.FlaskClient, SafeChaos]) -> None:
    c, control = client
    control.refuse = "'storage' has no provider faults (it is a real S3 server); use a toxic or down"
    response = c.post(f"{PREFIX}/api/chaos/faults", json={"target": "storage", "provider": {"kind": "error"}})
    assert response.status_code == 400
    assert response.json == {"error": control.refuse}
    assert control.applied == []


@pytest.mark.parametrize(("body", "problem"), [
    ('{"target": "llm", ', "body is not JSON"),
    ("", "empty body"),
    ('["llm"]', "a fault is a JSON object, not list"),
])
def test_malformed_bodies_are_a_400_naming_the_problem(client: tuple[flask.testing.FlaskClient, SafeChaos],
                                                       body: str, problem: str) -> None:
    c, control = client
    response = c.post(f"{PREFIX}/api/chaos/faults", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"].startswith(problem)
    assert control.applied == []


def test_an_unexpected_failure_is_a_500_with_the_reason_not_a_crash(voice: VoiceStats) -> None:
    class Broken(FakeChaos):
        def apply(self, fault: dict[str, Any]) -> dict[str, Any]:
            raise ConnectionRefusedError("toxiproxy is not answering")

    app = flask.Flask(__name__)
    install(app, stats=voice.snapshot, chaos=Broken())
    response = app.test_client().post(f"{PREFIX}/api/chaos/faults", json={"target": "llm", "down": True})
    assert response.status_code == 500
    assert response.json == {"error": "ConnectionRefusedError: toxiproxy is not answering"}


def test_remove_reaches_the_control_and_unknown_index_is_404(
        client: tuple[flask.testing.FlaskClient, SafeChaos]) -> None:
    c, control = client
    response = c.delete(f"{PREFIX}/api/chaos/faults/0")
    assert response.status_code == 200
    assert response.json["removed_at_s"] == 12.0
    assert control.removed == [0]
    response = c.delete(f"{PREFIX}/api/chaos/faults/7")
    assert response.status_code == 404
    assert response.json == {"error": "no fault window 7"}
    assert c.delete(f"{PREFIX}/api/chaos/faults/x").status_code == 404  # not an index: no such route


def test_without_a_chaos_control_the_chaos_routes_say_so(voice: VoiceStats) -> None:
    app = flask.Flask(__name__)
    install(app, stats=voice.snapshot, chaos=None)
    c = app.test_client()
    for response in (c.get(f"{PREFIX}/api/chaos"), c.post(f"{PREFIX}/api/chaos/faults", json={"target": "llm"}),
                     c.delete(f"{PREFIX}/api/chaos/faults/0")):
        assert response.status_code == 404
        assert response.json == {"error": "no chaos control in this process"}
    assert c.get(f"{PREFIX}/api/voice").status_code == 200


def test_every_preset_is_a_valid_fault_and_every_dependency_has_some() -> None:
    all_presets = presets()
    for preset in all_presets:
        fault = Fault.model_validate(preset["fault"])
        assert fault.target == preset["target"]
        assert fault.provider is None or fault.target in PROVIDER_FAULT_TARGETS
    for target in DEPENDENCIES:
        labels = [p["label"] for p in all_presets if p["target"] == target]
        assert "down" in labels and "latency 500 ms ± 100" in labels
        assert len(labels) == len(set(labels))
        assert ("429 rate limit" in labels) == (target in PROVIDER_FAULT_TARGETS)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)


def test_page_is_served_and_references_only_local_assets(
        client: tuple[flask.testing.FlaskClient, SafeChaos]) -> None:
    c, _ = client
    assert c.get(PREFIX).status_code in (301, 308)  # to the trailing slash, so relative assets resolve
    response = c.get(f"{PREFIX}/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert 'data-locust="no"' in response.text  # no Locust UI on this app: no load controls
    parser = _Refs()
    parser.feed(response.text)
    assets = [r for r in parser.refs if not r.startswith("#") and r != "../"]
    assert sorted(assets) == ["static/app.css", "static/app.js"]
    for asset in assets:
        served = c.get(f"{PREFIX}/{asset}")
        assert served.status_code == 200
        text = served.get_data(as_text=True)
        assert not re.search(r"https?://|//cdn|@import", text), f"{asset} reaches for the network"


# --- Locust's own UI, duck-typed --------------------------------------------------------------------------------------


class FakeWebUI:
    def __init__(self) -> None:
        self.template_args: dict[str, Any] = {"state": "ready"}


def locust_like_app() -> flask.Flask:
    """The two Locust routes the wiring extends, with Locust's shapes; /stats/requests returns one memoized response
    object, as Locust's @memoize does."""
    app = flask.Flask(__name__)
    cached: dict[str, flask.Response] = {}

    @app.get("/")
    def index() -> str:
        return "<!doctype html><html><body><div id=\"root\"></div><script>window.templateArgs = {}</script></body>" \
               "</html>"

    @app.get("/stats/requests")
    def request_stats() -> flask.Response:
        if "r" not in cached:
            cached["r"] = flask.jsonify({"stats": [], "errors": [], "state": "running", "user_count": 3,
                                         "extended_stats": [{"key": "someone-else", "data": [{"x": 1}]}]})
        return cached["r"]

    return app


def test_locust_gets_two_tabs_without_tables_and_its_index_one_link_and_one_script(voice: VoiceStats,
                                                                                    chaos: FakeChaos) -> None:
    app = locust_like_app()
    web_ui = FakeWebUI()
    install(app, stats=voice.snapshot, chaos=chaos, web_ui=web_ui)
    tabs = web_ui.template_args["extended_tabs"]
    assert [(t["key"], t["title"]) for t in tabs] == [(VOICE_TAB, "Voice"), (CHAOS_TAB, "Chaos")]
    # no table of Locust's for our keys: Locust then draws nothing in the tab and the script fills it
    assert "extended_tables" not in web_ui.template_args
    assert web_ui.template_args["state"] == "ready"

    c = app.test_client()
    for _ in range(2):  # a second page load is extended once, as the first
        text = c.get("/").get_data(as_text=True)
        assert text.count(LINK_ID) == 1 and text.count(TABS_SCRIPT_ID) == 1
    link = re.search(rf'<a id="{LINK_ID}" href="([^"]+)"[^>]*>([^<]+)</a>', text)
    assert link is not None and link.groups() == (f"{PREFIX}/", "Voice &amp; Chaos ↗")
    script = re.search(rf'<script id="{TABS_SCRIPT_ID}" src="([^"]+)" data-page="([^"]+)" '
                       r'data-panels="([^"]+)"></script></body>', text)
    assert script is not None
    src, page, panels = script.groups()
    assert (src, page) == (f"{PREFIX}/static/locust-tabs.js", f"{PREFIX}/")
    assert json.loads(html.unescape(panels)) == {VOICE_TAB: "voice", CHAOS_TAB: "chaos"}
    assert c.get(src).status_code == 200
    # every panel the script may show is a section of the page
    page_html = c.get(page).get_data(as_text=True)
    assert all(f'<section id="{panel}"' in page_html for panel in json.loads(html.unescape(panels)).values())
    # Locust's own JSON is left alone
    assert c.get("/stats/requests").json["extended_stats"] == [{"key": "someone-else", "data": [{"x": 1}]}]


def test_the_tabs_script_and_the_page_know_the_embedded_mode() -> None:
    script = (STATIC / "locust-tabs.js").read_text(encoding="utf-8")
    assert "?embed=1#" in script and 'get("tab")' in script
    assert 'has("embed")' in (STATIC / "app.js").read_text(encoding="utf-8")


def test_a_failing_stats_callable_never_breaks_locusts_own_json(chaos: FakeChaos) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no stats yet")

    app = locust_like_app()
    install(app, stats=broken, chaos=chaos, web_ui=FakeWebUI())
    response = app.test_client().get("/stats/requests")
    assert response.status_code == 200
    assert response.json["user_count"] == 3


def test_locust_login_guards_our_routes_too(voice: VoiceStats, chaos: FakeChaos) -> None:
    class LoginUI(FakeWebUI):
        def auth_required_if_enabled(self, view: Any) -> Any:
            def denied(*args: Any, **kwargs: Any) -> tuple[str, int]:
                return "login required", 401
            return denied

    app = locust_like_app()
    install(app, stats=voice.snapshot, chaos=chaos, web_ui=LoginUI())
    c = app.test_client()
    for path in ("/", "/api/voice", "/api/chaos"):
        assert c.get(f"{PREFIX}{path}").status_code == 401
    assert c.post(f"{PREFIX}/api/chaos/faults", json={"target": "llm", "down": True}).status_code == 401
    assert chaos.applied == []


def test_page_finds_locust_under_its_web_base_path(voice: VoiceStats) -> None:
    app = flask.Flask(__name__)
    app.register_blueprint(flask.Blueprint("locust", __name__, url_prefix="/load"))
    install(app, stats=voice.snapshot, chaos=None)
    text = app.test_client().get(f"{PREFIX}/").get_data(as_text=True)
    assert 'data-locust-base="/load"' in text and 'data-locust="yes"' in text


def test_wiring_matches_locusts_real_web_ui(voice: VoiceStats, chaos: FakeChaos,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The same wiring on Locust 2.47's WebUI: its endpoint names, its memoized /stats/requests, its index page and
    the /swarm form fields the page posts."""
    if os.environ.get("LOCUST_SKIP_MONKEY_PATCH") != "1":
        pytest.skip("importing locust here would monkey-patch the test process (tests/conftest.py sets the guard)")
    from locust import User, task
    from locust.env import Environment

    class Caller(User):
        @task
        def call(self) -> None:
            pass

    monkeypatch.setattr("sys.argv", ["locust"])  # its UI parses the command line for extra options: not pytest's
    env = Environment(user_classes=[Caller])
    env.create_local_runner()
    try:
        web_ui = env.create_web_ui(host="127.0.0.1", port=0, delayed_start=True)
        install(web_ui.app, stats=voice.snapshot, chaos=chaos, web_ui=web_ui)
        c = web_ui.app.test_client()
        index = c.get("/").get_data(as_text=True)
        assert index.count(LINK_ID) == 1 and index.count(TABS_SCRIPT_ID) == 1
        assert '"extended_tabs"' in index and VOICE_TAB in index and CHAOS_TAB in index
        assert c.get("/stats/requests").status_code == 200
        page = c.get(f"{PREFIX}/").get_data(as_text=True)
        assert 'data-locust="yes"' in page and 'data-locust-base=""' in page
        started = c.post("/swarm", data={"user_count": "0", "spawn_rate": "1"}).json
        assert started["success"] is True, started
        assert c.post("/stop").json["success"] is True
    finally:
        env.runner.quit()


# --- the page's JavaScript, in headless Chromium against the fake -----------------------------------------------------

_FAKE_FETCH = """<script>
// the server, replaced: canned answers from the real routes (taken with Flask's test client), every call recorded
window.voicechaosErrors = [];
window.addEventListener("error", function (e) { window.voicechaosErrors.push(String(e.message)); });
window.addEventListener("unhandledrejection", function (e) { window.voicechaosErrors.push(String(e.reason)); });
var ANSWERS = __ANSWERS__;
var calls = [];
window.fetch = function (url, options) {
  var method = (options && options.method) || "GET";
  var body = options && options.body ? String(options.body) : "";
  calls.push(method + " " + url + (body ? " " + body : ""));
  var answer = ANSWERS[method + " " + url] || {status: 404, body: {error: "not faked: " + method + " " + url}};
  return Promise.resolve({ok: answer.status < 300, status: answer.status,
                          text: function () { return Promise.resolve(JSON.stringify(answer.body)); }});
};
window.addEventListener("load", function () {
  setTimeout(function () {  // click the first one-click fault of the first dependency, then Stop
    document.querySelector("#dependencies td:last-child button").click();
    document.getElementById("stop").click();
  }, 2000);
  setTimeout(function () {
    var pre = document.createElement("pre");
    pre.id = "probe";
    pre.textContent = JSON.stringify({errors: window.voicechaosErrors, calls: calls});
    document.body.appendChild(pre);
  }, 4000);
});
</script>
"""


def _probe(dom: str) -> dict[str, Any]:
    import html as html_module

    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found is not None, "the probe did not run: the page's script may have stopped"
    return json.loads(html_module.unescape(found.group(1)))


def test_page_script_runs_in_chromium(tmp_path: Path, voice: VoiceStats) -> None:
    import shutil

    from harness.load.webui import STATIC
    from tests.chromium import dump_dom, find_chromium, table_rows

    if find_chromium() is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it: apt-get install chromium)")
    voice.lateness("w1", {"bin_s": 0.0001, "bins": [[80, 1000]], "overflow": 0, "total": 1000, "maximum": 0.008,
                          "sum": 8.0})  # every frame 8 ms late: invalid
    control = SafeChaos()
    app = flask.Flask(__name__)
    app.register_blueprint(flask.Blueprint("locust", __name__))  # Locust is "there": the load controls show
    install(app, stats=voice.snapshot, chaos=control)
    c = app.test_client()
    answers = {
        "GET api/voice": {"status": 200, "body": c.get(f"{PREFIX}/api/voice").json},
        "GET api/chaos": {"status": 200, "body": c.get(f"{PREFIX}/api/chaos").json},
        "POST api/chaos/faults": {"status": 201, "body": {"index": 1, "label": "stt: +500 ms ± 100"}},
        "GET /stats/requests": {"status": 200, "body": {"state": "running", "user_count": 3}},
        "POST /stop": {"status": 200, "body": {"success": True, "message": "Test stopped"}},
    }
    page = c.get(f"{PREFIX}/").get_data(as_text=True)
    page = page.replace('<script src="static/app.js">',
                        _FAKE_FETCH.replace("__ANSWERS__", json.dumps(answers)) + '<script src="static/app.js">')
    shutil.copytree(STATIC, tmp_path / "static", ignore=shutil.ignore_patterns("index.html"))
    (tmp_path / "index.html").write_text(page, encoding="utf-8")

    dom = dump_dom(tmp_path / "index.html")
    probe = _probe(dom)
    assert probe["errors"] == []
    assert "GET api/voice" in probe["calls"] and "GET api/chaos" in probe["calls"]
    posted = [call for call in probe["calls"] if call.startswith("POST api/chaos/faults ")]
    assert len(posted) == 1
    assert json.loads(posted[0].split(" ", 2)[2]) == presets()[0]["fault"]  # stt's first preset, no duration
    assert "POST /stop" in probe["calls"]

    assert ["p95", "640 ms", "640 ms"] in table_rows(dom, "latency-rows")
    assert re.search(r'<div id="invalid" class="banner">Run invalid: the harness, not the agent', dom)
    assert re.search(r'<span id="active-calls">1</span>', dom)
    assert re.search(r'<span id="load-state">state: running, 3 calls</span>', dom)
    dependencies = table_rows(dom, "dependencies")
    assert [row[0] for row in dependencies] == ["stt proxy stt", "llm proxy llm", "storage proxy storage"]
    assert "#0 llm rate-limited" in dependencies[1][1]
    faults = table_rows(dom, "faults")
    assert faults[0][:4] == ["0", "llm rate-limited", "provider on llm", "3.0 s"]
