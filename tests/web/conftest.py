"""The dashboard app in process, on the session's Redis, and a client that calls it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio

from orchestrator.settings import Settings, load_settings
from orchestrator.web.app import Dashboard

TOKEN = "a-test-token-of-some-length"


def _settings() -> Settings:
    return load_settings(backlogs=["backlog:default", "backlog:other"])


@pytest.fixture
async def dashboard(async_redis: redis.asyncio.Redis) -> Dashboard:
    return Dashboard(async_redis, _settings(), token=TOKEN, interval=0.2)


@pytest.fixture
async def client(dashboard: Dashboard) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=dashboard.app(loopback_only=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as c:
        yield c
