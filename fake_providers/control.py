"""The control API every fake provider serves under ``/_chaos/`` (the contract is in
``fake_providers/FAULTS.md``): faults and limits in force, and the gate's counters.

A thin HTTP adapter over :class:`~fake_providers.gate.ProviderGate`'s verbs (``add_fault``, ``remove_fault``,
``set_limits``...): it parses, validates and answers; the gate decides. Errors are ``{"error": "<field>:
<reason>"}`` with 400 (bad body), 404 (unknown id) or 409 (id in use). These routes pass the gate untouched:
no fault, limit or counter ever applies to them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from fake_providers.faults import FaultError, parse_fault
from fake_providers.gate import CONTROL_PREFIX, DuplicateFault, ProviderGate
from fake_providers.http import describe_errors, read_json
from fake_providers.limits import Limits


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _listed(fault_id: str, fault_json: dict[str, Any]) -> dict[str, Any]:
    return {"id": fault_id, **fault_json}


class ControlApi:
    def __init__(self, gate: ProviderGate) -> None:
        self.gate = gate

    async def _body(self, request: web.Request) -> Any:
        try:
            return await read_json(request)
        except ValueError as exc:
            error = json.dumps({"error": f"(top level): {exc}"})
            raise web.HTTPBadRequest(text=error, content_type="application/json") from exc

    async def list_faults(self, request: web.Request) -> web.Response:
        faults = [_listed(i, f.describe()) for i, f in self.gate.faults.items()]
        return web.json_response({"provider": self.gate.name, "faults": faults})

    async def add_fault(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        fault_id = None
        if isinstance(body, dict) and "id" in body:
            body = dict(body)
            fault_id = body.pop("id")
            if not isinstance(fault_id, str):
                return _error(400, "id: must be a string")
        try:
            fault = parse_fault(body, self.gate.kinds)
            fault_id = self.gate.add_fault(fault, fault_id)
        except DuplicateFault as exc:
            return _error(409, str(exc))
        except FaultError as exc:
            return _error(400, str(exc))
        return web.json_response({"id": fault_id, "fault": _listed(fault_id, fault.describe())}, status=201)

    async def get_fault(self, request: web.Request) -> web.Response:
        fault_id = request.match_info["fault_id"]
        fault = self.gate.faults.get(fault_id)
        if fault is None:
            return _error(404, f"no fault {fault_id!r} on {self.gate.name}")
        return web.json_response(_listed(fault_id, fault.describe()))

    async def remove_fault(self, request: web.Request) -> web.Response:
        fault_id = request.match_info["fault_id"]
        if not self.gate.remove_fault(fault_id):
            return _error(404, f"no fault {fault_id!r} on {self.gate.name}")
        return web.json_response({"removed": [fault_id]})

    async def clear_faults(self, request: web.Request) -> web.Response:
        removed = list(self.gate.faults)
        self.gate.clear_faults()
        return web.json_response({"removed": removed})

    async def get_limits(self, request: web.Request) -> web.Response:
        limits = self.gate.limits
        return web.json_response({"limits": limits.model_dump(mode="json") if limits is not None else None})

    async def set_limits(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            limits = Limits.model_validate(body)
            self.gate.set_limits(limits)
        except ValidationError as exc:
            return _error(400, describe_errors(exc))
        except FaultError as exc:
            return _error(400, str(exc))
        return web.json_response({"limits": limits.model_dump(mode="json")})

    async def remove_limits(self, request: web.Request) -> web.Response:
        had = self.gate.limits is not None
        self.gate.set_limits(None)
        return web.json_response({"limits": None, "removed": had})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.gate.stats())

    async def routes(self, request: web.Request) -> web.Response:
        table = self.gate.routes
        body = {
            "provider": self.gate.name,
            "routes": list(table.names) if table is not None else None,
            "open_families": list(table.open_families) if table is not None else [],
            "fault_kinds": list(self.gate.kinds),
        }
        return web.json_response(body)


def add_control_routes(app: web.Application, gate: ProviderGate) -> ControlApi:
    """Serve the control API of ``gate`` on ``app`` (under ``/_chaos``)."""
    api = ControlApi(gate)
    p = CONTROL_PREFIX
    app.router.add_get(f"{p}/faults", api.list_faults)
    app.router.add_post(f"{p}/faults", api.add_fault)
    app.router.add_delete(f"{p}/faults", api.clear_faults)
    app.router.add_get(f"{p}/faults/{{fault_id}}", api.get_fault)
    app.router.add_delete(f"{p}/faults/{{fault_id}}", api.remove_fault)
    app.router.add_get(f"{p}/limits", api.get_limits)
    app.router.add_post(f"{p}/limits", api.set_limits)
    app.router.add_put(f"{p}/limits", api.set_limits)
    app.router.add_delete(f"{p}/limits", api.remove_limits)
    app.router.add_get(f"{p}/stats", api.stats)
    app.router.add_get(f"{p}/routes", api.routes)
    return api
