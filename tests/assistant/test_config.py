"""config.toml parsing and validation."""

from __future__ import annotations

import re

import pytest

from assistant.config import Config, ConfigError, EnginesConfig, SchedulerConfig
from assistant.engines import ENGINE_BASES, ROLES
from tests.conftest import REPO


def test_shipped_config_toml_equals_the_builtin_defaults():
    """config.toml spells out exactly the built-in defaults (apart from the plugin's own table)."""
    shipped = Config.load(REPO / "config.toml")
    defaults = Config()
    for table in ("server", "store", "models", "engines", "dialogue", "images", "speech"):
        assert getattr(shipped, table) == getattr(defaults, table), table
    from assistant_plugins.transformers_dialogue import DialogueSettings

    assert DialogueSettings.model_validate(shipped.plugin_config("transformers_dialogue")) == DialogueSettings()
    from assistant_plugins.diffusers_image import ImageSettings

    assert ImageSettings.model_validate(shipped.plugin_config("diffusers_image")) == ImageSettings()
    from assistant_plugins.faster_whisper_asr import FasterWhisperSettings
    from assistant_plugins.whisper_asr import WhisperSettings

    assert FasterWhisperSettings.model_validate(shipped.plugin_config("faster_whisper_asr")) == FasterWhisperSettings()
    assert WhisperSettings.model_validate(shipped.plugin_config("whisper_asr")) == WhisperSettings()


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
        ("[dialogue]\nhistory_turns = -1\n", "dialogue.history_turns"),
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


def test_plugin_tables_are_passed_through():
    """[plugins.<name>] tables reach their plugin as dicts; a missing one is empty."""
    config = Config.from_dict({"plugins": {"mine": {"answer": 42}}})
    assert config.plugin_config("mine") == {"answer": 42} and config.plugin_config("other") == {}
