"""The run's control API: the launcher's side of a Locust run.

``voicechaos ui|soak`` is a plain asyncio process that owns the run exactly as ``voicechaos run`` does: the
:class:`~harness.session.RunSession` (run folder, event log, embedded stack, fault timeline, metrics sampler, report).
Locust's processes run the callers and the web UI on gevent, where the stack's subprocesses, threads and blocking
clients do not belong. They reach the run through this small HTTP API on loopback:

- ``POST /events``            ``{"events": [[name, fields], ...]}``: call and turn events, appended to the run's log;
- ``POST /load-started``      the first test started: time zero of the run (faults and sampler start);
- ``GET  /chaos``             ``{"dependencies", "faults"}``;
- ``POST /chaos/faults``      one fault (the scenario's JSON) applied now -> 201 window | 400 ``{"error"}``;
- ``DELETE /chaos/faults/i``  fault window ``i`` removed now -> 200 window | 404;
- ``POST /finish``            ``{"lateness", "extra"}``: close the run (summary, report) -> the verdict.

If the Locust master dies without ``/finish``, the launcher closes the run with what it received.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from harness.chaos.faults import Fault
from harness.run import EXIT_FAIL, EXIT_INVALID, EXIT_PASS
from harness.session import RunSession, fault_action


class FaultRefused(ValueError):
    """A fault asked for on demand that cannot be applied; the message says why."""


class RunControl:
    def __init__(self, session: RunSession) -> None:
        self.session = session
        self.calls: list[dict[str, Any]] = []
        self.events = 0
        self.closed = False
        self.summary: dict[str, Any] = {}
        self.report_line = ""

    @property
    def exit_code(self) -> int:
        verdict = self.summary.get("verdict", "fail")
        return {"pass": EXIT_PASS, "invalid": EXIT_INVALID}.get(verdict, EXIT_FAIL)

    # --- the run ------------------------------------------------------------------------------------------------------

    def record(self, name: str, fields: dict[str, Any]) -> None:
        if self.closed:
            return
        self.session.emit(name, fields)
        self.events += 1
        if name == "call_ended":
            self.calls.append(fields)

    def load_started(self) -> None:
        if not self.session.load_started and not self.closed:
            self.session.start_load()

    async def finish(self, lateness: dict[str, Any], extra: dict[str, Any] | None = None, *,
                     interrupted: str = "") -> dict[str, Any]:
        if not self.closed:
            self.closed = True
            self.session.calls_planned = len(self.calls)
            self.summary, self.report_line = await self.session.close(self.calls, lateness, interrupted=interrupted,
                                                                      extra=extra)
        return {"verdict": self.summary.get("verdict"), "verdict_reason": self.summary.get("verdict_reason"),
                "report_line": self.report_line, "exit_code": self.exit_code, "calls": len(self.calls)}

    # --- faults on demand ---------------------------------------------------------------------------------------------

    def chaos_state(self) -> dict[str, Any]:
        session = self.session
        faults = [] if session.timeline is None else [w.to_json() for w in session.timeline.windows]
        plumbing = session.plumbing
        dependencies = [] if plumbing is None else [
            {"name": name, "proxy": proxy, "provider_faults": bool(plumbing.controls.get(name)),
             "active": [f for f in faults if f["target"] == name and f["active"]]}
            for name, proxy in plumbing.proxies.items()]
        return {"dependencies": dependencies, "faults": faults}

    async def apply(self, body: Any) -> dict[str, Any]:
        session = self.session
        if session.plumbing is None:
            raise FaultRefused("this run has no fault plumbing (its target names no Toxiproxy)")
        if session.timeline is None:
            raise FaultRefused("start a load first: a fault is timed from the start of the load")
        if not isinstance(body, dict):
            raise FaultRefused("a fault is a JSON object like the entries of a scenario's faults:")
        try:
            fault = Fault.model_validate({**body, "at": 0})
        except ValidationError as exc:
            raise FaultRefused("; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'fault'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors())) from None
        if fault.target not in session.plumbing.proxies:
            raise FaultRefused(f"{fault.target!r} is not a dependency of this run; one of "
                               f"{', '.join(session.plumbing.proxies)}")
        timeline = session.timeline
        action = fault_action(len(timeline.windows), fault, session.plumbing, session.control_http)
        window = (await timeline.apply_now(fault, action)).to_json()
        if window.get("error"):
            raise FaultRefused(f"the fault could not be applied: {window['error']}")
        return window

    async def remove(self, index: int) -> dict[str, Any]:
        if self.session.timeline is None:
            raise KeyError(index)
        return (await self.session.timeline.remove(index)).to_json()

    # --- HTTP ---------------------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.post("/events", self._events), web.post("/load-started", self._load_started),
                        web.get("/chaos", self._chaos), web.post("/chaos/faults", self._apply),
                        web.delete("/chaos/faults/{index}", self._remove), web.post("/finish", self._finish)])
        return app

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"the body is not JSON: {exc}"}),
                                     content_type="application/json") from None

    async def _events(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        for name, fields in body.get("events", []):
            self.record(str(name), fields)
        return web.json_response({"events": self.events})

    async def _load_started(self, request: web.Request) -> web.Response:
        self.load_started()
        return web.json_response({"elapsed_s": self.session.elapsed()})

    async def _chaos(self, request: web.Request) -> web.Response:
        return web.json_response(self.chaos_state())

    async def _apply(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            return web.json_response(await self.apply(body), status=201)
        except FaultRefused as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _remove(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(await self.remove(int(request.match_info["index"])))
        except (KeyError, ValueError):
            return web.json_response({"error": f"no fault window {request.match_info['index']}"}, status=404)

    async def _finish(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        return web.json_response(await self.finish(body.get("lateness") or {}, body.get("extra")))
