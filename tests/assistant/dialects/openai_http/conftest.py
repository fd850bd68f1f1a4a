"""An `openai` SDK client for a running server: the only client the OpenAI dialect's tests use."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI


@pytest.fixture
def openai_client():
    """Factory: an AsyncOpenAI client for a server's /v1 (no retries, so every refusal is seen as it is)."""
    clients: list[AsyncOpenAI] = []

    def make(server, api_key: str = "unused") -> AsyncOpenAI:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=api_key, max_retries=0, timeout=120)
        clients.append(client)
        return client

    yield make
