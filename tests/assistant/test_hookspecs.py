"""Every hook is documented in docs/plugins.md and tested here (a `test_hook_<name>` per hook)."""

from __future__ import annotations

import re

import pytest

from pydantic import BaseModel, ConfigDict, Field

from assistant import ToolContext, hookimpl
from assistant.app import App
from assistant.config import ConfigError
from assistant.models import ModelSource, NotHere
from assistant.plugins import PluginError, build_plugin_manager
from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

HOOK_NAMES = sorted(name for name in dir(build_plugin_manager(make_config(REPO)).hook) if not name.startswith("_"))
DOCS = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")


def test_there_are_hooks():
    """The hook list is not empty (so the meta-tests below cannot pass vacuously)."""
    assert {"register_engines", "register_model_sources", "startup", "shutdown"} <= set(HOOK_NAMES)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_plugin_hooks_are_documented(hook):
    """docs/plugins.md has a section for the hook showing its signature."""
    assert re.search(rf"^### `{hook}\(", DOCS, re.MULTILINE), f"hook {hook} is not documented in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_plugin_hooks_have_tests(hook):
    """This module defines a test named test_hook_<hook>..."""
    assert any(name.startswith(f"test_hook_{hook}") for name in globals()), f"hook {hook} has no test_hook_{hook}* test"


def test_hook_register_engines_adds_a_selectable_engine(tmp_path):
    """An engine registered by a plugin is built when [engines] selects it, and listed under its plugin."""
    engine = ScriptedDialogue()
    app = App.prepare(make_config(tmp_path), [FakeEnginesPlugin(engine)])
    assert app.registrations.engines[("dialogue", "fake")].plugin == "fake_engines"
    assert app.build_engine("dialogue", "fake") is engine
    with pytest.raises(PluginError, match="no such dialogue engine"):
        app.build_engine("dialogue", "missing")


def test_hook_register_engines_rejects_duplicates_unknown_roles_and_wrong_types(tmp_path):
    """Duplicate names, unknown roles and factories returning the wrong type stop startup with a clear error."""
    config = make_config(tmp_path)
    first, second = FakeEnginesPlugin(ScriptedDialogue()), FakeEnginesPlugin(ScriptedDialogue())
    with pytest.raises(PluginError, match="already registered"):
        App.prepare(config, [first, second])
    second.__name__ = "other_fake_engines"
    with pytest.raises(PluginError, match="dialogue engine 'fake' registered twice"):
        App.prepare(config, [first, second])

    class OddRole:
        @hookimpl
        def register_engines(self, register):
            register("smell", "nose", lambda app: None)

    with pytest.raises(PluginError, match="unknown role 'smell'"):
        App.prepare(config, [OddRole()])

    class WrongType:
        @hookimpl
        def register_engines(self, register):
            register("dialogue", "fake", lambda app: object())

    with pytest.raises(PluginError, match="is not a DialogueEngine"):
        App.prepare(config, [WrongType()]).build_engine("dialogue", "fake")


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine_id: str = "fake:configured"
    delay_s: float = Field(0.0, ge=0)


class ConfiguredEngines:
    """Registers a dialogue engine built from its validated settings, as a third-party plugin would."""

    __name__ = "configured"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @hookimpl
    def register_engines(self, register):
        def factory(app, settings):
            self.calls.append(("factory", settings))
            return ScriptedDialogue(engine_id=settings.engine_id, delay_s=settings.delay_s)

        def model_name(app, settings):
            self.calls.append(("model_name", settings))
            return settings.engine_id

        register("dialogue", "configured", factory, settings=EchoSettings, model_name=model_name)
        register("dialogue", "plain", lambda app: ScriptedDialogue(engine_id="fake:plain"))


def test_hook_register_engines_hands_the_validated_settings_to_the_factory(tmp_path):
    """With settings=, the plugin's table is validated once at startup and passed as factory(app, settings)."""
    plugin = ConfiguredEngines()
    app = App.prepare(make_config(tmp_path, plugins={"configured": {"engine_id": "fake:from-config"}}), [plugin])
    settings = app.plugin_settings("configured")
    assert settings == EchoSettings(engine_id="fake:from-config") and plugin.calls == []
    assert app.build_engine("dialogue", "configured").id == "fake:from-config"
    assert app.registrations.engines[("dialogue", "configured")].configured_model(app) == "fake:from-config"
    assert plugin.calls == [("factory", settings), ("model_name", settings)], "the very object validated at startup"
    assert app.build_engine("dialogue", "plain").id == "fake:plain", "without settings= the factory gets the app alone"
    assert App.prepare(make_config(tmp_path), [ConfiguredEngines()]).plugin_settings("configured") == EchoSettings()
    with pytest.raises(LookupError, match="'fake_engines' registered no settings model"):
        App.prepare(make_config(tmp_path), [FakeEnginesPlugin(ScriptedDialogue())]).plugin_settings("fake_engines")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"delay_s": -1}, "invalid configuration: plugins.configured.delay_s: Input should be greater than or equal to 0"),
        ({"engine_idd": "x"}, "invalid configuration: plugins.configured.engine_idd: Extra inputs are not permitted"),
    ],
)
def test_hook_register_engines_rejects_invalid_settings_at_startup(tmp_path, table, message):
    """A bad [plugins.<name>] table stops App.prepare with one line naming the dotted key, engine selected or not."""
    with pytest.raises(ConfigError) as err:
        App.prepare(make_config(tmp_path, plugins={"configured": table}), [ConfiguredEngines()])
    assert str(err.value) == message


def test_hook_register_engines_rejects_bad_settings_models(tmp_path):
    """settings= must be a pydantic model class, and one plugin has one settings model."""

    class NotAModel:
        __name__ = "not_a_model"

        @hookimpl
        def register_engines(self, register):
            register("dialogue", "x", lambda app, settings: None, settings=dict)

    with pytest.raises(PluginError, match="'not_a_model': settings= must be a pydantic model class"):
        App.prepare(make_config(tmp_path), [NotAModel()])

    class Other(BaseModel):
        pass

    class TwoModels:
        __name__ = "two_models"

        @hookimpl
        def register_engines(self, register):
            register("dialogue", "x", lambda app, settings: None, settings=EchoSettings)

        @hookimpl
        def register_modalities(self, register):
            from tests.fakes import ColourNamer

            register("colour", ColourNamer(), settings=Other)

    with pytest.raises(PluginError, match="'two_models' declared two settings models: EchoSettings and Other"):
        App.prepare(make_config(tmp_path), [TwoModels()])


class Shelf(ModelSource):
    def __init__(self, path):
        self.path = path

    def resolve(self, name, cache_dir):
        if name != "shelf-model":
            raise NotHere("only knows shelf-model")
        return self.path


def test_hook_register_model_sources_resolves_names_before_the_builtins(tmp_path):
    """A plugin's model source answers before the trylast built-ins; misses list every source tried."""

    class ShelfPlugin:
        @hookimpl
        def register_model_sources(self, register):
            register("shelf", Shelf(tmp_path))

    app = App.prepare(make_config(tmp_path), [ShelfPlugin()])
    names = [s.name for s in app.registrations.model_sources]
    assert names.index("shelf") < names.index("local_path") < names.index("huggingface_hub")
    assert app.models.resolve("shelf-model") == tmp_path
    from assistant.models import ModelNotFound

    with pytest.raises(ModelNotFound) as err:
        app.models.resolve("no-such-model")
    message = str(err.value)
    for source in names:
        assert f"- {source}:" in message
    assert "only knows shelf-model" in message and "Fix:" in message

    class Twice:
        @hookimpl
        def register_model_sources(self, register):
            register("shelf", Shelf(tmp_path))

    with pytest.raises(PluginError, match="registered twice"):
        App.prepare(make_config(tmp_path), [ShelfPlugin(), Twice()])


class Lifecycle:
    def __init__(self, log, fail_shutdown=False):
        self.log = log
        self.fail_shutdown = fail_shutdown

    @hookimpl
    async def startup(self, app):
        self.log.append(("startup", app.engines["dialogue"].id))

    @hookimpl
    def shutdown(self, app):
        self.log.append(("shutdown", bool(app.engines)))
        if self.fail_shutdown:
            raise RuntimeError("boom")


async def test_hook_startup_runs_after_engines_load_and_is_awaited(tmp_path):
    """startup(app) runs once engines are loaded; an async impl is awaited."""
    log: list = []
    app = await App.start(make_config(tmp_path), [FakeEnginesPlugin(ScriptedDialogue()), Lifecycle(log)])
    assert log == [("startup", "fake:scripted")]
    await app.stop()


async def test_hook_shutdown_runs_before_engines_close_and_errors_do_not_stop_others(tmp_path):
    """shutdown(app) sees the engines still loaded; one failing impl does not skip the others."""
    log: list = []
    engine = ScriptedDialogue()
    first, second = Lifecycle(log, fail_shutdown=True), Lifecycle(log, fail_shutdown=True)
    first.__name__, second.__name__ = "first", "second"
    app = await App.start(make_config(tmp_path), [FakeEnginesPlugin(engine), first, second])
    await app.stop()
    assert log.count(("shutdown", True)) == 2 and engine.closed


def test_hook_register_turn_routers_orders_routers_and_rejects_duplicates(tmp_path):
    """A plugin's router is asked before the trylast keyword router; duplicate names stop startup."""
    from assistant import ImageRoute, TurnRouter
    from assistant.routes import first_route

    class Emoji(TurnRouter):
        def route(self, text):
            return ImageRoute(text.removeprefix("🎨").strip(), "on it") if text.startswith("🎨") else None

    class EmojiPlugin:
        @hookimpl
        def register_turn_routers(self, register):
            register("emoji", Emoji())

    app = App.prepare(make_config(tmp_path), [EmojiPlugin()])
    assert [r.name for r in app.registrations.routers] == ["emoji", "keyword_image"]
    assert first_route(app.registrations.routers, "🎨 a cat") == ImageRoute("a cat", "on it")
    assert first_route(app.registrations.routers, "draw a dog").prompt == "a dog"
    assert first_route(app.registrations.routers, "hello there") is None

    class Again:
        __name__ = "again"

        @hookimpl
        def register_turn_routers(self, register):
            register("emoji", Emoji())

    with pytest.raises(PluginError, match="turn router 'emoji' registered twice"):
        App.prepare(make_config(tmp_path), [EmojiPlugin(), Again()])

    class NotARouter:
        __name__ = "not_a_router"

        @hookimpl
        def register_turn_routers(self, register):
            register("bad", object())

    with pytest.raises(PluginError, match="not an assistant.TurnRouter"):
        App.prepare(make_config(tmp_path), [NotARouter()])


def test_hook_register_tools_adds_functions_and_toolboxes_and_rejects_duplicates(tmp_path):
    """Functions and toolbox methods become named tools with schemas from their hints; a duplicate name stops startup."""

    def shout(text: str, times: int = 1, ctx: ToolContext | None = None) -> str:
        """Shout some text.

        Args:
            text: what to shout
            times: how many times
        """
        return text.upper() * times

    class Lamp:
        def switch(self, on: bool) -> str:
            """Switch the lamp.

            Args:
                on: whether the lamp should be on
            """
            return "ok"

    class ToolPlugin:
        __name__ = "tool_plugin"

        @hookimpl
        def register_tools(self, register):
            register(shout, timeout_s=2)
            register(Lamp(), requires_confirmation=True)

    app = App.prepare(make_config(tmp_path), [ToolPlugin()])
    assert list(app.tools) == ["shout", "lamp_switch"]
    shout_tool = app.tools["shout"]
    assert shout_tool.description == "Shout some text." and shout_tool.timeout_s == 2 and shout_tool.plugin == "tool_plugin"
    assert shout_tool.parameters["properties"]["text"] == {"type": "string", "description": "what to shout"}
    assert shout_tool.parameters["required"] == ["text"] and "ctx" not in shout_tool.parameters["properties"]
    assert app.tools["lamp_switch"].requires_confirmation
    assert app.tools["lamp_switch"].spec().as_function()["function"]["parameters"]["properties"]["on"]["type"] == "boolean"

    class Again:
        __name__ = "again"

        @hookimpl
        def register_tools(self, register):
            register(shout)

    with pytest.raises(PluginError, match="tool 'shout' registered twice: by 'again' and by 'tool_plugin'"):
        App.prepare(make_config(tmp_path), [ToolPlugin(), Again()])

    def undocumented(x: int) -> int:
        return x

    class Bad:
        __name__ = "bad"

        @hookimpl
        def register_tools(self, register):
            register(undocumented)

    with pytest.raises(PluginError, match="'undocumented': the function has no docstring"):
        App.prepare(make_config(tmp_path), [Bad()])


async def test_hook_register_modalities_loads_them_in_order_for_text_engines_only(tmp_path):
    """Modalities are listed in hook call order, loaded only for a text-only dialogue engine, and may sit out; duplicates and non-modalities stop startup."""
    from assistant import Modality
    from tests.fakes import ColourNamer

    class SitsOut(Modality):
        def load(self, app):
            return False

        def describe(self, image):
            raise AssertionError("never asked")

    plugin = FakeEnginesPlugin(ScriptedDialogue(), modalities={"colour": ColourNamer(), "absent": SitsOut()})
    app = await App.start(make_config(tmp_path), [plugin])
    try:
        assert [(m.name, m.plugin) for m in app.registrations.modalities] == [("colour", "fake_engines"), ("absent", "fake_engines")]
        assert [m.name for m in app.modalities] == ["colour"]
    finally:
        await app.stop()
    vlm = FakeEnginesPlugin(ScriptedDialogue(accepts_images=True), modalities={"colour": ColourNamer()})
    app = await App.start(make_config(tmp_path), [vlm])
    try:
        assert app.modalities == [], "a vision-language engine sees images itself"
    finally:
        await app.stop()

    class Again:
        __name__ = "again"

        @hookimpl
        def register_modalities(self, register):
            register("colour", ColourNamer())

    with pytest.raises(PluginError, match="modality 'colour' registered twice"):
        App.prepare(make_config(tmp_path), [plugin, Again()])

    class NotAModality:
        __name__ = "not_a_modality"

        @hookimpl
        def register_modalities(self, register):
            register("bad", lambda image: "text")

    with pytest.raises(PluginError, match="not an assistant.Modality"):
        App.prepare(make_config(tmp_path), [NotAModality()])


async def test_hook_register_part_types_adds_a_loaded_part_type_with_its_settings(tmp_path):
    """A part type registered with settings= is listed under its plugin, loaded with its validated table, and closed at stop."""
    from assistant import DecodedPart, PartType

    class ShoutSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        loud: bool = False

    class Shout(PartType):
        name = "shout"
        mimes = ("text/plain",)

        def load(self, app):
            self.settings = app.plugin_settings("shouts")
            return True

        def decode(self, data, mime, options, limits):
            text = data.decode()
            return DecodedPart(text=text.upper() if self.settings.loud else text)

        def close(self):
            self.closed = True

    class ShoutPlugin:
        __name__ = "shouts"

        @hookimpl
        def register_part_types(self, register):
            register(Shout(), settings=ShoutSettings)

    config = make_config(tmp_path, plugins={"shouts": {"loud": True}})
    app = await App.start(config, [FakeEnginesPlugin(ScriptedDialogue()), ShoutPlugin()])
    part_type = app.part_types["shout"].part_type
    try:
        assert [(p.name, p.plugin) for p in app.registrations.part_types] == [("shout", "shouts")]
        assert part_type.decode(b"hi", None, None, None).text == "HI"
    finally:
        await app.stop()
    assert part_type.closed and app.part_types == {}
    with pytest.raises(ConfigError, match="plugins.shouts.lound: Extra inputs are not permitted"):
        App.prepare(make_config(tmp_path, plugins={"shouts": {"lound": True}}), [ShoutPlugin()])


async def test_hook_register_modalities_with_settings_reads_them_in_load(tmp_path):
    """A modality registered with settings= finds its validated table through app.plugin_settings in load."""
    from assistant import Modality

    class LabelSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        label: str = "an image"

    class Labeller(Modality):
        def load(self, app):
            self.settings = app.plugin_settings("labeller")
            return True

        def describe(self, image):
            return self.settings.label

    class LabellerPlugin:
        __name__ = "labeller"

        @hookimpl
        def register_modalities(self, register):
            register("label", Labeller(), settings=LabelSettings)

    config = make_config(tmp_path, plugins={"labeller": {"label": "a test card"}})
    app = await App.start(config, [FakeEnginesPlugin(ScriptedDialogue()), LabellerPlugin()])
    try:
        assert [m.name for m in app.modalities] == ["label"]
        assert app.modalities[0].modality.describe(None) == "a test card"
    finally:
        await app.stop()
    with pytest.raises(ConfigError, match="plugins.labeller.lable: Extra inputs"):
        App.prepare(make_config(tmp_path, plugins={"labeller": {"lable": "x"}}), [LabellerPlugin()])
