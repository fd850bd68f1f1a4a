"""Every hook a plugin may implement. docs/plugins.md documents each one; a meta-test checks that.

pluggy has no async hooks: `startup` and `shutdown` may return an awaitable and the core awaits it.
Registration hooks take a `register` callback, in the style of simonw/llm and datasette; each
callback accepts `settings=Model` to declare the registering plugin's settings (see `assistant.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from assistant.types import AppView

hookspec = pluggy.HookspecMarker("assistant")
hookimpl = pluggy.HookimplMarker("assistant")


@hookspec
def register_engines(register: Callable[..., None]) -> None:
    """Register engine factories: call `register(role, name, factory, *, settings=None, model_name=None)` per engine.

    Called once per app, while it starts, before any engine is built. `role` is one of
    `assistant.engines.ROLES`; `name` is what `[engines] <role> = "<name>"` selects; the factory
    returns an instance of the role's engine base class and is called only for the selected engine.
    `settings` is the plugin's pydantic settings model: the core validates the plugin's
    `[plugins.<plugin name>]` table with it at startup and then calls `factory(app, settings)` with the
    validated object (without `settings`: `factory(app)`). The optional `model_name` is called the same
    way and returns the model the engine would load, for `assistant models`. Duplicate (role, name)
    pairs, unknown roles and invalid settings stop startup with an error. Returns nothing.
    """


@hookspec
def register_model_sources(register: Callable[..., None]) -> None:
    """Register model sources: call `register(name, source, *, settings=None)` with an `assistant.models.ModelSource`.

    Called once per app, while it starts, before any engine is built. The model locator asks the
    sources in hook call order (later-registered plugins first, `trylast` ones last) to turn a
    configured model name into local files. `settings` declares the plugin's settings model, as for
    `register_engines` (read the result with `app.plugin_settings`). Duplicate names stop startup.
    Returns nothing.
    """


@hookspec
def register_turn_routers(register: Callable[..., None]) -> None:
    """Register turn routers: call `register(name, router, *, settings=None)` with an `assistant.TurnRouter`.

    Called once per app, while it starts. Before a text turn reaches the dialogue engine, the core
    asks each router in hook call order (later-registered plugins first, `trylast` ones such as the
    built-in keyword router last) whether it claims the turn; the first claim wins. A router is only
    asked when the engine its route needs is configured. `settings` declares the plugin's settings
    model, as for `register_engines`. Duplicate names stop startup. Returns nothing.
    """


@hookspec
def register_modalities(register: Callable[..., None]) -> None:
    """Register modalities: call `register(name, modality, *, settings=None)` with an `assistant.Modality`.

    The way to add a modality. Called once per app, while it starts. When the dialogue engine reads
    only text (late fusion), each modality describes every image part of a user turn, and its text
    reaches the engine's context as `[Image N: ...]`. Modalities are asked in hook call order.
    `settings` declares the plugin's settings model, as for `register_engines`; the modality's
    `load(app)` reads the validated object with `app.plugin_settings(plugin_name)`. Duplicate names
    stop startup. Returns nothing.
    """


@hookspec
def register_tools(register: Callable[..., None]) -> None:
    """Register tools the model may call: `register(function_or_toolbox, *, name=None, timeout_s=10.0, requires_confirmation=False)`.

    Called once per app, while it starts. A plain function (sync or async) becomes one tool named
    after it (or `name`): its docstring's first paragraph is the description the model reads, its
    Google-style `Args:` section describes each argument, and its type hints make the arguments'
    JSON Schema. A parameter annotated `assistant.ToolContext` receives the call's context (principal,
    conversation, the user's time zone and time, a way to emit events) and is not shown to the
    model. A toolbox (an instance of a class) adds one tool per public method, named
    `<toolbox name>_<method>` (the class attribute `name`, else the class name in snake_case). A
    call that runs longer than `timeout_s` ends with status `timeout`; `requires_confirmation=True`
    asks the user to approve each call first. Duplicate names, functions without docstring or type
    hints stop startup with an error. Returns nothing.
    """


@hookspec
def register_part_types(register: Callable[..., None]) -> None:
    """Register part types: call `register(part_type, *, settings=None)` with an `assistant.PartType`.

    The way to add a kind of input part (a document, a video) beside text, image and audio. Called
    once per app, while it starts. The part type's `name` is the wire `type` clients send; its bytes
    are checked against `max_bytes` and decoded by `decode` on the media worker, stored as an
    attachment, and `describe`d for a text-only dialogue engine (`[Label N: ...]` in its context).
    `settings` declares the plugin's settings model, as for `register_engines`. A name that is taken
    (by the core or another plugin) or invalid stops startup. Returns nothing.
    """


@hookspec
def startup(app: AppView) -> Any:
    """Called once when the app has started: engines are loaded and the store is open.

    May return an awaitable, which the core awaits before the server accepts connections. An
    exception stops startup. Use it to warm caches or start background work owned by the plugin.
    """


@hookspec
def shutdown(app: AppView) -> Any:
    """Called once when the app stops, after the last reply has ended and before engines are closed.

    May return an awaitable, which the core awaits. The mirror of `startup`: release what startup
    took. Exceptions are logged and do not stop other plugins' shutdown.
    """
