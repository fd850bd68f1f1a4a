"""The built-in tools: reminders and timers, the date and time, painting a picture, searching the conversation's images.

Plain async functions; the core builds each tool's schema from its type hints and docstring and fills
the `ToolContext` parameter. Every result is JSON data with a `confirmation`: the sentence the fast
path says to the user (a model answers from the data instead). A problem the user can act on is an
`AssistantError` whose message says what to do.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from assistant.errors import AssistantError
from assistant.image_features import search_images as rank_images
from assistant.image_jobs import check_capacity, image_generator, prepare, start_job
from assistant.tools import ToolContext

from .sentences import parse_duration, parse_when

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.reminders import ReminderRecord, Reminders
    from assistant.scope import ConversationScope

MAX_SEARCH_RESULTS = 10


def _app(ctx: ToolContext) -> App:
    return cast("App", ctx.app)


def _reminders(ctx: ToolContext) -> Reminders:
    reminders = _app(ctx).reminders
    if reminders is None:
        raise AssistantError("unavailable", "reminders need the store; the app has not started")
    return reminders


def spoken_time(moment: datetime, now: datetime) -> str:
    """`moment` as people say it, relative to `now` (same zone): "today at 9:00 AM", "tomorrow at 3:30 PM",
    "on Friday, 8 May at 9:00 AM"."""
    clock = moment.strftime("%I:%M %p").lstrip("0")
    days = (moment.date() - now.date()).days
    if days == 0:
        return f"today at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    year = f" {moment.year}" if moment.year != now.year else ""
    return f"on {moment.strftime('%A')}, {moment.day} {moment.strftime('%B')}{year} at {clock}"


def _due(ctx: ToolContext, phrase: str) -> datetime:
    try:
        return parse_when(phrase, ctx.now)
    except ValueError as exc:
        raise AssistantError("bad_request", f"due: {exc}") from None


def _zone_name(ctx: ToolContext) -> str:
    return str(ctx.timezone.key)


async def set_reminder(ctx: ToolContext, text: str, due: str) -> dict[str, Any]:
    """Remind the user of something at a date and time.

    Args:
        text: What to remind the user of, in a few words, such as "call the dentist".
        due: When, in the user's own words or ISO 8601 local time, such as "tomorrow at 9", "in 10 minutes", "on Friday at 3 pm" or "2025-06-01T09:00".
    """
    due_at = _due(ctx, due)
    record = await _reminders(ctx).create(ctx.principal, ctx.conversation_id, text, due_at, _zone_name(ctx), ctx.now)
    return {"reminder": record.to_dict(), "confirmation": f"OK, I'll remind you to {record.text} {spoken_time(due_at, ctx.now)}."}


async def set_timer(ctx: ToolContext, duration: str, label: str = "") -> dict[str, Any]:
    """Start a countdown timer that rings when the time is up.

    Args:
        duration: How long, such as "10 minutes", "1 hour and 30 minutes" or "half an hour".
        label: What the timer is for, such as "pasta" (optional).
    """
    try:
        span = parse_duration(duration)
    except ValueError as exc:
        raise AssistantError("bad_request", f"duration: {exc}") from None
    length = _span_words(span)
    text = f"{label.strip()} timer ({length})" if label.strip() else f"timer ({length})"
    record = await _reminders(ctx).create(ctx.principal, ctx.conversation_id, text, ctx.now + span, _zone_name(ctx), ctx.now, kind="timer")
    return {"reminder": record.to_dict(), "confirmation": f"Timer set for {length}."}


def _span_words(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " and ".join(parts) or "0 seconds"


def _describe(record: ReminderRecord, now: datetime) -> str:
    return f"{record.text} ({spoken_time(record.due_at.astimezone(now.tzinfo), now)})"


async def list_reminders(ctx: ToolContext) -> dict[str, Any]:
    """List the user's reminders and timers that have not gone off yet, soonest first."""
    records = await _reminders(ctx).active(ctx.principal)
    if not records:
        sentence = "You have no reminders or timers set."
    else:
        sentence = f"You have {len(records)} reminder{'s' if len(records) != 1 else ''}: " + "; ".join(_describe(r, ctx.now) for r in records) + "."
    return {"reminders": [r.to_dict() for r in records], "confirmation": sentence}


async def cancel_reminder(ctx: ToolContext, reminder: str) -> dict[str, Any]:
    """Cancel one of the user's reminders or timers.

    Args:
        reminder: The reminder's id, or words of its text such as "dentist", or "timer" for the latest timer.
    """
    reminders = _reminders(ctx)
    records = await reminders.active(ctx.principal)
    wanted = " ".join(reminder.lower().split())
    chosen = next((r for r in records if r.id == reminder.strip()), None)
    if chosen is None and wanted:
        if wanted in ("timer", "the timer", "my timer"):
            timers = [r for r in records if r.kind == "timer"]
            chosen = timers[0] if len(timers) == 1 else None
            if len(timers) > 1:
                raise AssistantError("bad_request", f"you have {len(timers)} timers; say which: " + "; ".join(r.text for r in timers))
        else:
            found = [r for r in records if wanted in r.text.lower()]
            if len(found) > 1:
                raise AssistantError("bad_request", f"{len(found)} reminders match {reminder!r}; say which: " + "; ".join(r.text for r in found))
            chosen = found[0] if found else None
    if chosen is None:
        raise AssistantError("not_found", f"no waiting reminder or timer matches {reminder!r}")
    cancelled = await reminders.cancel(ctx.principal, chosen.id)
    return {"reminder": cancelled.to_dict(), "confirmation": f"Cancelled: {_describe(cancelled, ctx.now)}."}


async def get_time(ctx: ToolContext) -> dict[str, Any]:
    """Tell the current date and time in the user's time zone."""
    now = ctx.now
    clock = now.strftime("%I:%M %p").lstrip("0")
    sentence = f"It is {clock} on {now.strftime('%A')}, {now.day} {now.strftime('%B %Y')} ({_zone_name(ctx)})."
    return {"now": now.isoformat(timespec="seconds"), "timezone": _zone_name(ctx), "weekday": now.strftime("%A"), "confirmation": sentence}


async def paint(ctx: ToolContext, prompt: str) -> dict[str, Any]:
    """Paint a picture from a description; it appears in the conversation when done.

    Args:
        prompt: What the picture shows, such as "a red fox in the snow, watercolour".
    """
    if ctx.conversation is None:
        raise AssistantError("unsupported", "painting needs a conversation to put the picture in")
    conversation = cast("ConversationScope", ctx.conversation)
    app = _app(ctx)
    request = prepare(image_generator(app.engines), {"prompt": prompt}, None)
    check_capacity(conversation, None)  # the place it takes is used by start_job's engine call (or given back when the turn ends)
    job = await start_job(conversation, request, prompt_turn=False)
    return {"job_id": job.job_id, "prompt": request.prompt, "confirmation": f"Painting “{request.prompt}”…"}


async def search_images(ctx: ToolContext, query: str, limit: int = 3) -> dict[str, Any]:
    """Find the images of this conversation (sent or painted) that best match a description.

    Args:
        query: What the image shows, such as "a cat on a sofa".
        limit: How many images to return, best first (1 to 10).
    """
    if ctx.conversation_id is None:
        raise AssistantError("unsupported", "searching images needs a conversation")
    hits = await rank_images(_app(ctx), ctx.conversation_id, query, max(1, min(limit, MAX_SEARCH_RESULTS)))
    urls = [f"/attachments/{h.sha256}" for h in hits]
    found = [{"sha256": h.sha256, "turn_id": h.turn_id, "url": url, "score": h.score} for h, url in zip(hits, urls)]
    if not found:
        sentence = "There are no images in this conversation yet."
    else:
        sentence = f"The image that best matches “{query}” is {urls[0]}" + (f" (then {', '.join(urls[1:])})." if len(urls) > 1 else ".")
    return {"images": found, "confirmation": sentence}


TOOLS = (set_reminder, set_timer, list_reminders, cancel_reminder, get_time, paint, search_images)
"""Every built-in tool, in the order they are registered (and offered to a model)."""
