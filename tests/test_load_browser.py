"""The "done when" of the web UI, in a real browser: ``voicechaos ui`` started as a user starts it, then headless
Chromium (driven through the DevTools protocol) starts a load from Locust's own form, reshapes it with *Edit*, injects
a fault with a button of the Voice & Chaos page, ends that fault, and stops the load. The run folder has the calls and
the fault, applied and removed on demand.
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
_CLICK_PRESET = """(dependency, label) => { const row = Array.from(document.querySelectorAll('tr')).find(
  tr => tr.cells.length && tr.cells[0].querySelector('b') && tr.cells[0].querySelector('b').textContent === dependency);
  if (!row) return null; const b = Array.from(row.querySelectorAll('button')).find(b => b.textContent === label);
  if (b) b.click(); return b ? b.textContent : null; }"""


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

    try:
        with browser(binary) as page:
            # start, as a new user does: Locust's form, users and rate, Start
            page.goto(f"{base}/")
            _wait_for(lambda: page.js(f"({_SET})('userCount', '2')"), 30, "Locust's start form")
            assert page.js(f"({_SET})('spawnRate', '2')")
            assert page.js(f"({_CLICK})('^start$')") is not None
            _wait_for(lambda: locust_state()["user_count"] == 2, 30, "2 users running")
            # watch: replies measured on the Voice figures
            _wait_for(lambda: requests.get(f"{base}/voicechaos/api/voice", timeout=5).json()
                   ["response_latency_ms"]["run"]["count"] > 0, 90, "a reply measured")
            # reshape: Edit, 3 users, Update
            assert page.js(f"({_CLICK})('^edit$')") is not None
            _wait_for(lambda: page.js(f"({_SET})('userCount', '3')"), 10, "the edit form")
            assert page.js(f"({_CLICK})('update')") is not None
            _wait_for(lambda: locust_state()["user_count"] == 3, 30, "reshaped to 3 users")
            # a fault from the Chaos tab's buttons, then ended with its own button
            page.goto(f"{base}/voicechaos/#chaos")
            _wait_for(lambda: page.js(f"({_CLICK_PRESET})('llm', 'latency 500 ms ± 100')"), 30, "the llm preset")
            active = _wait_for(lambda: [d for d in requests.get(f"{base}/voicechaos/api/chaos", timeout=10).json()
                                     ["dependencies"] if d["name"] == "llm" and d["active"]], 30, "llm fault on")
            assert active[0]["active"][0]["on_demand"]
            _wait_for(lambda: page.js(f"({_CLICK})('^end$')"), 30, "the fault's end button")
            _wait_for(lambda: not [d for d in requests.get(f"{base}/voicechaos/api/chaos", timeout=10).json()
                                ["dependencies"] if d["active"]], 30, "the fault removed")
            # stop, from Locust's page
            page.goto(f"{base}/")
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
