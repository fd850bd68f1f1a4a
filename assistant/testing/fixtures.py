"""pytest fixtures for plugin tests, loaded by pytest wherever this package is installed (entry point `pytest11`).

- `assistant_config(**tables)`: a config on port 0 with its database under the test's tmp_path
  (see `assistant.testing.server.server_config`);
- `assistant_server(plugins, config=None, **tables)`: async; a real server on port 0 with your
  plugins registered (a module, an object, or a `(name, plugin)` pair; `plugins` is positional, so a
  `plugins={...}` keyword is the `[plugins]` table), shut down after the test;
- `assistant_client(server)`: an async context manager yielding a `Client` on the server's `/ws`.

The async fixture needs pytest-asyncio (in `asyncio_mode = "auto"`, or mark the test with
`@pytest.mark.asyncio`); without it only `assistant_config` is defined.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from assistant.config import Config


@pytest.fixture
def assistant_config(tmp_path: Path) -> Callable[..., Config]:
    """Factory: `assistant_config(engines={...}, plugins={...})`, a config for a server on port 0 under tmp_path."""
    from assistant.testing.server import server_config

    def make(**tables: dict[str, Any]) -> Config:
        return server_config(tmp_path, **tables)

    return make


@pytest.fixture
def assistant_client() -> Callable[..., Any]:
    """Factory: `async with assistant_client(server) as client:` a JSON Client on the server's websocket."""
    from assistant.testing.server import connect

    return connect


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only the synchronous fixtures then
    pass
else:

    @pytest_asyncio.fixture
    async def assistant_server(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
        """Factory: `await assistant_server([my_plugin], engines={"dialogue": "mine"})`; every server stops after the test."""
        from assistant.testing.server import server_config, start_server

        servers: list[Any] = []

        async def start(plugins: Any = (), /, config: Config | None = None, **tables: dict[str, Any]) -> Any:
            server = await start_server(config or server_config(tmp_path, **tables), plugins)
            servers.append(server)
            return server

        yield start
        for server in servers:
            if not server.stopped:
                await server.shutdown(grace_s=0)
