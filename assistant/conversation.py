"""A client's hold on one conversation: its turns in order, their cancel, its image jobs. No socket, no JSON.

A dialect opens a conversation for a principal (`open_conversation`), then hands it requests: turns
(`create_turn`, `submit_turn`), cancels, image requests, history and search. The conversation's
events go to its `emit` (the conversation's channel, so every follower sees them); an error about a
turn that failed in the background goes to `tell`, this client only. Turns of one client run one
after another, off the dialect's read loop; image jobs run beside them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from assistant.engines import GenerationOptions
from assistant.errors import AssistantError
from assistant.image_features import SearchHit, search_images
from assistant.image_jobs import ImageJob, check_capacity, image_generator, prepare, start_job
from assistant.scope import ConversationScope
from assistant.store import TurnRecord
from assistant.turns import PartIn, TurnInput, decode_turn, release_media, run_turn
from assistant.types import Emit, Tell

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.conversation")


async def open_conversation(app: App, principal: str, conversation_id: str | None, ref: str | None = None) -> tuple[str, int, bool]:
    """A new conversation for `principal`, or one of theirs resumed: (id, its stored last seq, resumed).

    Another principal's conversation is not_found, exactly like one that does not exist.
    """
    assert app.store is not None
    if conversation_id is None:
        wait = app.conversation_rate.take(principal)
        if wait is not None:
            per_minute = app.config.limits.conversations_per_minute
            raise AssistantError("rate_limited", f"at most {per_minute} new conversations per minute; try again in {wait:.0f} s", ref)
        return await app.store.create_conversation(principal), 0, False
    last_seq = await app.store.conversation_last_seq(conversation_id, owner=principal)
    if last_seq is None:
        raise AssistantError("not_found", f"no conversation {conversation_id!r}", ref)
    return conversation_id, last_seq, True


HISTORY_PAGE_TURNS = 100
"""Turns in one page of history unless the client asks for fewer (or more, up to HISTORY_MAX_TURNS)."""
HISTORY_MAX_TURNS = 1000
HISTORY_PAGE_CHARS = 1_000_000
"""A page stops before the turn whose text would take it past this many characters (it holds one turn at least)."""


async def history(
    app: App, principal: str | None, conversation_id: str, ref: str | None = None, before: str | None = None,
    limit: int = HISTORY_PAGE_TURNS,
) -> tuple[list[TurnRecord], bool]:
    """One page of one of `principal`'s conversations (None: any owner, auth off): up to `limit` turns older than
    turn `before` (None: the newest), oldest first, and whether older ones remain. Bounded in turns and characters,
    so a long conversation never becomes one huge answer."""
    assert app.store is not None
    if await app.store.conversation_last_seq(conversation_id, owner=principal) is None:
        raise AssistantError("not_found", f"no conversation {conversation_id!r}", ref)
    page = await app.store.history_page(conversation_id, before, max(1, min(limit, HISTORY_MAX_TURNS)), HISTORY_PAGE_CHARS)
    if page is None:
        raise AssistantError("not_found", f"no turn {before!r} in conversation {conversation_id!r}", ref)
    return page


class Conversation(ConversationScope):
    """One client's turns, cancels and image jobs in one conversation."""

    def __init__(self, app: App, conversation_id: str, principal: str, emit: Emit, tell: Tell) -> None:
        super().__init__(app, conversation_id, principal, emit, tell)
        self._turn_lock = asyncio.Lock()
        self._turns: set[asyncio.Task[None]] = set()

    def busy(self) -> bool:
        """True while this client has a turn or an image job queued or running here."""
        return bool(self.jobs) or any(not task.done() for task in self._turns)

    def create_turn(self, parts: Callable[[], Sequence[PartIn]], options: GenerationOptions, ref: str | None) -> None:
        """Queue a turn whose parts `parts()` gives (called in the turn's task, so decoding waits its turn).

        A reply still talking is cut (barge-in): the new turn does not wait for its speech; a tool call
        still waiting for the user's confirmation is declined (the user moved on)."""
        self._queue(lambda: self._decode_and_run(parts, options, ref), ref)
        self.barge_in()
        self.decline_waiting_tools()

    async def _decode_and_run(self, parts: Callable[[], Sequence[PartIn]], options: GenerationOptions, ref: str | None) -> None:
        turn = await decode_turn(self.app, parts(), options, ref)
        try:
            await run_turn(self, turn, ref)
        finally:
            release_media(self.app, turn)

    def submit_turn(self, turn: TurnInput, ref: str | None) -> None:
        """Queue a turn built elsewhere (a committed utterance) behind this client's other turns, cutting a reply still talking."""
        self._queue(lambda: run_turn(self, turn, ref), ref)
        self.barge_in()
        self.decline_waiting_tools()

    def barge_in(self) -> bool:
        """The user talks over the assistant: a reply of this client still speaking stops at once, text and speech.

        Returns whether one was cut. What the user heard is stored with the reply (see `audio_played`)."""
        speaker = self.speaker
        if speaker is None or not speaker.talking:
            return False
        for reply in self.app.replies:
            if reply.response_id == speaker.response_id:
                reply.cancel()
        return True

    async def audio_played(self, response_id: str, played_ms: int, ref: str | None) -> None:
        """The client played `played_ms` of a reply's speech: when that is less than all of it, store what was heard,
        which the next turns' context uses instead of the whole reply."""
        speaker = self.speakers.get(response_id)
        if speaker is None:
            raise AssistantError("not_found", f"no spoken reply {response_id!r} in this conversation", ref)
        assert self.app.store is not None
        speaker.played_ms = played_ms  # a speech still ending stores this, not its own estimate
        sent = speaker.segments[-1][1] if speaker.segments else 0
        if played_ms * speaker.speech.voice.sample_rate // 1000 < sent or speaker.talking:
            await self.app.store.set_heard(response_id, speaker.heard(played_ms))

    def _queue(self, run: Callable[[], Awaitable[None]], ref: str | None) -> None:
        if not self.app.accepting_turns:
            raise AssistantError("unavailable", "the server is shutting down", ref)
        limit = self.app.config.server.max_queued_turns
        if len(self._turns) >= limit:
            raise AssistantError("rate_limited", f"{limit} turns are already waiting on this connection", ref)
        self.take_turn(ref)
        task = asyncio.create_task(self._turn(run, ref))
        for tasks in (self._turns, self.app.turns):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _turn(self, run: Callable[[], Awaitable[None]], ref: str | None) -> None:
        async with self._turn_lock:
            try:
                if not self.app.accepting_turns:  # queued before shutdown began, never started
                    raise AssistantError("unavailable", "the server is shutting down", ref)
                await run()
            except AssistantError as exc:
                await self.tell(exc.about(ref))
            except Exception as exc:
                log.exception("turn failed")
                await self.tell(AssistantError("internal", f"the turn failed: {type(exc).__name__}", ref))
            finally:
                self.app.scheduler.release_admissions()

    def take_turn(self, ref: str | None) -> None:
        """Count a turn against the principal's per-minute allowance; rate_limited past it."""
        wait = self.app.turn_rate.take(self.principal)
        if wait is not None:
            per_minute = self.app.config.limits.turns_per_minute
            raise AssistantError("rate_limited", f"at most {per_minute} turns per minute; try again in {wait:.0f} s", ref)

    def cancel_reply(self, response_id: str, ref: str | None) -> None:
        """Stop a reply of this conversation at its next token; not_found if none is in progress."""
        for reply in self.app.replies:
            if reply.response_id == response_id and reply.conversation_id == self.id:
                reply.cancel()
                return
        raise AssistantError("not_found", f"no reply {response_id!r} in progress in this conversation", ref)

    def decline_waiting_tools(self) -> None:
        """The user sent a new turn instead of answering: tool calls of this conversation waiting for confirmation are declined."""
        for reply in self.app.replies:
            if reply.conversation_id == self.id:
                for answer in reply.confirmations.values():
                    if not answer.done():
                        answer.set_result(False)

    def confirm_tool(self, call_id: str, approved: bool, ref: str | None) -> None:
        """The user's answer to a tool call of this conversation waiting for confirmation; not_found if none waits."""
        for reply in self.app.replies:
            if reply.conversation_id == self.id:
                answer = reply.confirmations.get(call_id)
                if answer is not None and not answer.done():
                    answer.set_result(approved)
                    return
        raise AssistantError("not_found", f"no tool call {call_id!r} is waiting for confirmation in this conversation", ref)

    async def generate_image(self, params: dict[str, Any], ref: str | None) -> ImageJob:
        """Start an image job for a prompt of its own (`params`: prompt, negative_prompt, width, height, steps, guidance, seed)."""
        if not self.app.accepting_turns:
            raise AssistantError("unavailable", "the server is shutting down", ref)
        request = prepare(image_generator(self.app.engines, ref), params, ref)
        try:
            check_capacity(self, ref)
            self.take_turn(ref)
            return await start_job(self, request, prompt_turn=True)
        finally:
            self.app.scheduler.release_admissions()

    def cancel_image(self, job_id: str, ref: str | None) -> None:
        """Stop an image job of this conversation at its next step; not_found if none is in progress."""
        for job in self.app.image_jobs:
            if job.job_id == job_id and job.conversation_id == self.id:
                job.cancel()
                return
        raise AssistantError("not_found", f"no image job {job_id!r} in progress in this conversation", ref)

    async def search(self, query: str, limit: int, ref: str | None) -> tuple[str, list[SearchHit]]:
        """This conversation's images ranked against `query`: (the encoder's id, hits best first)."""
        hits = await search_images(self.app, self.id, query, limit, ref)
        return self.app.engines["image_encoder"].id, hits

    def leave(self) -> None:
        """The client has gone: cancel its image jobs. Its text turns still finish and are stored."""
        for job in list(self.jobs):
            job.cancel()
