"""One connection's state: its conversation, event seq, turns in order, cancellation."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from websockets.exceptions import ConnectionClosed

from assistant.app import App
from assistant.audio_stream import AudioStream
from assistant.image_features import search_images
from assistant.image_jobs import ImageJob, image_generator, prepare, start_job
from assistant.pipeline import TurnInput, admit, decode_base64, run_turn, run_turn_input
from assistant.protocol import (
    AudioAppend,
    AudioClear,
    AudioCommit,
    ClientEvent,
    ConversationGet,
    ConversationHistory,
    ConversationSearch,
    ConversationSearchResults,
    Error,
    ImageCancel,
    ImageGenerate,
    ProtocolError,
    Replay,
    ResponseCancel,
    SearchResult,
    ServerEvent,
    SessionStart,
    SessionStarted,
    TurnCreate,
    error_event,
    parse_client_event,
    serialize,
)

log = logging.getLogger("assistant.session")

class Session:
    """Handles the frames of one websocket connection. Turns run one after another, off the read loop."""

    def __init__(
        self, app: App, send: Callable[[str], Awaitable[None]], token: str | None = None,
        close: Callable[[int, str], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self._send = send
        self._close = close
        self._token = token  # from the Authorization header (checked at the handshake) or session.start
        self.principal: str | None = None  # set by a successful session.start
        self.conversation_id: str | None = None
        self.connected = True
        self._turn_lock = asyncio.Lock()
        self._turns: set[asyncio.Task[None]] = set()
        self.jobs: set[ImageJob] = set()  # this connection's image jobs, queued or painting
        self.audio: AudioStream | None = None  # streamed speech, from session.start on
        self._catching_up: list[tuple[int, str]] | None = None  # live events arriving during a replay

    async def emit(self, event: ServerEvent, seq: int | None = None) -> None:
        """Send a server event.

        A conversation event is published on this session's conversation: numbered (or given its
        reserved `seq`), buffered for replay and delivered to every connection following the
        conversation, this one included, even after this client has gone. Other events (answers to
        this client's own requests) go to this connection only, with the conversation's last seq.
        """
        error = event if isinstance(event, Error) else getattr(event, "error", None)
        if error is not None:
            self.app.metrics.errors.labels(error.code).inc()
        if event.conversation_event and self.conversation_id is not None:
            await self.app.channels.publish(self.conversation_id, lambda number: serialize(event, number), seq)
            return
        last = self.app.channels.last_seq(self.conversation_id) if self.conversation_id else 0
        await self._send_frame(serialize(event, last))

    async def deliver(self, seq: int, frame: str) -> None:
        """A numbered conversation event for this client (held back while a replay is being sent)."""
        if self._catching_up is not None:
            self._catching_up.append((seq, frame))
            return
        await self._send_frame(frame)

    async def _send_frame(self, frame: str) -> None:
        if not self.connected:
            return
        try:
            await self._send(frame)
        except ConnectionClosed:
            self.connected = False

    async def handle_frame(self, frame: str | bytes) -> None:
        """Parse one frame and act on it; every problem becomes an `error` event."""
        try:
            if isinstance(frame, bytes):
                await self._stream(None).append(frame, None)
                return
            event = parse_client_event(frame)
        except ProtocolError as exc:
            await self.emit(error_event(exc))
            return
        try:
            if not isinstance(event, SessionStart):
                self._check_principal(event.event_id)
            await self.dispatch(event)
        except ProtocolError as exc:
            await self.emit(error_event(exc))
        except Exception as exc:
            log.exception("handling %s failed", event.type)  # type: ignore[attr-defined]
            await self.emit(Error(code="internal", message=f"{event.type} failed: {type(exc).__name__}", ref=event.event_id))  # type: ignore[attr-defined]

    async def dispatch(self, event: ClientEvent) -> None:
        """Route a valid client event to its handler."""
        if isinstance(event, SessionStart):
            await self._start(event)
        elif isinstance(event, TurnCreate):
            self._spawn_turn(event)
        elif isinstance(event, ResponseCancel):
            self._cancel(event)
        elif isinstance(event, ConversationGet):
            await self._history(event)
        elif isinstance(event, ConversationSearch):
            await self._search(event)
        elif isinstance(event, ImageGenerate):
            await self._generate_image(event)
        elif isinstance(event, ImageCancel):
            self._cancel_image(event)
        elif isinstance(event, AudioAppend):
            await self._stream(event.event_id).append(decode_base64(event.data, "audio.append data", event.event_id), event.event_id)
        elif isinstance(event, AudioCommit):
            await self._stream(event.event_id).commit(event.event_id)
        elif isinstance(event, AudioClear):
            self._stream(event.event_id).clear()
        else:
            raise ProtocolError("unsupported", f"{event.type}: not supported by this server", event.event_id)  # type: ignore[attr-defined]

    def _check_principal(self, ref: str | None) -> None:
        """With auth on: the session has a principal whose token is still valid (a revoked token stops
        working within a second); else unauthorized. With auth off, handlers say what is missing themselves."""
        if not self.app.auth.enabled:
            return
        if self.principal is None:
            raise ProtocolError("unauthorized", "send session.start first (with a token: this server needs one)", ref)
        if self.app.auth.principal(self._token) != self.principal:
            self._leave()
            raise ProtocolError("unauthorized", "the token was revoked; start a session with a valid one", ref)

    def _authenticate(self, event: SessionStart) -> str:
        """The principal for a session.start: its token, else the handshake's; counts the session."""
        token = event.token if event.token is not None else self._token
        principal = self.app.auth.principal(token)
        if principal is None:
            why = "invalid or revoked token" if token else "this server needs a token (Authorization: Bearer, or token in session.start)"
            raise ProtocolError("unauthorized", why, event.event_id)
        if principal != self.principal:
            if not self.app.sessions.enter(principal):
                limit = self.app.config.limits.sessions_per_principal
                raise ProtocolError("rate_limited", f"{principal} already has {limit} sessions open", event.event_id)
            self._leave()
            self.app.metrics.sessions.inc()
        self.principal, self._token = principal, token
        return principal

    def _leave(self) -> None:
        if self.principal is not None:
            self.app.sessions.leave(self.principal)
            self.app.metrics.sessions.dec()
            self.principal = None

    async def _start(self, event: SessionStart) -> None:
        store = self.app.store
        assert store is not None
        if self.busy():
            raise ProtocolError("bad_request", "cannot switch conversations while a turn is in progress", event.event_id)
        if event.last_seq is not None and event.conversation_id is None:
            raise ProtocolError("bad_request", "last_seq needs the conversation_id it belongs to", event.event_id)
        try:
            principal = self._authenticate(event)
        except ProtocolError as exc:
            if exc.code == "rate_limited" and self._close is not None:
                await self.emit(error_event(exc))
                await self._close(1013, "too many sessions")
            raise
        if event.conversation_id is None:
            conversation_id, stored_last_seq, resumed = await store.create_conversation(principal), 0, False
        else:
            stored_last_seq = await store.conversation_last_seq(event.conversation_id, owner=principal)
            if stored_last_seq is None:
                raise ProtocolError("not_found", f"no conversation {event.conversation_id!r}", event.event_id)
            conversation_id, resumed = event.conversation_id, True
        self._unfollow()
        self.conversation_id = conversation_id
        self.audio = AudioStream(
            self, event.sample_rate or 16000, self.app.config.speech.vad if event.vad is None else event.vad, event.language
        )
        self._catching_up = []
        try:
            channel = self.app.channels.follow(conversation_id, self, stored_last_seq)
            replay, frames = None, []
            if event.last_seq is not None:
                frames, complete = channel.since(event.last_seq)
                replay = Replay(after_seq=event.last_seq, events=len(frames), complete=complete)
            await self.emit(SessionStarted(
                conversation_id=conversation_id, resumed=resumed, capabilities=self.app.capabilities(), replay=replay,
                principal=principal,
            ))
            sent = event.last_seq or 0
            for seq, frame in frames:
                await self._send_frame(frame)
                sent = seq
            while self._catching_up:  # events published meanwhile, in order, none twice
                seq, frame = self._catching_up.pop(0)
                if seq > sent:
                    await self._send_frame(frame)
                    sent = seq
        finally:
            self._catching_up = None

    def _unfollow(self) -> None:
        if self.conversation_id is not None:
            self.app.channels.unfollow(self.conversation_id, self)

    def _stream(self, ref: str | None) -> AudioStream:
        if self.audio is None:
            raise ProtocolError("bad_request", "send session.start before streaming audio", ref)
        return self.audio

    def busy(self) -> bool:
        """True while this connection has a turn or an image job queued or running."""
        return bool(self.jobs) or any(not task.done() for task in self._turns)

    def check_job_capacity(self, ref: str | None) -> None:
        """Raise rate_limited when this connection already has its most image jobs."""
        limit = self.app.config.images.max_jobs_per_connection
        if len(self.jobs) >= limit:
            raise ProtocolError("rate_limited", f"{limit} image jobs are already queued or painting on this connection", ref)
        admit(self.app, image_generator(self, ref), ref)

    async def _generate_image(self, event: ImageGenerate) -> None:
        if self.conversation_id is None:
            raise ProtocolError("bad_request", "send session.start before image.generate", event.event_id)
        if not self.app.accepting_turns:
            raise ProtocolError("unavailable", "the server is shutting down", event.event_id)
        request = prepare(image_generator(self, event.event_id), {
            "prompt": event.prompt, "negative_prompt": event.negative_prompt, "width": event.width,
            "height": event.height, "steps": event.steps, "guidance": event.guidance, "seed": event.seed,
        }, event.event_id)
        self.check_job_capacity(event.event_id)
        self._take_turn(event.event_id)
        await start_job(self, self.conversation_id, request, prompt_turn=True)

    def _take_turn(self, ref: str | None) -> None:
        """Count a turn against the principal's per-minute allowance; rate_limited past it."""
        assert self.principal is not None
        wait = self.app.turn_rate.take(self.principal)
        if wait is not None:
            per_minute = self.app.config.limits.turns_per_minute
            raise ProtocolError("rate_limited", f"at most {per_minute} turns per minute; try again in {wait:.0f} s", ref)

    def _cancel_image(self, event: ImageCancel) -> None:
        for job in self.app.image_jobs:
            if job.job_id == event.job_id and job.conversation_id == self.conversation_id:
                job.cancel()
                return
        raise ProtocolError("not_found", f"no image job {event.job_id!r} in progress in this conversation", event.event_id)

    def _spawn_turn(self, event: TurnCreate) -> None:
        if self.conversation_id is None:
            raise ProtocolError("bad_request", "send session.start before turn.create", event.event_id)
        self._queue_turn(lambda conversation_id: run_turn(self, event, conversation_id), event.event_id)

    def spawn_turn(self, turn: TurnInput, ref: str | None) -> None:
        """Queue a turn built elsewhere (a committed utterance) behind this connection's other turns."""
        self._queue_turn(lambda conversation_id: run_turn_input(self, turn, conversation_id, ref), ref)

    def _queue_turn(self, run: Callable[[str], Awaitable[None]], ref: str | None) -> None:
        assert self.conversation_id is not None
        if not self.app.accepting_turns:
            raise ProtocolError("unavailable", "the server is shutting down", ref)
        limit = self.app.config.server.max_queued_turns
        if len(self._turns) >= limit:
            raise ProtocolError("rate_limited", f"{limit} turns are already waiting on this connection", ref)
        self._take_turn(ref)
        task = asyncio.create_task(self._turn(run, self.conversation_id, ref))
        for tasks in (self._turns, self.app.turns):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _turn(self, run: Callable[[str], Awaitable[None]], conversation_id: str, ref: str | None) -> None:
        async with self._turn_lock:
            try:
                if not self.app.accepting_turns:  # queued before shutdown began, never started
                    raise ProtocolError("unavailable", "the server is shutting down", ref)
                await run(conversation_id)
            except ProtocolError as exc:
                await self.emit(error_event(exc))
            except Exception as exc:
                log.exception("turn failed")
                await self.emit(Error(code="internal", message=f"the turn failed: {type(exc).__name__}", ref=ref))

    def _cancel(self, event: ResponseCancel) -> None:
        for reply in self.app.replies:
            if reply.response_id == event.response_id and reply.conversation_id == self.conversation_id:
                reply.cancel()
                return
        raise ProtocolError("not_found", f"no reply {event.response_id!r} in progress in this conversation", event.event_id)

    async def _history(self, event: ConversationGet) -> None:
        store = self.app.store
        assert store is not None
        conversation_id = event.conversation_id or self.conversation_id
        if conversation_id is None:
            raise ProtocolError("bad_request", "no conversation: give conversation_id or send session.start first", event.event_id)
        if await store.conversation_last_seq(conversation_id, owner=self.principal) is None:
            raise ProtocolError("not_found", f"no conversation {conversation_id!r}", event.event_id)
        turns = await store.history(conversation_id)
        await self.emit(ConversationHistory(conversation_id=conversation_id, turns=[t.to_wire() for t in turns]))

    async def _search(self, event: ConversationSearch) -> None:
        if self.conversation_id is None:
            raise ProtocolError("bad_request", "send session.start before conversation.search", event.event_id)
        hits = await search_images(self.app, self.conversation_id, event.query, event.limit, event.event_id)
        encoder = self.app.engines["image_encoder"]
        await self.emit(ConversationSearchResults(
            conversation_id=self.conversation_id, query=event.query, encoder=encoder.id,
            results=[
                SearchResult(sha256=h.sha256, turn_id=h.turn_id, role=h.role, mime=h.mime, url=f"/attachments/{h.sha256}", score=h.score)
                for h in hits
            ],
        ))

    def disconnected(self) -> None:
        """The client has gone: stop sending and cancel its image jobs. Text turns still finish and are stored."""
        self.connected = False
        self._unfollow()
        self._leave()
        for job in list(self.jobs):
            job.cancel()
