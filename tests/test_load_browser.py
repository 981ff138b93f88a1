"""The "done when" of the web UI, in a real browser: ``voicechaos ui`` started as a user starts it, then headless
Chromium (driven through the DevTools protocol), on Locust's own page only, starts a load from Locust's form, watches
the figures in the Voice tab, reshapes the load with *Edit*, injects a fault with a button of the Chaos tab, ends that
fault there, and stops the load. The run folder has the calls and the fault, applied and removed on demand.

``VOICECHAOS_SCREENSHOTS=DIR`` keeps a screenshot of each tab, for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from tests.chromium import find_chromium
from tests.test_load_e2e import _events, _wait_for, start_ui

pytestmark = pytest.mark.e2e

# React-controlled inputs take a value through the native setter and an input event, as typing does
_SET = """(name, value) => { const inputs = Array.from(document.querySelectorAll(`input[name=${name}]`));
  const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  inputs.forEach(el => { setter.call(el, value); el.dispatchEvent(new Event('input', {bubbles: true})); });
  return inputs.length > 0; }"""
# (every input of that name: while a load runs, Locust's page holds both its start form and the Edit dialog)
_CLICK = """(pattern, scope) => { const root = scope ? document.querySelector(scope) : document;
  const b = Array.from(root.querySelectorAll('button')).filter(b => new RegExp(pattern, 'i').test(b.textContent)).pop();
  if (b) b.click(); return b ? b.textContent : null; }"""
# inside our tab's frame (same origin, so the page can reach into it as a user's clicks do)
_FRAME = "document.querySelector('#voicechaos-tab iframe').contentDocument"
_CLICK_TAB = """(title) => { const tab = Array.from(document.querySelectorAll('[role=tab]')).find(
  t => t.textContent.trim() === title); if (tab) tab.click(); return !!tab; }"""
_FRAME_TEXT = f"""(id) => {{ const holder = document.getElementById('voicechaos-tab');
  if (!holder || holder.hidden) return null; const doc = {_FRAME}; const node = doc && doc.getElementById(id);
  return node && !node.closest('[hidden]') ? node.textContent : null; }}"""
_CLICK_PRESET = f"""(dependency, label) => {{ const doc = {_FRAME}; if (!doc) return null;
  const row = Array.from(doc.querySelectorAll('tr')).find(
  tr => tr.cells.length && tr.cells[0].querySelector('b') && tr.cells[0].querySelector('b').textContent === dependency);
  if (!row) return null; const b = Array.from(row.querySelectorAll('button')).find(b => b.textContent === label);
  if (b) b.click(); return b ? b.textContent : null; }}"""
_CLICK_END = f"""() => {{ const doc = {_FRAME};
  const b = doc && Array.from(doc.querySelectorAll('#dependencies button')).find(b => b.textContent === 'end');
  if (b) b.click(); return !!b; }}"""


class DevTools:
    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


@contextlib.contextmanager
def browser(binary: str) -> Iterator[DevTools]:
    with tempfile.TemporaryDirectory(prefix="voicechaos-chromium-") as profile:
        process = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                    "--window-size=1400,1000", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            assert process.stderr is not None
            endpoint = None
            deadline = time.monotonic() + 30
            while endpoint is None and time.monotonic() < deadline:
                line = process.stderr.readline()
                if match := re.search(r"DevTools listening on (ws://\S+)", line):
                    endpoint = match.group(1)
            assert endpoint, "chromium did not open its DevTools endpoint"
            port = re.search(r":(\d+)/", endpoint).group(1)  # type: ignore[union-attr]
            pages = requests.get(f"http://127.0.0.1:{port}/json", timeout=10).json()
            page = next(p for p in pages if p["type"] == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
                tools = DevTools(socket)
                tools.call("Page.enable")
                tools.call("Runtime.enable")
                yield tools
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_a_user_starts_reshapes_and_stops_a_load_and_injects_a_fault_in_the_browser(tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it: apt-get install chromium)")
    launcher, base, runs = start_ui(tmp_path)

    def locust_state() -> dict[str, Any]:
        return dict(requests.get(f"{base}/stats/requests", timeout=5).json())

    shots = os.environ.get("VOICECHAOS_SCREENSHOTS")

    def shoot(name: str) -> None:
        if shots:
            page.screenshot(Path(shots) / f"locust-{name}-tab.png")

    try:
        with browser(binary) as page:
            # start, as a new user does: Locust's form, users and rate, Start
            page.goto(f"{base}/")
            _wait_for(lambda: page.js(f"({_SET})('userCount', '2')"), 30, "Locust's start form")
            assert page.js(f"({_SET})('spawnRate', '2')")
            assert page.js(f"({_CLICK})('^start$')") is not None
            _wait_for(lambda: locust_state()["user_count"] == 2, 30, "2 users running")
            # watch: the Voice tab shows the live figures, from our page inside Locust's
            assert page.js(f"({_CLICK_TAB})('Voice')")
            _wait_for(lambda: (page.js(f"({_FRAME_TEXT})('latency-rows')") or "").count(" ms") >= 2, 90,
                      "reply latencies in the Voice tab")
            assert page.js(f"({_FRAME_TEXT})('active-calls')") in ("1", "2")
            assert "valid" in (page.js(f"({_FRAME_TEXT})('validity')") or "")
            shoot("voice")
            # reshape: Edit, 3 users, Update
            assert page.js(f"({_CLICK})('^edit$')") is not None
            _wait_for(lambda: page.js(f"({_SET})('userCount', '3')"), 10, "the edit form")
            assert page.js(f"({_CLICK})('update')") is not None
            _wait_for(lambda: locust_state()["user_count"] == 3, 30, "reshaped to 3 users")
            # a fault from the Chaos tab's buttons, then ended with its own button there
            assert page.js(f"({_CLICK_TAB})('Chaos')")
            _wait_for(lambda: page.js(f"({_CLICK_PRESET})('llm', 'latency 500 ms ± 100')"), 30, "the llm preset")
            active = _wait_for(lambda: [d for d in requests.get(f"{base}/voicechaos/api/chaos", timeout=10).json()
                                     ["dependencies"] if d["name"] == "llm" and d["active"]], 30, "llm fault on")
            assert active[0]["active"][0]["on_demand"]
            _wait_for(lambda: "llm: +500 ms" in (page.js(f"({_FRAME_TEXT})('dependencies')") or ""), 30,
                      "the fault shown as active in the Chaos tab")
            assert page.js(f"({_FRAME_TEXT})('voice')") is None  # the Chaos tab shows the chaos part only
            shoot("chaos")
            _wait_for(lambda: page.js(f"({_CLICK_END})()"), 30, "the fault's end button")
            _wait_for(lambda: not [d for d in requests.get(f"{base}/voicechaos/api/chaos", timeout=10).json()
                                ["dependencies"] if d["active"]], 30, "the fault removed")
            # back on Locust's own Statistics tab, ours is hidden; then stop
            assert page.js(f"({_CLICK_TAB})('Statistics')")
            _wait_for(lambda: page.js("document.getElementById('voicechaos-tab').hidden"), 10, "our tab hidden")
            _wait_for(lambda: page.js(f"({_CLICK})('^stop$')"), 30, "Locust's stop button")
            _wait_for(lambda: locust_state()["state"] in ("stopped", "cleanup"), 30, "the load stopping")
            _wait_for(lambda: locust_state()["state"] == "stopped", 90, "calls in progress finished")
    finally:
        launcher.send_signal(signal.SIGTERM)
        output, _ = launcher.communicate(timeout=180)
    [run_dir] = list(runs.iterdir())
    events = _events(run_dir)
    applied = [e for e in events if e["event"] == "fault_applied"]
    assert [(e["target"], e["on_demand"]) for e in applied] == [("llm", True)], output[-3000:]
    assert [e["because"] for e in events if e["event"] == "fault_removed"] == ["removed on demand"]
    ended = [e for e in events if e["event"] == "call_ended"]
    assert ended and all(e["outcome"] == "completed" for e in ended), output[-3000:]
    assert (run_dir / "report.html").exists()
