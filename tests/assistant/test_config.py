"""config.toml parsing and validation."""

from __future__ import annotations

import re

import pytest

from assistant.app import App
from assistant.config import Config, ConfigError, EnginesConfig, SchedulerConfig
from assistant.engines import ENGINE_BASES, ROLES
from tests.conftest import REPO


def test_shipped_config_toml_equals_the_builtin_defaults():
    """config.toml spells out exactly the built-in defaults, the built-in plugins' settings tables included."""
    shipped = Config.load(REPO / "config.toml")
    defaults = Config()
    for table in ("server", "store", "models", "engines", "dialogue", "images", "scheduler", "image_input", "limits", "speech"):
        assert getattr(shipped, table) == getattr(defaults, table), table
    app = App.prepare(shipped)  # validates every loaded plugin's [plugins.<name>] table with its settings model
    assert set(app.registrations.settings_models) >= {
        "faster_whisper_asr", "whisper_asr", "transformers_dialogue", "transformers_vision", "clip_image", "rapid_ocr", "diffusers_image",
    }
    for plugin, model in app.registrations.settings_models.items():
        assert shipped.plugin_config(plugin), f"config.toml has no [plugins.{plugin}] table"
        assert app.plugin_settings(plugin) == model(), plugin


def test_engine_roles_are_the_same_everywhere():
    """ENGINE_BASES is the one list of roles; [engines], docs, README and config.toml name the same ones."""
    roles = list(ENGINE_BASES)
    assert list(ROLES) == roles and all(base.role == role for role, base in ENGINE_BASES.items())
    assert list(EnginesConfig.model_fields) == roles, "EnginesConfig fields"
    assert list(SchedulerConfig().latency_classes) == roles, "[scheduler] latency_classes defaults"
    toml = (REPO / "config.toml").read_text(encoding="utf-8")
    engines_table = toml[toml.index("\n[engines]\n") :].split("\n[", 2)[1]
    assert re.findall(r"^#?\s*(\w+)\s*=", engines_table, re.M) == roles, "config.toml [engines] (set or commented out)"
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    role_line = re.search(r"^- `role`: one of (.*);$", docs, re.M)
    assert role_line and re.findall(r"`(\w+)`", role_line.group(1)) == roles, "docs/plugins.md role list"
    bases = dict((role, base) for base, role in re.findall(r"`assistant\.(\w+)` for\s+`(\w+)`", docs))
    assert bases == {role: base.__name__ for role, base in ENGINE_BASES.items()}, "docs/plugins.md base classes"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.findall(r"^\| `engines\.(\w+)`", readme, re.M) == roles, "README.md configuration reference"
    protocol = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    per_role = re.search(r"`capabilities`: per role \(([^)]*)\)", protocol)
    assert per_role and re.findall(r"`(\w+)`", per_role.group(1)) == roles, "docs/protocol.md session.started capabilities"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nprot = 1\n", "server.prot"),
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[server]\nevent_loop = 'trio'\n", "server.event_loop"),
        ("[dialogue]\nhistory_turns = -1\n", "dialogue.history_turns"),
        ("[dialogue]\ntimezone = 'Mars/Olympus'\n", "dialogue.timezone"),
        ("[plugins]\ntransformers_dialogue = 3\n", "plugins.transformers_dialogue"),
        ("[nonsense]\na = 1\n", "nonsense"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, text, key):
    """Every invalid setting fails at load with its dotted key in the message."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Config.load(path)
    assert key in str(err.value)


def test_unreadable_files_are_reported(tmp_path):
    """A missing file or broken TOML gives a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[server\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        Config.load(tmp_path / "bad.toml")


def test_relative_paths_are_anchored_at_the_config_file(tmp_path):
    """A relative SQLite path and cache dir resolve next to the config file; other URLs stay as they are."""
    (tmp_path / "c.toml").write_text('[store]\nurl = "sqlite:///data/x.db"\n[models]\ncache_dir = "cache"\n')
    config = Config.load(tmp_path / "c.toml")
    assert config.database_url == f"sqlite:///{tmp_path}/data/x.db"
    assert config.model_cache_dir == tmp_path / "cache"
    assert Config.from_dict({"store": {"url": "postgresql://u@h/db"}}).database_url == "postgresql://u@h/db"
    assert Config.from_dict({"store": {"url": "sqlite:///:memory:"}}).database_url == "sqlite:///:memory:"


def test_plugin_tables_are_kept_for_their_plugins():
    """[plugins.<name>] tables are kept as dicts until their plugin's settings model validates them; a missing one is empty."""
    config = Config.from_dict({"plugins": {"mine": {"answer": 42}}})
    assert config.plugin_config("mine") == {"answer": 42} and config.plugin_config("other") == {}


@pytest.mark.parametrize(
    ("plugin", "table", "message"),
    [
        ("transformers_dialogue", {"temperature": -1}, "plugins.transformers_dialogue.temperature: Input should be greater than or equal to 0"),
        ("transformers_dialogue", {"modle": "x"}, "plugins.transformers_dialogue.modle: Extra inputs are not permitted"),
        ("diffusers_image", {"max_steps": 0}, "plugins.diffusers_image.max_steps: Input should be greater than or equal to 1"),
        ("diffusers_image", {"default_steps": 200}, "plugins.diffusers_image: Value error, default_steps (200) is above max_steps (100)"),
        ("faster_whisper_asr", {"beam_size": 11}, "plugins.faster_whisper_asr.beam_size: Input should be less than or equal to 10"),
        ("whisper_asr", {"device": 1}, "plugins.whisper_asr.device: Input should be a valid string"),
        ("transformers_vision", {"dtype": "int4"}, "plugins.transformers_vision.dtype: Input should be"),
        ("clip_image", {"batchsize": 3}, "plugins.clip_image.batchsize: Extra inputs are not permitted"),
        ("rapid_ocr", {"min_confidence": 2}, "plugins.rapid_ocr.min_confidence: Input should be less than or equal to 1"),
    ],
)
def test_builtin_plugin_settings_are_validated_at_startup(tmp_path, plugin, table, message):
    """Each built-in plugin's table is checked by its settings model when the app is prepared: one line, dotted key."""
    config = Config.from_dict({"plugins": {plugin: table}, "store": {"url": f"sqlite:///{tmp_path}/db"}})
    with pytest.raises(ConfigError) as err:
        App.prepare(config)
    assert str(err.value).startswith(f"invalid configuration: {message}") and "\n" not in str(err.value)


def test_a_denied_plugins_table_is_not_validated():
    """A table for a plugin that is not loaded is left alone."""
    config = Config.from_dict({"plugins": {"deny": ["rapid_ocr"], "rapid_ocr": {"nonsense": True}}})
    assert "rapid_ocr" not in App.prepare(config).registrations.settings
