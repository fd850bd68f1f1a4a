"""The built-in tools (reminders, timers, time, painting, image search), their due phrases, and the fast path's score."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from assistant_plugins.builtin_tools import tools
from assistant_plugins.builtin_tools import sentences
from assistant_plugins.builtin_tools.sentences import parse_duration, parse_when

from assistant import events
from assistant.app import App
from assistant.conversation import Conversation, open_conversation
from assistant.errors import AssistantError
from assistant.store import PartRecord
from assistant.tools import ToolContext
from bench.tool_use import fast_path, load_set, score
from tests import images
from tests.conftest import WITH_BUILTIN_TOOLS, make_config
from tests.conversations import Recorder
from tests.fakes import ColourEncoder, FakeEnginesPlugin, ScriptedDialogue, StepPainter

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_fast_path_scores_on_the_tool_use_set():
    """The fast path picks the right tool with the right arguments for >= 90% of the set and never calls a tool on a must-not request."""
    now, requests = load_set()
    misses: list[str] = []
    result = score(fast_path, now, requests, misses)
    assert len(requests) >= 30 and result.must_not >= 8
    assert result.false_calls == 0, misses
    assert result.overall >= 0.9, misses


def test_the_word_check_before_hassil_never_turns_away_a_sentence_hassil_matches(monkeypatch):
    """`may_match` only saves work: every request of the tool-use set (and a few more) routes the same with and without it,
    and it turns away sentences that ask for no tool."""
    _, requests = load_set()
    texts = [request["text"] for request in requests] + [
        "Could you please remind me on Friday at 3 pm to water the plants", "what's today's date", "cancel my dentist reminder",
        "search my photos for a red car", "Which photos show the sea?", "ping", "What is the capital of France?",
    ]
    assert not sentences.may_match("ping") and not sentences.may_match("Why is the sky blue?")
    assert sentences.may_match("What's the time?")
    with_check = {text: sentences.match(text) for text in texts}
    monkeypatch.setattr(sentences, "may_match", lambda text: True)
    assert {text: sentences.match(text) for text in texts} == with_check
    assert sum(found is not None for found in with_check.values()) >= 30


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("tomorrow at 9", "2026-05-06T09:00"),
        ("in 10 minutes", "2026-05-05T14:40"),
        ("on Friday at 3 pm", "2026-05-08T15:00"),
        ("on Tuesday at 9", "2026-05-12T09:00"),  # today is Tuesday: the next one
        ("at 9", "2026-05-06T09:00"),  # 9:00 has passed today
        ("at 11 pm", "2026-05-05T23:00"),
        ("at noon tomorrow", "2026-05-06T12:00"),
        ("in 1 hour and 15 minutes", "2026-05-05T15:45"),
        ("on January 2", "2027-01-02T09:00"),
        ("2026-06-01T08:15", "2026-06-01T08:15"),
        ("2026-06-01 08:15+00:00", "2026-06-01T10:15"),
    ],
)
def test_due_phrases_resolve_in_the_users_time_zone(phrase, expected):
    """Relative phrases and ISO 8601 turn into absolute times in the user's zone (now: Tuesday 5 May 2026, 14:30 in Berlin)."""
    now = datetime(2026, 5, 5, 14, 30, tzinfo=BERLIN)
    due = parse_when(phrase, now)
    assert due.tzinfo is not None and due.astimezone(BERLIN).replace(tzinfo=None) == datetime.fromisoformat(expected)


def test_due_phrases_cross_daylight_saving_at_the_wall_clock_time():
    """"tomorrow at 9" the day before Berlin's clocks go forward is 9:00 local summer time (07:00 UTC)."""
    due = parse_when("tomorrow at 9", datetime(2026, 3, 28, 20, 0, tzinfo=BERLIN))
    assert due.isoformat() == "2026-03-29T09:00:00+02:00"


@pytest.mark.parametrize("phrase", ["", "whenever", "yesterday", "at 25", "on February 30", "in 0 minutes", "x" * 500, "2026-13-01T00:00"])
def test_phrases_that_are_not_times_are_refused(phrase):
    """Words that are not a date or time, impossible dates and overlong phrases raise ValueError."""
    with pytest.raises(ValueError):
        parse_when(phrase, datetime(2026, 5, 5, 14, 30, tzinfo=BERLIN))


def test_durations():
    """Timer lengths in words become timedeltas; nonsense is refused."""
    assert parse_duration("10 minutes") == timedelta(minutes=10)
    assert parse_duration("half an hour") == timedelta(minutes=30)
    assert parse_duration("1 hour and 30 minutes") == timedelta(minutes=90)
    with pytest.raises(ValueError):
        parse_duration("a while")


@pytest.fixture
async def tool_app(tmp_path):
    """An app with fake dialogue, painter and colour encoder, and a conversation of `alice` on it with its recorder."""
    plugin = FakeEnginesPlugin(ScriptedDialogue(), encoder=ColourEncoder(), painter=StepPainter(steps=2))
    app = await App.start(make_config(tmp_path, engines={"dialogue": "fake", "image_generator": "fake", "image_encoder": "fake"}, plugins=WITH_BUILTIN_TOOLS), [plugin])
    conversation_id, _, _ = await open_conversation(app, "alice", None)
    recorder = Recorder()
    conversation = Conversation(app, conversation_id, "alice", recorder, recorder.tell)
    yield app, conversation, recorder
    await app.drain(0)
    await app.stop()


def context(app: App, conversation: Conversation | None, principal: str = "alice", now: datetime | None = None) -> ToolContext:
    """A tool call's context in Berlin."""
    return ToolContext(
        principal=principal, conversation_id=conversation.id if conversation else None, timezone=BERLIN,
        now=now or datetime.now(BERLIN), app=app, conversation=conversation,
    )


async def test_the_plugin_registers_every_tool_with_a_schema(tool_app):
    """Every built-in tool is registered with a description and a JSON Schema that leaves out the ToolContext."""
    app, _, _ = tool_app
    for function in tools.TOOLS:
        tool = app.tools[function.__name__]
        assert tool.description and tool.parameters["type"] == "object" and "ctx" not in tool.parameters["properties"]
    assert app.tools["set_reminder"].parameters["required"] == ["text", "due"]


def test_the_fast_path_is_asked_before_the_keyword_router(tmp_path):
    """The built-in routers: the tools' fast path first, the trylast keyword router for pictures last."""
    from assistant.routes import ToolRoute, first_route

    routers = App.prepare(make_config(tmp_path, plugins=WITH_BUILTIN_TOOLS)).registrations.routers
    assert [r.name for r in routers] == ["builtin_tools_fast_path", "keyword_image"]
    assert first_route(routers, "remind me in 5 minutes to stretch") == ToolRoute("set_reminder", {"text": "stretch", "due": "in 5 minutes"})
    assert first_route(routers, "draw a dog").prompt == "a dog"
    assert first_route(routers, "tell me about dogs") is None


async def test_reminders_are_set_listed_and_cancelled_by_their_owner_only(tool_app):
    """set_reminder stores tomorrow 09:00 Berlin time and says so; list shows it; bob cannot cancel it; alice can, once."""
    app, conversation, _ = tool_app
    now = datetime(2026, 5, 5, 14, 30, tzinfo=BERLIN) if datetime.now(BERLIN) < datetime(2026, 5, 5, tzinfo=BERLIN) else datetime.now(BERLIN)
    ctx = context(app, conversation, now=now)
    result = await tools.set_reminder(ctx, "call the dentist", "tomorrow at 9")
    due = datetime.fromisoformat(result["reminder"]["due_at"])
    assert due == datetime.combine(now.date() + timedelta(days=1), datetime.min.time().replace(hour=9), BERLIN)
    assert result["confirmation"] == "OK, I'll remind you to call the dentist tomorrow at 9:00 AM."
    timer = await tools.set_timer(ctx, "10 minutes", "pasta")
    assert timer["confirmation"] == "Timer set for 10 minutes." and timer["reminder"]["kind"] == "timer"
    listed = await tools.list_reminders(ctx)
    assert [r["text"] for r in listed["reminders"]] == ["pasta timer (10 minutes)", "call the dentist"]
    assert listed["confirmation"].startswith("You have 2 reminders: pasta timer")
    with pytest.raises(AssistantError) as refused:
        await tools.cancel_reminder(context(app, None, principal="bob"), result["reminder"]["id"])
    assert refused.value.code == "not_found"
    assert (await tools.list_reminders(context(app, None, principal="bob")))["reminders"] == []
    cancelled = await tools.cancel_reminder(ctx, "dentist")
    assert cancelled["reminder"]["cancelled"] and cancelled["confirmation"].startswith("Cancelled: call the dentist")
    with pytest.raises(AssistantError) as refused:
        await tools.cancel_reminder(ctx, "dentist")
    assert refused.value.code == "not_found"
    assert (await tools.cancel_reminder(ctx, "timer"))["reminder"]["kind"] == "timer"


async def test_bad_due_times_are_refused_with_what_to_say(tool_app):
    """A phrase that is not a time, a time in the past and an absurd date are bad_request, and nothing is stored."""
    app, conversation, _ = tool_app
    ctx = context(app, conversation)
    for due in ("whenever you like", "2001-01-01T09:00", "9999-01-01T09:00"):
        with pytest.raises(AssistantError) as refused:
            await tools.set_reminder(ctx, "x", due)
        assert refused.value.code == "bad_request"
    with pytest.raises(AssistantError) as refused:
        await tools.set_timer(ctx, "a while")
    assert refused.value.code == "bad_request" and "10 minutes" in refused.value.message
    assert (await tools.list_reminders(ctx))["reminders"] == []


async def test_the_time_is_told_in_the_users_zone(tool_app):
    """get_time answers in the session's zone, with the weekday, date and zone name."""
    app, conversation, _ = tool_app
    result = await tools.get_time(context(app, conversation, now=datetime(2026, 5, 5, 14, 30, tzinfo=BERLIN)))
    assert result["confirmation"] == "It is 2:30 PM on Tuesday, 5 May 2026 (Europe/Berlin)."
    assert result["now"] == "2026-05-05T14:30:00+02:00"


async def test_paint_starts_an_image_job_in_the_conversation(tool_app):
    """paint starts a job whose picture is stored and announced in the conversation."""
    app, conversation, recorder = tool_app
    result = await tools.paint(context(app, conversation), "a red fox in the snow")
    assert result["confirmation"] == "Painting “a red fox in the snow”…"
    started, done = (await recorder.wait_for(events.ImageStarted))[0], (await recorder.wait_for(events.ImageDone))[0]
    assert started.job_id == done.job_id == result["job_id"] and done.status == "completed" and started.prompt == "a red fox in the snow"
    with pytest.raises(AssistantError) as refused:
        await tools.paint(context(app, None), "anything")
    assert refused.value.code == "unsupported"


async def test_search_ranks_the_conversations_images(tool_app):
    """search_images finds the red picture for "red" among a red and a blue one, with its URL."""
    app, conversation, _ = tool_app
    assert app.store is not None
    pictures = {colour: images.solid(colour, (8, 8)) for colour in ("red", "blue")}
    for data in pictures.values():
        sha = hashlib.sha256(data).hexdigest()
        await app.store.add_user_turn(conversation.id, [PartRecord("image", attachment_sha256=sha, mime="image/png")], [("image/png", data)])
    result = await tools.search_images(context(app, conversation), "something red", limit=5)
    assert result["images"][0]["sha256"] == hashlib.sha256(pictures["red"]).hexdigest()
    assert len(result["images"]) == 2 and result["images"][0]["url"] in result["confirmation"]
