"""Fixtures of the core's tests: a Conversation on a real App, with no socket."""

from __future__ import annotations

import pytest

from assistant.app import App
from assistant.conversation import Conversation, open_conversation
from tests.conftest import make_config
from tests.conversations import Recorder
from tests.fakes import FakeEnginesPlugin


@pytest.fixture
async def make_conversation(tmp_path):
    """Factory: an App with the given fake engines and a new Conversation on it; the app stops after the test."""
    apps: list[App] = []

    async def make(plugin: FakeEnginesPlugin, **tables) -> tuple[Conversation, Recorder]:
        engines = {"dialogue": "fake", **{role: "fake" if engine else "" for role, engine in plugin.others.items()}}
        app = await App.start(make_config(tmp_path, engines=engines, **tables), [plugin])
        apps.append(app)
        conversation_id, _, resumed = await open_conversation(app, "local", None)
        assert not resumed
        recorder = Recorder()
        return Conversation(app, conversation_id, "local", recorder, recorder.tell), recorder

    yield make
    for app in apps:
        await app.drain(0)
        await app.stop()
