"""One protocol v1 connection: parse frames, authenticate, open a conversation, translate its events.

Everything a turn does happens in the core (`assistant.conversation`, `assistant.turns`); this
module only turns client events into core calls and domain events into frames.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from assistant import conversation as core
from assistant import events
from assistant.app import App
from assistant.audio_stream import AudioStream
from assistant.channels import ChannelEmit
from assistant.conversation import Conversation
from assistant.dialects.native import protocol as wire
from assistant.dialects.native.translate import decode_base64, error_event, generation_options, parts_in, to_wire
from assistant.engines import SpeechSynthesizer
from assistant.errors import AssistantError
from assistant.speech import speech_out
from assistant.timezones import zone

log = logging.getLogger("assistant.dialects.native.session")


class Session:
    """Handles the frames of one websocket connection. Turns run one after another, off the read loop.

    `send(frame)` sends a text frame; any exception from it means the connection is gone.
    """

    def __init__(
        self, app: App, send: Callable[[str], Awaitable[None]], token: str | None = None,
        close: Callable[[int, str], Awaitable[None]] | None = None, source: str | None = None,
    ) -> None:
        self.app = app
        self.source = source  # the client's address
        self._session_key: str | None = None  # what app.sessions counts for this session
        self._send = send
        self._close = close
        self._token = token  # from the Authorization header (checked at the handshake) or session.start
        self.principal: str | None = None  # set by a successful session.start
        self.conversation: Conversation | None = None
        self.connected = True
        self.audio: AudioStream | None = None  # streamed speech, from session.start on
        self._catching_up: list[tuple[int, events.Event]] | None = None  # live events arriving during a replay
        self._unsubscribe: Callable[[], None] | None = None  # from the principal's notices (reminders), while in a session

    @property
    def conversation_id(self) -> str | None:
        """The conversation this connection follows, once session.start succeeded."""
        return self.conversation.id if self.conversation is not None else None

    async def deliver(self, seq: int, event: events.Event) -> None:
        """A numbered conversation event for this client (held back while a replay is being sent)."""
        if self._catching_up is not None:
            self._catching_up.append((seq, event))
            return
        await self._send_frame(wire.serialize(to_wire(event), seq))

    async def _reply(self, event: wire.ServerEvent) -> None:
        """An answer to this client's own request, carrying the conversation's last seq."""
        cid = self.conversation_id
        await self._send_frame(wire.serialize(event, self.app.channels.last_seq(cid) if cid else 0))

    async def _tell(self, event: events.Event) -> None:
        await self._reply(to_wire(event))

    async def _error(self, error: AssistantError) -> None:
        self.app.metrics.errors.labels(error.code).inc()
        await self._reply(error_event(error))

    async def _send_frame(self, frame: str) -> None:
        if not self.connected:
            return
        try:
            await self._send(frame)
        except Exception:  # whatever the transport raises once the connection is gone
            self.connected = False

    async def handle_frame(self, frame: str | bytes) -> None:
        """Parse one frame and act on it; every problem becomes an `error` event."""
        try:
            if isinstance(frame, bytes):
                await self._stream(None).append(frame, None)
                return
            event = wire.parse_client_event(frame)
        except AssistantError as exc:
            await self._error(exc)
            return
        try:
            if not isinstance(event, wire.SessionStart):
                self._check_principal(event.event_id)
            await self.dispatch(event)
        except AssistantError as exc:
            await self._error(exc)
        except Exception as exc:
            log.exception("handling %s failed", event.type)  # type: ignore[attr-defined]
            await self._error(AssistantError("internal", f"{event.type} failed: {type(exc).__name__}", event.event_id))  # type: ignore[attr-defined]

    async def dispatch(self, event: wire.ClientEvent) -> None:
        """Route a valid client event to the core."""
        ref = event.event_id
        if isinstance(event, wire.SessionStart):
            await self._start(event)
        elif isinstance(event, wire.TurnCreate):
            self._open(ref, "turn.create").create_turn(lambda: parts_in(self.app, event), generation_options(event), ref)
        elif isinstance(event, wire.ResponseCancel):
            if self.conversation is None:
                raise AssistantError("not_found", f"no reply {event.response_id!r} in progress in this conversation", ref)
            self.conversation.cancel_reply(event.response_id, ref)
        elif isinstance(event, wire.ResponseAudioPlayed):
            await self._open(ref, "response.audio.played").audio_played(event.response_id, event.ms, ref)
        elif isinstance(event, wire.ConversationGet):
            await self._history(event)
        elif isinstance(event, wire.ConversationSearch):
            await self._search(event)
        elif isinstance(event, wire.ImageGenerate):
            await self._open(ref, "image.generate").generate_image({
                "prompt": event.prompt, "negative_prompt": event.negative_prompt, "width": event.width,
                "height": event.height, "steps": event.steps, "guidance": event.guidance, "seed": event.seed,
            }, ref)
        elif isinstance(event, wire.ImageCancel):
            if self.conversation is None:
                raise AssistantError("not_found", f"no image job {event.job_id!r} in progress in this conversation", ref)
            self.conversation.cancel_image(event.job_id, ref)
        elif isinstance(event, wire.ToolConfirm):
            self._open(ref, "tool.confirm").confirm_tool(event.call_id, event.approved, ref)
        elif isinstance(event, wire.AudioAppend):
            await self._stream(ref).append(decode_base64(event.data, "audio.append data", ref), ref)
        elif isinstance(event, wire.AudioCommit):
            await self._stream(ref).commit(ref)
        elif isinstance(event, wire.AudioClear):
            self._stream(ref).clear()
        else:
            raise AssistantError("unsupported", f"{event.type}: not supported by this server", ref)  # type: ignore[attr-defined]

    def _open(self, ref: str | None, what: str) -> Conversation:
        """The conversation, or bad_request when session.start has not succeeded yet."""
        if self.conversation is None:
            raise AssistantError("bad_request", f"send session.start before {what}", ref)
        return self.conversation

    def _check_principal(self, ref: str | None) -> None:
        """With auth on: the session has a principal whose token is still valid (a revoked token stops
        working within a second); else unauthorized. With auth off, handlers say what is missing themselves."""
        if not self.app.auth.enabled:
            return
        if self.principal is None:
            raise AssistantError("unauthorized", "send session.start first (with a token: this server needs one)", ref)
        if self.app.auth.principal(self._token) != self.principal:
            self._leave()
            raise AssistantError("unauthorized", "the token was revoked; start a session with a valid one", ref)

    def _authenticate(self, event: wire.SessionStart) -> str:
        """The principal for a session.start: its token, else the handshake's; counts the session."""
        token = event.token if event.token is not None else self._token
        principal = self.app.auth.principal(token)
        if principal is None:
            why = "invalid or revoked token" if token else "this server needs a token (Authorization: Bearer, or token in session.start)"
            raise AssistantError("unauthorized", why, event.event_id)
        if principal != self.principal:
            key = self.app.session_key(principal, self.source)
            refused = self.app.sessions.enter(key)
            if refused is not None:
                raise AssistantError("rate_limited", refused, event.event_id)
            self._leave()
            self._session_key = key
            self.app.metrics.sessions.inc()
        self.principal, self._token = principal, token
        return principal

    def _leave(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.principal is not None:
            assert self._session_key is not None
            self.app.sessions.leave(self._session_key)
            self.app.metrics.sessions.dec()
            self.principal = self._session_key = None

    async def _start(self, event: wire.SessionStart) -> None:
        if self.busy():
            raise AssistantError("bad_request", "cannot switch conversations while a turn is in progress", event.event_id)
        if event.last_seq is not None and event.conversation_id is None:
            raise AssistantError("bad_request", "last_seq needs the conversation_id it belongs to", event.event_id)
        wants_audio = event.output_modalities is not None and "audio" in event.output_modalities
        if event.voice is not None and not wants_audio:
            raise AssistantError("bad_request", 'voice needs output_modalities ["text", "audio"]', event.event_id)
        try:
            principal = self._authenticate(event)
        except AssistantError as exc:
            if exc.code == "rate_limited" and self._close is not None:
                await self._error(exc)
                await self._close(1013, "too many sessions")
            raise
        speech = speech_out(self.app, event.voice, event.event_id) if wants_audio else None
        timezone = _timezone(event.timezone, event.event_id)
        conversation_id, stored_last_seq, resumed = await core.open_conversation(
            self.app, principal, event.conversation_id, event.event_id
        )
        self._unfollow()
        self.conversation = Conversation(self.app, conversation_id, principal, ChannelEmit(self.app.channels, conversation_id), self._tell)
        self.conversation.speech = speech
        self.conversation.timezone = timezone
        self.audio = AudioStream(
            self.conversation, event.sample_rate or 16000, self.app.config.speech.vad if event.vad is None else event.vad, event.language
        )
        self._catching_up = []
        try:
            await self.app.channels.open(conversation_id, stored_last_seq)
            channel = self.app.channels.follow(conversation_id, self, stored_last_seq)
            replay, missed = None, list[tuple[int, events.Event]]()
            if event.last_seq is not None:
                missed, complete = channel.since(event.last_seq)
                replay = wire.Replay(after_seq=event.last_seq, events=len(missed), complete=complete)
            await self._reply(wire.SessionStarted(
                conversation_id=conversation_id, resumed=resumed, capabilities=self.app.capabilities(),
                modalities=[entry.name for entry in self.app.modalities], part_types=sorted(self.app.part_types), voices=self._voices(),
                output_modalities=["text", "audio"] if speech else ["text"], replay=replay,
                principal=principal,
            ))
            sent = event.last_seq or 0
            for seq, missed_event in missed:
                await self._send_frame(wire.serialize(to_wire(missed_event), seq))
                sent = seq
            while self._catching_up:  # events published meanwhile, in order, none twice
                seq, live = self._catching_up.pop(0)
                if seq > sent:
                    await self._send_frame(wire.serialize(to_wire(live), seq))
                    sent = seq
        finally:
            self._catching_up = None
        if self._unsubscribe is None:  # after session.started: the principal's reminders reach this client from now on
            self._unsubscribe = self.app.notices.subscribe(principal, self._tell)

    def _voices(self) -> list[wire.VoiceInfo]:
        engine = self.app.engines.get("speech_synthesizer")
        if not isinstance(engine, SpeechSynthesizer):
            return []
        return [wire.VoiceInfo(name=v.name, language=v.language, sample_rate=v.sample_rate) for v in engine.voices()]

    def _unfollow(self) -> None:
        if self.conversation is not None:
            self.app.channels.unfollow(self.conversation.id, self)

    def _stream(self, ref: str | None) -> AudioStream:
        if self.audio is None:
            raise AssistantError("bad_request", "send session.start before streaming audio", ref)
        return self.audio

    def busy(self) -> bool:
        """True while this connection has a turn or an image job queued or running."""
        return self.conversation is not None and self.conversation.busy()

    async def _history(self, event: wire.ConversationGet) -> None:
        conversation_id = event.conversation_id or self.conversation_id
        if conversation_id is None:
            raise AssistantError("bad_request", "no conversation: give conversation_id or send session.start first", event.event_id)
        turns, more = await core.history(self.app, self.principal, conversation_id, event.event_id, event.before, event.limit)
        await self._reply(wire.ConversationHistory(conversation_id=conversation_id, turns=[t.to_wire() for t in turns], has_more=more))

    async def _search(self, event: wire.ConversationSearch) -> None:
        conversation = self._open(event.event_id, "conversation.search")
        encoder, hits = await conversation.search(event.query, event.limit, event.event_id)
        await self._reply(wire.ConversationSearchResults(
            conversation_id=conversation.id, query=event.query, encoder=encoder,
            results=[
                wire.SearchResult(sha256=h.sha256, turn_id=h.turn_id, role=h.role, mime=h.mime, url=f"/attachments/{h.sha256}", score=h.score)
                for h in hits
            ],
        ))

    def disconnected(self) -> None:
        """The client has gone: stop sending and cancel its image jobs. Text turns still finish and are stored."""
        self.connected = False
        self._unfollow()
        self._leave()
        if self.conversation is not None:
            self.conversation.leave()


def _timezone(name: str | None, ref: str | None) -> ZoneInfo | None:
    """The ZoneInfo a session.start names, or None; bad_request for a name that is no IANA time zone."""
    if name is None:
        return None
    try:
        return zone(name)
    except ValueError as exc:
        raise AssistantError("bad_request", f"timezone: {exc}", ref) from None
