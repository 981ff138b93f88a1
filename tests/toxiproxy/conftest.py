from __future__ import annotations

from collections.abc import AsyncIterator
from random import Random

import aiohttp
import pytest

from harness.chaos.toxiproxy import EmbeddedToxiproxy
from tests.toxiproxy.kit import Api, Upstream


@pytest.fixture
async def tp() -> AsyncIterator[EmbeddedToxiproxy]:
    async with EmbeddedToxiproxy("127.0.0.1", 0, rng=Random(7)) as server:
        yield server


@pytest.fixture
async def api(tp: EmbeddedToxiproxy) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, tp.url)


@pytest.fixture
async def echo() -> AsyncIterator[Upstream]:
    async with Upstream(echo=True) as upstream:
        yield upstream


@pytest.fixture
async def server() -> AsyncIterator[Upstream]:
    """An upstream whose side of each connection the test plays itself (``await server.accepted()``)."""
    async with Upstream(echo=False) as upstream:
        yield upstream
