"""Shared fixtures: offline mode, configs, running servers, a websocket client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from importlib.metadata import entry_points

import pytest
from websockets.asyncio.client import connect

from assistant.config import Config
from assistant.server import AssistantServer, serve_app
from assistant.testing.server import Client
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue
from tests.services import PostgresServer

# The installed kit's fixtures (assistant_server, assistant_client...) load through their pytest11 entry
# point; in a checkout whose installed metadata predates them, load them here.
if not any(ep.value == "assistant.testing.fixtures" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["assistant.testing.fixtures"]

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = REPO / ".cache" / "models"  # shared by test runs so offline packs convert once


WITH_BUILTIN_TOOLS = {"deny": ["rapid_ocr", "clip_image", "imagenet_labels"]}
"""`plugins=` for make_config: the default deny list without `builtin_tools`."""


def make_config(tmp_path: Path, **tables: dict[str, Any]) -> Config:
    """A config on port 0 with a database under tmp_path, fake dialogue engine, no ASR, no speech out; tables overridden.

    The built-in modalities (OCR, ImageNet labels, zero-shot labels) are denied so that core tests start fast and see
    only the modalities they register; tests of those plugins set `plugins={"deny": []}`. The built-in tools and their
    fast path are denied too, so core tests see only the tools and routers they register (`WITH_BUILTIN_TOOLS`).
    """
    data: dict[str, Any] = {
        "server": {"port": 0, "shutdown_grace_s": 5},
        "store": {"url": f"sqlite:///{tmp_path / 'assistant.db'}"},
        "models": {"cache_dir": str(MODEL_CACHE)},
        "engines": {"dialogue": "fake", "asr": "", "speech_synthesizer": ""},
        "plugins": {"deny": ["rapid_ocr", "clip_image", "imagenet_labels", "builtin_tools"]},
    }
    for name, table in tables.items():
        data[name] = {**data.get(name, {}), **table}
    return Config.from_dict(data, base_dir=tmp_path)


@pytest.fixture
def engine() -> ScriptedDialogue:
    """The fake dialogue engine the `server` fixture serves."""
    return ScriptedDialogue()


@pytest.fixture
async def start_server(tmp_path):
    """Factory: start a real server on port 0; every server started is shut down after the test."""
    servers: list[AssistantServer] = []

    async def start(config: Config | None = None, plugins: tuple[Any, ...] = ()) -> AssistantServer:
        server = await serve_app(config or make_config(tmp_path), plugins)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if not server.stopped:
            await server.shutdown(grace_s=0)


@pytest.fixture
async def server(start_server, engine):
    """A running server whose dialogue engine is the `engine` fixture."""
    return await start_server(plugins=(FakeEnginesPlugin(engine),))


@pytest.fixture
def connect_client():
    """Factory: an async context manager yielding a Client connected to a server's /ws."""

    class _Connect:
        def __init__(self, server: AssistantServer, **kwargs: Any) -> None:
            self.url = f"ws://127.0.0.1:{server.port}/ws"
            self.kwargs = kwargs

        async def __aenter__(self) -> Client:
            self.cm = connect(self.url, **self.kwargs)
            return Client(await self.cm.__aenter__())

        async def __aexit__(self, *exc: Any) -> None:
            await self.cm.__aexit__(*exc)

    return _Connect


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server (Debian's package, temporary folder, loopback port) for the whole session."""
    try:
        server = PostgresServer().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty PostgreSQL database (`postgresql+psycopg://...`), dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh database URL, once for SQLite (a file in a folder not made yet) and once for the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """Folder of a tiny random-weight Stable Diffusion pipeline (64x64 by default)."""
    from tests.tiny_models import build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_taesd(tmp_path_factory) -> Path:
    """Folder of a tiny random AutoencoderTiny preview decoder for `tiny_sd`."""
    from tests.tiny_models import build_tiny_preview_decoder

    return build_tiny_preview_decoder(tmp_path_factory.mktemp("taesd") / "tiny-taesd")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """Folder of a tiny random-weight CLIP with its processor (24-float vectors)."""
    from tests.tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    """Folder of a tiny random-weight SigLIP with a sentencepiece tokenizer (32-float vectors)."""
    from tests.tiny_models import build_tiny_siglip

    return build_tiny_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    """Folder of a tiny random-weight LLaVA with its processor."""
    from tests.tiny_models import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "tiny-llava")


@pytest.fixture(scope="session")
def event_loop_policy():
    """Async tests run on uvloop, the event loop `assistant serve` runs on by default (`[server] event_loop`)."""
    import uvloop

    return uvloop.EventLoopPolicy()
