"""One Realtime API connection: its settings, its items, its input audio buffer, its responses.

Client events change the session (`session.update`), its items (`conversation.item.*`), its audio buffer
(`input_audio_buffer.*`, with server VAD from `assistant.audio_stream`) or start and cancel responses
(`response.*`, see `response.py`). Work that needs an engine (transcribing an utterance, a response)
runs off the read loop, one piece after another in the order the client asked for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from assistant import audio, events
from assistant.audio_stream import AudioStream
from assistant.dialects.openai_realtime import protocol as wire
from assistant.dialects.openai_realtime.inputs import audio_bytes, client_item, tool_choice_of, tool_specs
from assistant.dialects.openai_realtime.items import Content, Item, Items
from assistant.dialects.openai_realtime.protocol import SAMPLE_RATE, RealtimeProblem, new_id, server_event
from assistant.dialects.openai_realtime.response import Response, ResponseSettings
from assistant.engines import SpeechSynthesizer, ToolChoice, ToolSpec
from assistant.errors import ERROR_CODES, AssistantError
from assistant.speech import speech_out
from assistant.stateless import transcribe_samples
from assistant.turns import TurnInput
from assistant.types import SpeechOut

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.dialects.openai_realtime")

ITEM_BYTES_PER_TURN_LIMIT = 4
"""A session's items may hold this many times `[limits] max_turn_bytes`."""
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
"""OpenAI's voice names: a client asking for one gets this server's default voice."""


class RealtimeSession:
    """The state of one connection; `handle_frame` acts on each client frame, every problem an `error` event."""

    def __init__(self, app: App, principal: str, send: Callable[[str], Awaitable[None]], model: str | None = None) -> None:
        self.app = app
        self.principal = principal
        self.id = new_id("sess")
        self.model = model
        self._send_text = send
        self.connected = True
        self.items = Items(app.config.limits.max_turn_bytes * ITEM_BYTES_PER_TURN_LIMIT)
        engine = app.engines.get("speech_synthesizer")
        self.instructions = app.config.dialogue.system_prompt
        self.modality: str = "audio" if isinstance(engine, SpeechSynthesizer) and engine.voices() else "text"
        self.voice: str | None = None  # None: the synthesizer's first voice
        self.turn_detection: wire.TurnDetection | None = (
            wire.TurnDetection(type="server_vad") if app.vad is not None and app.config.speech.vad else None
        )
        self.language: str | None = None
        self.tools: tuple[ToolSpec, ...] = ()
        self.tool_choice: ToolChoice = "auto"
        self.forced_tool: str | None = None  # tool_choice {"type": "function", "name": ...}
        self.max_output_tokens: int | None = None
        self.audio = self._new_stream()
        self.response: Response | None = None  # the active one (queued or running)
        self._work: asyncio.Task[None] | None = None  # the last queued piece of work; each waits for the one before
        self._pending = 0
        self._partial: tuple[str, str] = ("", "")  # (item id, transcript text sent so far) of the utterance being spoken

    # --- sending ------------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        """Send a server event; a closed connection drops it."""
        if not self.connected:
            return
        try:
            await self._send_text(json.dumps(event))
        except Exception:  # whatever the transport raises once the connection is gone
            self.connected = False

    async def error(self, problem: RealtimeProblem) -> None:
        """Tell the client about a problem; the connection stays open."""
        label = problem.code if problem.code in ERROR_CODES else ("internal" if problem.kind == "server_error" else "bad_request")
        self.app.metrics.errors.labels(label).inc()
        await self.send(problem.to_wire())

    async def start(self) -> None:
        """The first event of every connection: `session.created` with the settings in force."""
        await self.send(server_event("session.created", session=self.resource()))

    def resource(self) -> dict[str, Any]:
        """The session's settings as OpenAI's session object."""
        asr = self.app.engines.get("asr")
        detection = self.turn_detection
        speech = self._speech(None) if self.modality == "audio" else None
        tool_choice: Any = {"type": "function", "name": self.forced_tool} if self.forced_tool else self.tool_choice
        dialogue = self.app.engines.get("dialogue")
        return {
            "type": "realtime", "object": "realtime.session", "id": self.id,
            "model": self.model or (dialogue.id if dialogue is not None else None),
            "instructions": self.instructions, "output_modalities": [self.modality],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                    "transcription": {"model": asr.id, "language": self.language} if asr is not None else None,
                    "turn_detection": None if detection is None else {
                        "type": detection.type, "create_response": detection.create_response,
                        "interrupt_response": detection.interrupt_response,
                        "threshold": detection.threshold or self.app.config.speech.vad_threshold,
                        "silence_duration_ms": detection.silence_duration_ms or self.app.config.speech.vad_min_silence_ms,
                        "prefix_padding_ms": 500, "idle_timeout_ms": None,
                    } if detection.type == "server_vad" else {
                        "type": "semantic_vad", "create_response": detection.create_response,
                        "interrupt_response": detection.interrupt_response, "eagerness": "auto",
                    },
                    "noise_reduction": None,
                },
                "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": speech.voice.name if speech else self.voice},
            },
            "tools": [
                {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters} for tool in self.tools
            ],
            "tool_choice": tool_choice,
            "max_output_tokens": self.max_output_tokens if self.max_output_tokens is not None else "inf",
        }

    # --- frames -------------------------------------------------------------------------------------

    async def handle_frame(self, frame: str | bytes) -> None:
        """Parse one frame and act on it; every problem becomes an `error` event."""
        event_id = None
        try:
            event = wire.parse_client_event(frame)
            event_id = event.event_id
            await self.dispatch(event)
        except RealtimeProblem as problem:
            await self.error(problem)
        except AssistantError as exc:
            await self.error(RealtimeProblem.of(exc, event_id))
        except Exception as exc:
            log.exception("handling a realtime event failed")
            await self.error(RealtimeProblem("internal", f"the event failed: {type(exc).__name__}", None, event_id))

    async def dispatch(self, event: wire.ClientEvent) -> None:
        """Act on one valid client event."""
        ref = event.event_id
        if isinstance(event, wire.SessionUpdate):
            self.update(event.session, ref)
            await self.send(server_event("session.updated", session=self.resource()))
        elif isinstance(event, wire.AudioAppend):
            await self.audio.append(audio_bytes(self.app, event.audio, "audio", ref), ref)
        elif isinstance(event, wire.AudioCommit):
            if self.audio.buffered_s == 0:
                raise RealtimeProblem("input_audio_buffer_commit_empty", "the input audio buffer is empty: append audio first", None, ref)
            await self.audio.commit(ref)
        elif isinstance(event, wire.AudioClear):
            self.audio.clear()
            await self.send(server_event("input_audio_buffer.cleared"))
        elif isinstance(event, wire.ItemCreate):
            await self.create_item(event.item, event.previous_item_id, ref)
        elif isinstance(event, wire.ItemTruncate):
            await self.truncate(event, ref)
        elif isinstance(event, wire.ItemDelete):
            self.items.delete(event.item_id, ref)
            await self.send(server_event("conversation.item.deleted", item_id=event.item_id))
        elif isinstance(event, wire.ItemRetrieve):
            await self.send(server_event("conversation.item.retrieved", item=self.items.get(event.item_id, ref).to_wire()))
        elif isinstance(event, wire.ResponseCreate):
            await self.create_response(event.response or wire.ResponseParams(), ref)
        elif isinstance(event, wire.ResponseCancel):
            response = self.response
            if response is None or (event.response_id is not None and event.response_id != response.id):
                raise RealtimeProblem("response_cancel_not_active", "no response in progress to cancel", "response_id", ref)
            response.cancel("client_cancelled")
        else:
            raise RealtimeProblem("unsupported", f"{event.type} is for WebRTC and SIP connections, not websockets", "type", ref)

    # --- session.update -----------------------------------------------------------------------------

    def update(self, config: wire.SessionConfig, ref: str | None) -> None:
        """Apply the fields a client sent; nothing changes when one of them is refused."""
        sent = config.model_fields_set
        modality = config.output_modalities[0] if config.output_modalities else self.modality
        voice = self.voice
        detection, language = self.turn_detection, self.language
        audio_in = config.audio.input if config.audio is not None else None
        audio_out = config.audio.output if config.audio is not None else None
        for where, fmt in (("input", audio_in.format if audio_in else None), ("output", audio_out.format if audio_out else None)):
            if fmt is not None and (fmt.type != "audio/pcm" or fmt.rate not in (None, SAMPLE_RATE)):
                raise RealtimeProblem("unsupported", f"only audio/pcm at {SAMPLE_RATE} Hz is supported", f"session.audio.{where}.format", ref)
        if audio_out is not None and "voice" in audio_out.model_fields_set:
            chosen = audio_out.voice.id if isinstance(audio_out.voice, wire.VoiceId) else audio_out.voice
            voice = None if chosen in OPENAI_VOICES else chosen
        if modality == "audio":
            try:
                self._speech(voice, ref)
            except AssistantError as exc:
                param = "session.audio.output.voice" if exc.code == "bad_request" else "session.output_modalities"
                raise RealtimeProblem(exc.code, exc.message, param, ref) from None
        if audio_in is not None and "turn_detection" in audio_in.model_fields_set:
            detection = audio_in.turn_detection
            if detection is not None and self.app.vad is None:
                raise RealtimeProblem("unavailable", "server VAD needs an ASR engine ([engines] asr)", "session.audio.input.turn_detection", ref)
        if audio_in is not None and audio_in.transcription is not None:
            language = audio_in.transcription.language
        tools = self.tools
        if config.tools is not None:
            tools = tool_specs(self.app, config.tools, "session.tools", ref)
        choice, forced = self.tool_choice, self.forced_tool
        if config.tool_choice is not None:
            choice, forced = tool_choice_of(config.tool_choice, tools, "session.tool_choice", ref)
        if "instructions" in sent:
            self.instructions = config.instructions or ""
        if "max_output_tokens" in sent:
            self.max_output_tokens = config.max_output_tokens if isinstance(config.max_output_tokens, int) else None
        if "model" in sent and config.model:
            self.model = config.model
        self.modality, self.voice, self.tools, self.tool_choice, self.forced_tool = modality, voice, tools, choice, forced
        if (detection, language) != (self.turn_detection, self.language):
            self.turn_detection, self.language = detection, language
            self.audio.clear()
            self.audio = self._new_stream()

    def _speech(self, voice: str | None, ref: str | None = None) -> SpeechOut:
        return speech_out(self.app, voice if voice is not None else self.voice, ref)

    def _new_stream(self) -> AudioStream:
        detection = self.turn_detection
        return AudioStream(
            self, SAMPLE_RATE, detection is not None, self.language,
            detection.threshold if detection else None, detection.silence_duration_ms if detection else None,
        )

    # --- items ----------------------------------------------------------------------------------------

    async def create_item(self, spec: wire.ItemIn, previous_item_id: str | None, ref: str | None) -> None:
        """`conversation.item.create`: check and add the item; its audio is transcribed in turn."""
        item, speech = await client_item(self.app, spec, "item", ref)
        previous = self.items.add(item, previous_item_id, ref)
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=item.to_wire()))
        if speech is None:
            await self.send(server_event("conversation.item.done", previous_item_id=previous, item=item.to_wire()))
        else:
            self._queue(lambda: self._transcribe(item, speech, auto_response=False), ref)

    async def truncate(self, event: wire.ItemTruncate, ref: str | None) -> None:
        """`conversation.item.truncate`: an assistant audio item keeps the words said in its first `audio_end_ms`."""
        item = self.items.get(event.item_id, ref)
        speaker = item.speaker
        if speaker is None or item.role != "assistant" or not item.content or item.content[0].type != "output_audio":
            raise RealtimeProblem("invalid_value", "only an assistant message with audio this session spoke can be truncated", "item_id", ref)
        if event.content_index != 0:
            raise RealtimeProblem("invalid_value", f"item {item.id} has one content part", "content_index", ref)
        said_ms = (speaker.segments[-1][1] if speaker.segments else 0) * 1000 // speaker.speech.voice.sample_rate
        if event.audio_end_ms > said_ms:
            raise RealtimeProblem("invalid_value", f"audio_end_ms {event.audio_end_ms} is past the item's audio ({said_ms} ms)", "audio_end_ms", ref)
        item.content[0].transcript = speaker.heard(event.audio_end_ms)
        await self.send(server_event("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=event.audio_end_ms))

    # --- responses ------------------------------------------------------------------------------------

    async def create_response(self, params: wire.ResponseParams, ref: str | None) -> None:
        """`response.create`: one response at a time; it runs after the work queued before it."""
        if self.response is not None:
            raise RealtimeProblem(
                "conversation_already_has_active_response", f"response {self.response.id} is still in progress", None, ref
            )
        modality = params.output_modalities[0] if params.output_modalities else self.modality
        speech = None
        if modality == "audio":
            try:
                speech = self._speech(None, ref)
            except AssistantError as exc:
                raise RealtimeProblem(exc.code, exc.message, "response.output_modalities", ref) from None
        tools = tool_specs(self.app, params.tools, "response.tools", ref) if params.tools is not None else self.tools
        choice, forced = self.tool_choice, self.forced_tool
        if params.tool_choice is not None:
            choice, forced = tool_choice_of(params.tool_choice, tools, "response.tool_choice", ref)
        if forced is not None:
            tools = tuple(tool for tool in tools if tool.name == forced)
        if params.conversation not in (None, "auto", "none"):
            raise RealtimeProblem("invalid_value", "conversation must be auto or none", "response.conversation", ref)
        context = None
        if params.input is not None:
            context = Items(self.items.max_bytes)
            for index, spec in enumerate(params.input):
                item, speech_in = await client_item(self.app, spec, f"response.input.{index}", ref)
                if speech_in is not None:
                    raise RealtimeProblem("unsupported", "input_audio in response.input is not supported; add it as an item", f"response.input.{index}", ref)
                context.add(item, None, ref)
        max_tokens = params.max_output_tokens if "max_output_tokens" in params.model_fields_set else self.max_output_tokens
        settings = ResponseSettings(
            params.instructions if params.instructions is not None else self.instructions, modality, speech, tools,  # type: ignore[arg-type]
            "required" if forced else choice, max_tokens if isinstance(max_tokens, int) else None,
            params.conversation != "none", params.metadata,
        )
        self._take_turn(ref)
        self._start(Response(self.app, self.id, self.send, self.items, settings, context), ref)

    def _take_turn(self, ref: str | None) -> None:
        wait = self.app.turn_rate.take(self.principal)
        if wait is not None:
            per_minute = self.app.config.limits.turns_per_minute
            raise RealtimeProblem("rate_limited", f"at most {per_minute} responses per minute; try again in {wait:.0f} s", None, ref)

    def _start(self, response: Response, ref: str | None) -> None:
        self.response = response

        async def run() -> None:
            try:
                await response.run()
            finally:
                if self.response is response:
                    self.response = None

        self._queue(run, ref)

    def _queue(self, work: Callable[[], Awaitable[None]], ref: str | None) -> None:
        """Run `work` after the work queued before it; bounded by `[server] max_queued_turns`."""
        if not self.app.accepting_turns:
            raise RealtimeProblem("unavailable", "the server is shutting down", None, ref)
        limit = self.app.config.server.max_queued_turns
        if self._pending >= limit:
            raise RealtimeProblem("rate_limited", f"{limit} pieces of work are already waiting in this session", None, ref)
        before = self._work
        self._pending += 1

        async def job() -> None:
            try:
                if before is not None:
                    await asyncio.wait([before])
                await work()
            except RealtimeProblem as problem:
                await self.error(problem)
            except AssistantError as exc:
                await self.error(RealtimeProblem.of(exc, ref))
            except Exception as exc:
                log.exception("realtime work failed")
                await self.error(RealtimeProblem("internal", f"failed: {type(exc).__name__}", None, ref))
            finally:
                self._pending -= 1
                self.app.scheduler.release_admissions()

        self._work = task = asyncio.create_task(job())
        self.app.turns.add(task)
        task.add_done_callback(self.app.turns.discard)

    def busy(self) -> bool:
        """True while a response or a transcription is queued or running."""
        return self._pending > 0

    # --- the input audio buffer (UtteranceSink for AudioStream) ---------------------------------------

    def barge_in(self) -> bool:
        """Server VAD heard the user start talking: the active response stops (`interrupt_response`)."""
        response = self.response
        if response is None or self.turn_detection is None or not self.turn_detection.interrupt_response:
            return False
        response.cancel("turn_detected")
        return True

    async def publish(self, event: events.Event, seq: int | None = None) -> None:
        """The audio stream's events as the Realtime API's."""
        item_id = self.audio.turn_id or ""
        if isinstance(event, events.SpeechStarted):
            await self.send(server_event("input_audio_buffer.speech_started", audio_start_ms=event.audio_start_ms, item_id=item_id))
        elif isinstance(event, events.SpeechStopped):
            await self.send(server_event("input_audio_buffer.speech_stopped", audio_end_ms=event.audio_end_ms, item_id=item_id))
        elif isinstance(event, events.TranscriptDelta):
            await self._transcript_delta(event.turn_id, event.text)

    async def _transcript_delta(self, item_id: str, text: str) -> None:
        """The growing hypothesis as Realtime deltas: only what extends the text already sent."""
        sent_id, sent = self._partial
        if sent_id != item_id:
            sent = ""
        if text.startswith(sent) and len(text) > len(sent):
            self._partial = (item_id, text)
            await self.send(server_event(
                "conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=text[len(sent):],
            ))

    def submit_turn(self, turn: TurnInput, ref: str | None) -> None:
        """A committed utterance becomes a user audio item, transcribed (then answered, with turn detection) in turn."""
        item = Item(turn.turn_id or new_id("item"), "message", "user", [Content("input_audio")])
        previous = self.items.add(item, None, ref)
        samples = turn.audio[0][0]

        async def announce() -> None:  # at once, not behind a response still running
            await self.send(server_event("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous))
            await self.send(server_event("conversation.item.added", previous_item_id=previous, item=item.to_wire()))

        announced = asyncio.create_task(announce())

        async def transcribe() -> None:
            await announced
            detection = self.turn_detection
            answer = detection is not None and detection.create_response
            await self._transcribe(item, samples, auto_response=answer, spoken_until=turn.spoken_until)

        self._queue(transcribe, ref)

    async def _transcribe(self, item: Item, samples: Any, auto_response: bool, spoken_until: float | None = None) -> None:
        """Transcribe a user audio item; then, with turn detection's create_response, answer it.

        `spoken_until` is when the VAD heard the utterance end (the voice-to-voice latency of a spoken answer)."""
        try:
            text = await transcribe_samples(self.app, samples, self.language, "item", None)
        except AssistantError as exc:
            item.content[0].transcript = ""
            await self.send(server_event(
                "conversation.item.input_audio_transcription.failed", item_id=item.id, content_index=0,
                error={"type": RealtimeProblem.of(exc).kind, "code": exc.code, "message": exc.message, "param": None},
            ))
            return
        item.content[0].transcript = text
        await self._transcript_delta(item.id, text)
        self._partial = ("", "")
        await self.send(server_event(
            "conversation.item.input_audio_transcription.completed", item_id=item.id, content_index=0, transcript=text,
            usage={"type": "duration", "seconds": round(audio.duration_s(samples), 3)},
        ))
        await self.send(server_event("conversation.item.done", item=item.to_wire()))
        if auto_response and text and self.response is None:
            self._take_turn(None)
            speech = self._speech(None) if self.modality == "audio" else None
            settings = ResponseSettings(
                self.instructions, "audio" if speech else "text", speech, self.tools,
                "required" if self.forced_tool else self.tool_choice, self.max_output_tokens,
            )
            response = Response(self.app, self.id, self.send, self.items, settings, spoken_until=spoken_until)
            self.response = response
            try:
                await response.run()
            finally:
                if self.response is response:
                    self.response = None

    def disconnected(self) -> None:
        """The client has gone: stop sending, cancel the active response."""
        self.connected = False
        if self.response is not None:
            self.response.cancel("client_cancelled")
