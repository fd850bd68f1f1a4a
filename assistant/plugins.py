"""Building the plugin manager and collecting what plugins register.

Load order: built-ins, then the `selfhosted_assistant` entry points (ENTRY_POINT_GROUP), then modules named in
`[plugins] modules`, then plugins handed in by code (tests, embedding apps; a plugin, or a `(name, plugin)`
pair); a plugin already registered is not registered again; finally the
config's `allow`/`deny` lists. A manager is built per app, never at import time.

Plugin settings: a register callback given `settings=Model` (a pydantic model class) declares the
registering plugin's settings. `collect_registrations` validates the plugin's `[plugins.<plugin name>]`
table with it once, while the app is prepared; the app then hands out the validated object: as the
second argument of engine factories (and `model_name`) registered with `settings=`, and to anyone
through `App.plugin_settings(plugin_name)`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel, ValidationError

from assistant import hookspecs
from assistant.config import Config, ConfigError
from assistant.engines import ROLES, Engine
from assistant.modalities import Modality, RegisteredModality
from assistant.models import ModelSource, RegisteredSource
from assistant.part_types import RegisteredPartType, check_part_type
from assistant.routes import RegisteredRouter, TurnRouter
from assistant.tools import DEFAULT_TIMEOUT_S, Tool, ToolError, add_tools, make_tools

if TYPE_CHECKING:
    from assistant.types import AppView

# The one list of built-in plugins, in load order (which decides their hook call order). It is kept
# here, not read from pyproject.toml's [project.entry-points.selfhosted_assistant] table, because the core must
# load the built-ins in this order from a source checkout too, where the installed metadata may be
# missing or stale. That table names the same modules under the same names (each module's last dotted
# name, so entry points never load a built-in twice) so that installed metadata lists them as plugins
# like any other; tests/assistant/test_plugins.py checks it, and docs/plugins.md's list, against this.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "assistant_plugins.model_sources",
    "assistant_plugins.smollm2_pack",
    "assistant_plugins.qwen_pack",
    "assistant_plugins.whisper_packs",
    "assistant_plugins.faster_whisper_asr",
    "assistant_plugins.whisper_asr",
    "assistant_plugins.transformers_dialogue",
    "assistant_plugins.transformers_vision",
    "assistant_plugins.clip_image",
    "assistant_plugins.imagenet_labels",
    "assistant_plugins.rapid_ocr",
    "assistant_plugins.diffusers_image",
    "assistant_plugins.piper_voice",
    "assistant_plugins.remote_engines",
    "assistant_plugins.builtin_tools",
    "assistant_plugins.keyword_router",
)


ENTRY_POINT_GROUP = "selfhosted_assistant"
"""The entry-point group installed plugins declare (`[project.entry-points.selfhosted_assistant]`).
Distinctive on purpose: the distribution is `selfhosted-assistant`, since `assistant` on the package
index is an unrelated project."""


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


def build_plugin_manager(config: Config, extra_plugins: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A fresh plugin manager with every enabled plugin registered, in load order."""
    pm = pluggy.PluginManager("assistant")
    pm.add_hookspecs(hookspecs)
    allow = None if config.plugins.allow is None else set(config.plugins.allow)
    for name in config.plugins.deny:
        pm.set_blocked(name)

    def wanted(name: str) -> bool:
        return not pm.is_blocked(name) and (allow is None or name in allow)

    for module_name in BUILTIN_PLUGINS:
        name = module_name.rsplit(".", 1)[-1]
        if wanted(name):
            pm.register(importlib.import_module(module_name), name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:
        raise PluginError(
            f"an installed plugin (entry-point group {ENTRY_POINT_GROUP!r}) failed to load: {type(exc).__name__}: {exc}. "
            "Uninstall it or name it in [plugins] deny."
        ) from exc
    for module_name in config.plugins.modules:
        if wanted(module_name):
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise PluginError(f"[plugins] modules: cannot import {module_name!r}: {exc}") from exc
            _register(pm, module, module_name)
    for plugin in extra_plugins:
        if isinstance(plugin, tuple):  # (name, plugin): registered under the name an entry point would give it
            _register(pm, plugin[1], plugin[0])
        else:
            _register(pm, plugin, getattr(plugin, "__name__", None))
    if allow is not None:
        for name, plugin in list(pm.list_name_plugin()):
            if plugin is not None and name not in allow:
                pm.unregister(name=name)
    return pm


def _register(pm: pluggy.PluginManager, plugin: Any, name: str | None) -> None:
    """Register `plugin` under `name`; a plugin already registered (an installed package whose entry
    point loaded it, and that a test or `[plugins] modules` names again) keeps its first name."""
    if pm.is_registered(plugin):
        return
    try:
        pm.register(plugin, name)
    except ValueError as exc:
        raise PluginError(f"cannot register plugin {name or plugin!r}: {str(exc).splitlines()[0]}") from None


def call_per_plugin(pm: pluggy.PluginManager, hook_name: str, **kwargs: Callable[[str], Any]) -> None:
    """Call a registration hook impl by impl, in pluggy's call order, giving each the plugin's name.

    Each keyword is a factory `plugin_name -> argument`, so a `register` callback knows which
    plugin registered what (for `assistant plugins` and for error messages).
    """
    caller = getattr(pm.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):
        impl.function(**{arg: kwargs[arg](impl.plugin_name) for arg in impl.argnames})


SettingsModel = type[BaseModel]


@dataclass(frozen=True)
class EngineEntry:
    """An engine factory as registered: role, name, factory, the plugin that registered it, and whether
    it was registered with `settings=` (then the factory and `model_name` also get the plugin's settings)."""

    role: str
    name: str
    factory: Callable[..., Engine]
    plugin: str
    model_name: Callable[..., str | None] | None = None
    takes_settings: bool = False

    def create(self, app: AppView) -> Engine:
        """Call the factory: `factory(app, settings)` when registered with `settings=`, else `factory(app)`."""
        return self.factory(*self._arguments(app))

    def configured_model(self, app: AppView) -> str | None:
        """What `model_name` says the engine would load (called as the factory is), or None without one."""
        return None if self.model_name is None else self.model_name(*self._arguments(app))

    def _arguments(self, app: AppView) -> tuple[Any, ...]:
        return (app, app.plugin_settings(self.plugin)) if self.takes_settings else (app,)


@dataclass
class Registrations:
    """Everything the registration hooks produced, validated, with each plugin's validated settings."""

    engines: dict[tuple[str, str], EngineEntry] = field(default_factory=dict)
    model_sources: list[RegisteredSource] = field(default_factory=list)
    source_plugins: dict[str, str] = field(default_factory=dict)
    routers: list[RegisteredRouter] = field(default_factory=list)
    modalities: list[RegisteredModality] = field(default_factory=list)
    tools: dict[str, Tool] = field(default_factory=dict)  # by name, in registration order
    part_types: list[RegisteredPartType] = field(default_factory=list)
    settings_models: dict[str, SettingsModel] = field(default_factory=dict)  # plugin name -> its settings model
    settings: dict[str, BaseModel] = field(default_factory=dict)  # plugin name -> its validated [plugins.<name>] table


def collect_registrations(pm: pluggy.PluginManager, config: Config) -> Registrations:
    """Run every registration hook; reject duplicates and bad values; validate each plugin's settings.

    Raises PluginError for a bad registration and ConfigError for a `[plugins.<name>]` table its
    plugin's settings model rejects.
    """
    found = Registrations()

    def declare_settings(plugin: str, model: SettingsModel | None) -> bool:
        """Record `model` as the plugin's settings model; True when one was given."""
        if model is None:
            return False
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(f"plugin {plugin!r}: settings= must be a pydantic model class, got {model!r}")
        declared = found.settings_models.setdefault(plugin, model)
        if declared is not model:
            raise PluginError(f"plugin {plugin!r} declared two settings models: {declared.__name__} and {model.__name__}")
        return True

    def engine_register(plugin: str) -> Callable[..., None]:
        def register(
            role: str,
            name: str,
            factory: Callable[..., Engine],
            *,
            settings: SettingsModel | None = None,
            model_name: Callable[..., str | None] | None = None,
        ) -> None:
            if role not in ROLES:
                raise PluginError(f"plugin {plugin!r} registered an engine for unknown role {role!r}; roles: {', '.join(ROLES)}")
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin!r} registered a {role} engine without a name")
            if not callable(factory):
                raise PluginError(f"plugin {plugin!r}: factory for {role} engine {name!r} is not callable")
            if (role, name) in found.engines:
                other = found.engines[(role, name)].plugin
                raise PluginError(f"{role} engine {name!r} registered twice: by {other!r} and by {plugin!r}")
            takes_settings = declare_settings(plugin, settings)
            found.engines[(role, name)] = EngineEntry(role, name, factory, plugin, model_name, takes_settings)

        return register

    def source_register(plugin: str) -> Callable[..., None]:
        def register(name: str, source: ModelSource, *, settings: SettingsModel | None = None) -> None:
            if not isinstance(source, ModelSource):
                raise PluginError(f"plugin {plugin!r}: model source {name!r} is not a ModelSource")
            if name in found.source_plugins:
                raise PluginError(f"model source {name!r} registered twice: by {found.source_plugins[name]!r} and by {plugin!r}")
            declare_settings(plugin, settings)
            found.source_plugins[name] = plugin
            found.model_sources.append(RegisteredSource(name, source))

        return register

    def named_register(kind: str, base: type, entries: list[Any], entry_type: Callable[..., Any]) -> Callable[[str], Callable[..., None]]:
        """A `register(name, obj, settings=None)` factory for objects listed by name: turn routers, modalities."""

        def for_plugin(plugin: str) -> Callable[..., None]:
            def register(name: str, obj: Any, *, settings: SettingsModel | None = None) -> None:
                if not isinstance(obj, base):
                    raise PluginError(f"plugin {plugin!r}: {kind} {name!r} is not an assistant.{base.__name__}")
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {plugin!r} registered a {kind} without a name")
                for other in entries:
                    if other.name == name:
                        raise PluginError(f"{kind} {name!r} registered twice: by {other.plugin!r} and by {plugin!r}")
                declare_settings(plugin, settings)
                entries.append(entry_type(name, obj, plugin))

            return register

        return for_plugin

    def tool_register(plugin: str) -> Callable[..., None]:
        def register(
            tool: Any, *, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, requires_confirmation: bool = False,
            settings: SettingsModel | None = None,
        ) -> None:
            try:
                add_tools(found.tools, make_tools(tool, name=name, timeout_s=timeout_s, requires_confirmation=requires_confirmation, plugin=plugin))
            except ToolError as exc:
                raise PluginError(str(exc)) from None
            declare_settings(plugin, settings)

        return register

    def part_type_register(plugin: str) -> Callable[..., None]:
        def register(part_type: Any, *, settings: SettingsModel | None = None) -> None:
            problem = check_part_type(part_type, plugin)
            if problem is not None:
                raise PluginError(problem)
            for other in found.part_types:
                if other.name == part_type.name:
                    raise PluginError(f"part type {part_type.name!r} registered twice: by {other.plugin!r} and by {plugin!r}")
            declare_settings(plugin, settings)
            found.part_types.append(RegisteredPartType(part_type.name, part_type, plugin))

        return register

    call_per_plugin(pm, "register_engines", register=engine_register)
    call_per_plugin(pm, "register_model_sources", register=source_register)
    call_per_plugin(pm, "register_turn_routers", register=named_register("turn router", TurnRouter, found.routers, RegisteredRouter))
    call_per_plugin(pm, "register_modalities", register=named_register("modality", Modality, found.modalities, RegisteredModality))
    call_per_plugin(pm, "register_tools", register=tool_register)
    call_per_plugin(pm, "register_part_types", register=part_type_register)
    check_plugin_tables(pm, config)
    for plugin, model in found.settings_models.items():
        found.settings[plugin] = _validate_settings(model, plugin, config.plugin_config(plugin))
    return found


def check_plugin_tables(pm: pluggy.PluginManager, config: Config) -> None:
    """Every `[plugins.<name>]` table must name a plugin that is loaded (or named in `deny`/`allow`).

    A misspelt table would otherwise be ignored without a word: raise ConfigError with the core's
    one-line `invalid configuration` message and the closest plugin name.
    """
    loaded = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    known = loaded | set(config.plugins.deny) | set(config.plugins.allow or ())
    for name in (config.plugins.model_extra or {}):
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(loaded), n=1, cutoff=0.6)
        hint = f"did you mean [plugins.{close[0]}]?" if close else f"loaded plugins: {', '.join(sorted(loaded)) or 'none'}"
        raise ConfigError(f"invalid configuration: plugins.{name}: no plugin named {name!r} is loaded; {hint}")


def settings_error(plugin_name: str, exc: Exception) -> ConfigError:
    """A plugin settings failure as the core's one-line `invalid configuration` error naming each dotted key."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"plugins.{plugin_name}{''.join('.' + str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
    else:  # a validator that raised something pydantic does not wrap (TypeError, LookupError...)
        problems = f"plugins.{plugin_name}: {type(exc).__name__}: {exc}"
    return ConfigError(f"invalid configuration: {problems}")


def _validate_settings(model: SettingsModel, plugin_name: str, table: dict[str, Any]) -> BaseModel:
    """A plugin's `[plugins.<plugin_name>]` table validated by its settings model; errors name the dotted key."""
    try:
        return model.model_validate(table)
    except Exception as exc:
        raise settings_error(plugin_name, exc) from None


@dataclass(frozen=True)
class PluginInfo:
    """One row of `assistant plugins`."""

    name: str
    version: str | None
    hooks: list[str]
    engines: list[str]
    model_sources: list[str]
    turn_routers: list[str]
    modalities: list[str]
    tools: list[str] = field(default_factory=list)
    part_types: list[str] = field(default_factory=list)


def describe_plugins(pm: pluggy.PluginManager, registrations: Registrations) -> list[PluginInfo]:
    """Each registered plugin with its version, the hooks it implements and what it registered."""
    from assistant import __version__

    versions = {pm.get_name(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        if plugin is None:  # a name blocked by [plugins] deny
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        version = versions.get(name)
        if version is None and getattr(plugin, "__name__", "").startswith("assistant_plugins."):
            version = __version__
        infos.append(
            PluginInfo(
                name=name,
                version=version,
                hooks=hooks,
                engines=sorted(f"{e.role}:{e.name}" for e in registrations.engines.values() if e.plugin == name),
                model_sources=sorted(s for s, p in registrations.source_plugins.items() if p == name),
                turn_routers=sorted(r.name for r in registrations.routers if r.plugin == name),
                modalities=sorted(m.name for m in registrations.modalities if m.plugin == name),
                tools=sorted(t.name for t in registrations.tools.values() if t.plugin == name),
                part_types=sorted(p.name for p in registrations.part_types if p.plugin == name),
            )
        )
    return infos
