"""The assembled backend: config, plugins, model locator, engines, store and scheduler.

One `App` per process. It is what engine factories and lifecycle hooks receive, and what every
session shares: each engine is loaded once here and used by all connections.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from assistant.async_calls import async_variant
from assistant.auth import Authenticator, ConfiguredToken, TokenFile
from assistant.channels import Channels
from assistant.cluster import Node
from assistant.config import Config
from assistant.engines import ENGINE_BASES, ROLES, Engine
from assistant.limits import MediaBudget, SessionCount, TurnRate
from assistant.metrics import Metrics
from assistant.modalities import RegisteredModality, load_modalities
from assistant.models import ModelLocator
from assistant.notices import Notices
from assistant.part_types import RegisteredPartType, load_part_types
from assistant.plugins import PluginError, Registrations, build_plugin_manager, collect_registrations, settings_error
from assistant.reminders import Reminders
from assistant.scheduler import LatencyGate, Scheduler
from assistant.store import AsyncStore, Store
from assistant.tools import Tool

log = logging.getLogger("assistant")


class App:
    """Everything a running backend shares. Build with `await App.start(config)`."""

    def __init__(self, config: Config, pm: pluggy.PluginManager, registrations: Registrations) -> None:
        self.config = config
        self.pm = pm
        self.registrations = registrations
        self.models = ModelLocator(registrations.model_sources, config.model_cache_dir)
        self.engines: dict[str, Engine] = {}
        self.metrics = Metrics()
        self.scheduler = Scheduler({"image_generator": config.images.concurrency}, self.metrics)
        self.scheduler.max_queued = config.scheduler.max_queued
        self.scheduler.gate = LatencyGate(config.scheduler.latency_classes)
        self.cluster: Node | None = None  # with [cluster]: this node's Redis side (shared channels, heartbeat)
        self.channels: Channels
        if config.cluster is not None:
            self.cluster = Node(
                config.cluster, config.server.replay_events, config.server.replay_ttl_s, self._stored_seq, self._reserve_seqs, self._persist_last_seq,
            )
            self.channels = self.cluster.channels
        else:
            self.channels = Channels(
                config.server.replay_events, config.server.replay_ttl_s, self._persist_last_seq, self._reserve_seqs, self._settle_seqs
            )
        self.auth = Authenticator([ConfiguredToken(t.principal, t.sha256) for t in config.auth.tokens], TokenFile(config.tokens_path))
        self.turn_rate = TurnRate(config.limits.turns_per_minute)
        self.sessions = SessionCount(config.limits.sessions_per_principal, config.limits.max_sessions)
        self.conversation_rate = TurnRate(config.limits.conversations_per_minute)
        self.media = MediaBudget(config.limits.media_bytes_in_flight, self.metrics.media_bytes.set)
        self.metrics.media_budget.set(config.limits.media_bytes_in_flight)
        self.store: AsyncStore | None = None
        self.reminders: Reminders | None = None  # set at start, once the store is open; its clock runs while the app does
        self.notices = Notices(self._wake_reminders) if self.cluster is None else self.cluster.make_notices(self._wake_reminders)
        self.vad: Any = None  # vad.SileroVad, loaded at start when an ASR engine is configured
        self.modalities: list[RegisteredModality] = []  # loaded at start when the dialogue engine only reads text
        self.tools: dict[str, Tool] = registrations.tools  # the tools plugins registered (register_tools), by name
        self.part_types: dict[str, RegisteredPartType] = {}  # plugin part types by wire name, loaded at start
        self.replies: set[Any] = set()  # in-flight replies (reply.Reply), for cancel and shutdown
        self.turns: set[asyncio.Task[None]] = set()  # every turn task, queued or running, of every session
        self.image_jobs: set[Any] = set()  # image jobs queued or painting (image_jobs.ImageJob)
        self.accepting_turns = True  # False once shutdown begins
        self.cancelling_replies = False  # True once shutdown's grace has run out

    @classmethod
    def prepare(cls, config: Config, extra_plugins: Iterable[Any] = ()) -> App:
        """Plugins loaded and registrations collected; no engines loaded, no store opened."""
        pm = build_plugin_manager(config, extra_plugins)
        return cls(config, pm, collect_registrations(pm, config))

    @classmethod
    async def start(cls, config: Config, extra_plugins: Iterable[Any] = ()) -> App:
        """Load plugins, open the store, load the configured engines, run `startup` hooks."""
        app = cls.prepare(config, extra_plugins)
        node_id = config.cluster.node_id if config.cluster is not None else None
        store = await asyncio.to_thread(
            Store, config.database_url, node_id=node_id, upgrade=config.store.upgrade,
            recent_conversations=0 if config.cluster is not None else 256,  # other nodes write the same conversations
        )
        app.store = AsyncStore(store)
        app.metrics.watch_store_writer(app.store.writer)
        interrupted = await app.store.mark_interrupted(node_id)  # a cluster node: its own and node-less ones only
        if interrupted:
            log.warning("marked %d reply(ies) left in progress by an earlier run as interrupted", interrupted)
        try:
            if app.cluster is not None:
                await app.cluster.start(app.store)
            app.reminders = await asyncio.to_thread(Reminders, app.store, config.reminders, app.notices)
            for role, engine_name in app.selected_engines().items():
                app.engines[role] = await asyncio.to_thread(app.build_engine, role, engine_name)
                if app.engines[role].capabilities.max_batch > 1:  # concurrent calls are batched by the engine
                    app.scheduler.workers_per_role[role] = app.engines[role].capabilities.max_batch
                log.info("%s engine ready: %s", role, app.engines[role].id)
            if "asr" in app.engines:
                from assistant.vad import SileroVad

                app.vad = await asyncio.to_thread(SileroVad)
            if app.late_fusion:
                app.modalities = await load_modalities(app, app.registrations.modalities)
            app.part_types = await load_part_types(app, app.registrations.part_types)
            await app._call_lifecycle("startup")
            app.reminders.start()
        except BaseException:
            await app.stop(run_shutdown_hooks=False)
            raise
        return app

    def session_key(self, principal: str, source: str | None) -> str:
        """What `[limits] sessions_per_principal` counts for a session of `principal` from client address `source`.

        With auth on, the principal. With auth off everyone is `local`, so one runaway client would
        lock out every other device: the limit then applies per client address instead.
        """
        return principal if self.auth.enabled or not source else f"{principal}@{source}"

    def selected_engines(self) -> dict[str, str]:
        """Role -> engine name from `[engines]`, for roles with an engine configured."""
        chosen = self.config.engines.model_dump()
        return {role: name for role, name in chosen.items() if name}

    def build_engine(self, role: str, name: str) -> Engine:
        """Instantiate the registered engine `name` for `role` (blocking: it loads the model)."""
        entry = self.registrations.engines.get((role, name))
        if entry is None:
            known = sorted(n for r, n in self.registrations.engines if r == role)
            raise PluginError(f"[engines] {role} = {name!r}: no such {role} engine is registered (registered: {known or 'none'})")
        try:
            engine = entry.create(self)
        except ValidationError as exc:  # a plugin that validates settings itself, in its factory
            raise settings_error(entry.plugin, exc) from None
        if not isinstance(engine, ENGINE_BASES[role]):
            raise PluginError(f"{role} engine {name!r} from plugin {entry.plugin!r} is not a {ENGINE_BASES[role].__name__}")
        return engine

    @property
    def late_fusion(self) -> bool:
        """True when a dialogue engine is configured and it reads only text: modalities describe images for it."""
        dialogue = self.engines.get("dialogue")
        return dialogue is not None and not dialogue.capabilities.accepts_images

    def capabilities(self) -> dict[str, str | None]:
        """Per role: the serving engine's id, or None."""
        return {role: (self.engines[role].id if role in self.engines else None) for role in ROLES}

    async def drain(self, grace_s: float) -> None:
        """Shutdown: take no new turns, give those queued or running `grace_s` to finish, then cancel the rest and wait for them."""
        self.accepting_turns = False  # new turns, and queued ones not yet started, answer `unavailable`
        if self.turns:
            log.info("waiting up to %.1fs for %d turn(s) to finish", grace_s, len(self.turns))
            await asyncio.wait(list(self.turns), timeout=grace_s)
        if self.turns:
            log.info("cancelling %d reply(ies) still in progress", len(self.replies))
            self.cancel_all_replies()
            await asyncio.wait(list(self.turns))

    def cancel_all_replies(self) -> None:
        """Cancel every reply and image job in progress, and every one that starts from now on (shutdown)."""
        self.cancelling_replies = True
        for work in [*self.replies, *self.image_jobs]:
            work.cancel()

    async def _persist_last_seq(self, conversation_id: str, seq: int) -> None:
        if self.store is not None:
            await self.store.raise_last_seq(conversation_id, seq)

    def _wake_reminders(self, _principal: str) -> None:
        if self.reminders is not None:
            self.reminders.wake()

    async def _stored_seq(self, conversation_id: str) -> int | None:
        return await self.store.conversation_last_seq(conversation_id) if self.store is not None else None

    async def _reserve_seqs(self, conversation_id: str, until: int) -> None:
        if self.store is not None:
            await self.store.reserve_seqs(conversation_id, until)

    async def _settle_seqs(self, conversation_id: str, delivered: int, reserved: int) -> None:
        if self.store is not None:
            await self.store.settle_seqs(conversation_id, delivered, reserved)

    def plugin_settings(self, plugin_name: str) -> BaseModel:
        """The plugin's `[plugins.<plugin_name>]` table as validated at startup by the settings model it
        registered (`register(..., settings=Model)`); raises LookupError for a plugin that registered none."""
        try:
            return self.registrations.settings[plugin_name]
        except KeyError:
            raise LookupError(f"plugin {plugin_name!r} registered no settings model (register(..., settings=Model))") from None

    async def _call_lifecycle(self, hook_name: str, *, tolerate_errors: bool = False) -> None:
        """Call a lifecycle hook impl by impl, awaiting awaitables; optionally log errors and go on."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                result = impl.function(**{arg: self for arg in impl.argnames})
                if inspect.isawaitable(result):
                    await result
            except Exception:
                if not tolerate_errors:
                    raise
                log.exception("%s hook of plugin %r failed", hook_name, impl.plugin_name)

    async def stop(self, *, run_shutdown_hooks: bool = True) -> None:
        """Run `shutdown` hooks, close engines, workers and the store. Call after replies ended."""
        if self.reminders is not None:
            await self.reminders.stop()
        if run_shutdown_hooks:
            await self._call_lifecycle("shutdown", tolerate_errors=True)
        await asyncio.to_thread(self.scheduler.close)
        if self.cluster is not None:
            await self.cluster.stop()
        if self.store is not None:
            for channel in self.channels.live():
                if self.cluster is not None or channel.pending or channel.last_reserved != channel.last_delivered:
                    await self.store.raise_last_seq(channel.conversation_id, channel.last_delivered)  # keep the reservation
                else:
                    await self.store.settle_seqs(channel.conversation_id, channel.last_delivered, channel.durable)
        for entry in self.modalities:
            try:
                entry.modality.close()
            except Exception:
                log.exception("closing modality %s failed", entry.name)
        self.modalities = []
        for part_entry in self.part_types.values():
            try:
                part_entry.part_type.close()
            except Exception:
                log.exception("closing part type %s failed", part_entry.name)
        self.part_types = {}
        for engine in self.engines.values():
            try:
                close_async = async_variant(engine, engine.close)  # an async engine's HTTP client closes on the loop
                if close_async is not None:
                    await close_async()
                else:
                    engine.close()
            except Exception:
                log.exception("closing engine %s failed", engine.id)
        self.engines.clear()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None
