"""One Realtime response: its context from the session's items, the dialogue engine's text and tool calls, its speech.

The core does the work: `stateless_context` turns the items into the engine's messages (images decoded,
described for a text-only engine), `complete` runs the dialogue engine (admission, tools, errors), and
`speech.Speaker` speaks the text sentence by sentence on the speech synthesizer. This module only
renders that as the Realtime API's events, in its order: `response.created`, then per output item
`response.output_item.added` ... `response.output_item.done`, then exactly one `response.done`.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from assistant import audio, events
from assistant.dialects.openai_realtime.items import Content, Item, Items
from assistant.dialects.openai_realtime.protocol import SAMPLE_RATE, RealtimeProblem, new_id, server_event
from assistant.dialogue_call import complete
from assistant.engines import DialogueRequest, DialogueResult, GenerationOptions, ToolChoice, ToolSpec
from assistant.errors import AssistantError
from assistant.reply import Reply
from assistant.speech import Speaker
from assistant.stateless import stateless_context
from assistant.types import SpeechOut

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.dialects.openai_realtime")

Send = Callable[[dict[str, Any]], Awaitable[None]]
CancelReason = Literal["turn_detected", "client_cancelled"]


@dataclass(frozen=True)
class ResponseSettings:
    """What one response is asked for: the session's settings with `response.create`'s overrides applied."""

    instructions: str
    modality: Literal["text", "audio"]
    speech: SpeechOut | None  # set when modality is audio
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_output_tokens: int | None = None
    in_conversation: bool = True  # False: `conversation: "none"`, output items are not added to the session's items
    metadata: dict[str, str] | None = None


class Response:
    """A response in progress; `run()` streams it and ends with its `response.done`."""

    def __init__(
        self, app: App, session_id: str, send: Send, items: Items, settings: ResponseSettings, context: Items | None = None,
        spoken_until: float | None = None,
    ) -> None:
        self.app = app
        self.spoken_until = spoken_until  # when the utterance this answers ended, for the voice-to-voice metric
        self.id = new_id("resp")
        self.session_id = session_id
        self.send = send
        self.items = items  # where output items go
        self.context = context or items  # what the engine sees
        self.settings = settings
        self.reply = Reply(self.id, session_id)  # in app.replies: shutdown cancels it
        self.cancel_reason: CancelReason | None = None
        self.output: list[Item] = []
        self.message: Item | None = None
        self.speaker: Speaker | None = None
        self._text: list[str] = []
        self._resampler: audio.StreamResampler | None = None
        self._audio_status: str = "completed"

    def cancel(self, reason: CancelReason) -> None:
        """Stop the engine at its next token and the speech at its next chunk."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.reply.cancel()

    @property
    def talking(self) -> bool:
        """True while the response's speech has not ended."""
        return self.speaker is not None and self.speaker.talking

    def _resource(self, status: str, details: dict[str, Any] | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
        settings = self.settings
        voice = settings.speech.voice.name if settings.speech else None
        return {
            "id": self.id, "object": "realtime.response", "status": status, "status_details": details,
            "output": [item.to_wire() for item in self.output], "output_modalities": [settings.modality],
            "conversation_id": self.session_id if settings.in_conversation else None,
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": voice}},
            "max_output_tokens": settings.max_output_tokens if settings.max_output_tokens is not None else "inf",
            "metadata": settings.metadata, "usage": usage,
        }

    async def run(self) -> None:
        """Stream the response's events; always ends with one `response.done`."""
        app = self.app
        app.replies.add(self.reply)
        if app.cancelling_replies:
            self.reply.cancel()
        await self.send(server_event("response.created", response=self._resource("in_progress")))
        result: DialogueResult | None = None
        failure: AssistantError | None = None
        try:
            settings = self.settings
            messages = self.context.messages(settings.instructions, app.config.dialogue.context_chars)
            async with stateless_context(app, messages) as chat:
                request = DialogueRequest(
                    chat, GenerationOptions(max_new_tokens=settings.max_output_tokens), tools=settings.tools,
                    tool_choice=settings.tool_choice if settings.tools else "auto",
                )
                result = await complete(app, request, self._delta, self.reply.cancelled)
        except AssistantError as exc:
            failure = exc
        except Exception as exc:
            log.exception("realtime response %s failed", self.id)
            failure = AssistantError("internal", f"the response failed: {type(exc).__name__}")
        finally:
            try:
                await self._close_message()
                if result is not None and not self.reply.cancelled.is_set():
                    for call in result.tool_calls:
                        await self._function_call(call.id, call.name, json.dumps(call.arguments))
            except AssistantError as exc:  # no room for the call's item: an item is only announced once it is added
                failure = failure or exc
            finally:
                app.replies.discard(self.reply)
                self.reply.done.set()
                await self._done(result, failure)

    async def _done(self, result: DialogueResult | None, failure: AssistantError | None) -> None:
        details: dict[str, Any] | None = None
        if failure is not None:
            status = "failed"
            kind = RealtimeProblem.of(failure).kind
            details = {"type": "failed", "error": {"type": kind, "code": failure.code, "message": failure.message}}
        elif self.reply.cancelled.is_set() or (result is not None and result.finish_reason == "cancelled"):
            status = "cancelled"
            details = {"type": "cancelled", "reason": self.cancel_reason or "client_cancelled"}
        elif result is not None and result.finish_reason == "length":
            status = "incomplete"
            details = {"type": "incomplete", "reason": "max_output_tokens"}
        else:
            status = "completed"
        usage = None
        if result is not None:
            prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
            usage = {"total_tokens": prompt + completion, "input_tokens": prompt, "output_tokens": completion}
        await self.send(server_event("response.done", response=self._resource(status, details, usage)))

    async def _add_item(self, item: Item) -> None:
        """Open an output item: `response.output_item.added`, and `conversation.item.added` when it joins the conversation."""
        previous = None
        if self.settings.in_conversation:
            try:
                previous = self.items.add(item, None, None)
            except RealtimeProblem as exc:
                raise AssistantError("too_large", exc.message) from None
        self.output.append(item)
        index = len(self.output) - 1
        await self.send(server_event("response.output_item.added", response_id=self.id, output_index=index, item=item.to_wire()))
        if self.settings.in_conversation:
            await self.send(server_event("conversation.item.added", previous_item_id=previous, item=item.to_wire()))

    async def _finish_item(self, item: Item) -> None:
        index = self.output.index(item)
        await self.send(server_event("response.output_item.done", response_id=self.id, output_index=index, item=item.to_wire()))
        if self.settings.in_conversation:
            await self.send(server_event("conversation.item.done", item=item.to_wire()))

    def _where(self) -> dict[str, Any]:
        assert self.message is not None
        return {"response_id": self.id, "item_id": self.message.id, "output_index": self.output.index(self.message), "content_index": 0}

    async def _delta(self, delta: str) -> None:
        """A piece of the engine's text: open the message item on the first, then relay it (and speak it)."""
        if self.message is None:
            spoken = self.settings.modality == "audio"
            message = Item(new_id("item"), "message", "assistant", status="in_progress")
            await self._add_item(message)
            self.message = message
            part = {"type": "audio", "transcript": ""} if spoken else {"type": "text", "text": ""}
            await self.send(server_event("response.content_part.added", **self._where(), part=part))
            self.message.content.append(Content("output_audio" if spoken else "output_text"))
            if spoken:
                assert self.settings.speech is not None
                self.speaker = self.message.speaker = Speaker(
                    self.app, self._speech_event, self.settings.speech, self.id, self.reply.cancelled, self.spoken_until, store_heard=False,
                )
                self._resampler = audio.StreamResampler(self.settings.speech.voice.sample_rate, SAMPLE_RATE)
        self._text.append(delta)
        kind = "response.output_audio_transcript.delta" if self.speaker is not None else "response.output_text.delta"
        await self.send(server_event(kind, **self._where(), delta=delta))
        if self.speaker is not None:
            self.speaker.add(delta)

    async def _speech_event(self, event: events.Event) -> None:
        """The Speaker's audio, at the voice's rate, as 24 kHz `response.output_audio.delta`s."""
        if isinstance(event, events.AudioDelta) and self._resampler is not None:
            samples = self._resampler.push(event.audio)
            if samples.size:
                pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
                await self.send(server_event("response.output_audio.delta", **self._where(), delta=base64.b64encode(pcm).decode()))
        elif isinstance(event, events.AudioDone):
            self._audio_status = event.status
            if event.error is not None:
                log.warning("speech of realtime response %s failed: %s", self.id, event.error.message)

    async def _close_message(self) -> None:
        """Close the message item, if one was opened: its speech ends first; a cut reply keeps what was heard."""
        item = self.message
        if item is None:
            return
        text = "".join(self._text)
        part = item.content[0]
        if self.speaker is not None:
            await self.speaker.finish()
            if self.cancel_reason == "turn_detected" or self._audio_status != "completed":
                text = self.speaker.heard()  # barge-in: the conversation keeps what the user heard
            part.transcript = text
            await self.send(server_event("response.output_audio.done", **self._where()))
            await self.send(server_event("response.output_audio_transcript.done", **self._where(), transcript=text))
            wire_part: dict[str, Any] = {"type": "audio", "transcript": text}
        else:
            part.text = text
            await self.send(server_event("response.output_text.done", **self._where(), text=text))
            wire_part = {"type": "text", "text": text}
        await self.send(server_event("response.content_part.done", **self._where(), part=wire_part))
        item.status = "incomplete" if self.reply.cancelled.is_set() else "completed"
        await self._finish_item(item)

    async def _function_call(self, call_id: str, name: str, arguments: str) -> None:
        """One tool call of the model as a `function_call` item, its arguments streamed then done."""
        item = Item(new_id("item"), "function_call", call_id=call_id, name=name, arguments="", status="in_progress")
        await self._add_item(item)
        where = {"response_id": self.id, "item_id": item.id, "output_index": self.output.index(item), "call_id": call_id}
        await self.send(server_event("response.function_call_arguments.delta", **where, delta=arguments))
        await self.send(server_event("response.function_call_arguments.done", **where, name=name, arguments=arguments))
        item.arguments, item.status = arguments, "completed"
        await self._finish_item(item)
