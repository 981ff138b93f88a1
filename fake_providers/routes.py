"""Route names: what a fault or a limit says it applies to ("only ``listen`` on Deepgram, only ``chat`` on
OpenAI"), and what a request to a fake provider is, as the gate sees it.

A route name is dotted (``speak.rest``, ``speak.ws``, ``tools.book_appointment``) so that a filter can name a
family: a filter matches a route when it is the route's name or a prefix of it ending at a dot (``speak``
matches ``speak.rest`` and ``speak.ws``; ``spe`` matches nothing). Each provider declares its names in a
:class:`RouteTable`; a filter that matches none of them is refused when the fault is added, so a typo never
silently turns a fault off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator

#: the name of a request no route of the app matched (a 404): only a filter-less fault or limit applies to it
UNMATCHED = "unmatched"


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    return value


#: ``"listen"`` or ``["speak", "listen"]`` in JSON; a tuple of filters once validated; None: every route
RouteFilter = Annotated[tuple[str, ...] | None, BeforeValidator(_one_or_many)]


def route_matches(filters: tuple[str, ...] | None, name: str) -> bool:
    """Whether a request to route ``name`` is subject to something filtered by ``filters``."""
    if filters is None:
        return True
    return any(name == f or name.startswith(f + ".") for f in filters)


@dataclass(frozen=True, slots=True)
class RouteTable:
    """The route names of one provider: ``names``, plus ``open_families`` whose members are only known per
    request (``tools`` on the CRM: ``tools.<any tool name>``)."""

    names: tuple[str, ...]
    open_families: tuple[str, ...] = ()

    def knows(self, route_filter: str) -> bool:
        """Whether ``route_filter`` can match a request of this provider."""
        if any(route_filter == n or n.startswith(route_filter + ".") for n in self.names):
            return True
        return any(route_filter == f or route_filter.startswith(f + ".") for f in self.open_families)

    def check(self, filters: Iterable[str] | None) -> str | None:
        """``None`` if every filter is known, else what is wrong (for a 400 or a config error)."""
        for route_filter in filters or ():
            if not self.knows(route_filter):
                known = ", ".join(sorted({*self.names, *self.families(), *self.open_families}))
                return f"unknown route {route_filter!r} (known: {known})"
        return None

    def families(self) -> set[str]:
        return {n.split(".")[0] for n in self.names}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the gate knows of a request when it decides how to serve it.

    ``path`` is the route's canonical path (counted per path, as before route names existed); ``name`` the
    route name faults filter on; ``model`` the model asked for, when the provider's error bodies name it.
    """

    path: str
    name: str
    model: str | None = None


#: how an app tells the gate what a request is (it may read the body: aiohttp caches it for the handler)
Describer = Callable[[web.Request], Awaitable[RequestInfo]]


def canonical_path(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "?"


def by_method_and_path(table: Mapping[tuple[str, str], str]) -> Describer:
    """A describer for apps whose route name follows from the method and the canonical path alone."""

    async def describe(request: web.Request) -> RequestInfo:
        path = canonical_path(request)
        return RequestInfo(path, table.get((request.method, path), UNMATCHED), request.query.get("model"))

    return describe
