"""The built-in tools' sentence templates (sentences.yaml, matched by hassil) and what their slots mean in time.

`match(text)` finds the tool a sentence asks for and its slots. `parse_when(phrase, now)` turns a due
phrase ("tomorrow at 9", "in 10 minutes", "on Friday at 3 pm", or ISO 8601) into an aware datetime in
`now`'s time zone; `parse_duration` does the same for "10 minutes". The fast path and the tools share
them, so a model that copies the user's words into `due` gets the same answer as the fast path.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, cast

import yaml
from hassil import Intents, recognize_all

SENTENCES = Path(__file__).with_name("sentences.yaml")
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
DEFAULT_HOUR = 9
"""A reminder for a day with no time ("tomorrow") is due at this hour."""
MAX_PHRASE_CHARS = 200
WILDCARDS = ("task", "label", "which", "query")


@functools.lru_cache(maxsize=1)
def _sentences_data() -> dict[str, Any]:
    """sentences.yaml as data (read once; the compiled templates and the fast-path words both come from it)."""
    return cast(dict[str, Any], yaml.safe_load(SENTENCES.read_text(encoding="utf-8")))


@functools.lru_cache(maxsize=1)
def intents() -> Intents:
    """The compiled templates (read once)."""
    return Intents.from_dict(_sentences_data())


ROUTING_INTENTS_SKIPPED = ("When", "Duration")
"""Intents that parse a phrase for a tool; they never claim a turn."""
_WORD = re.compile(r"[\w']+")
_OPENERS, _CLOSERS = "([<{", ")]>}"


def _required_words(template: str) -> tuple[frozenset[str], ...]:
    """What a sentence must hold to match `template`: each literal word outside every bracket, and for a group
    `(a|b c|d [e])` one of its alternatives' first words (when every alternative starts with a word). Optional parts,
    rules and slots require nothing."""
    groups: list[frozenset[str]] = []
    depth, outside, inner = 0, [], ""
    for char in template:
        if char in _OPENERS:
            depth += 1
            outside.append(" ")
            inner = char if depth == 1 else inner + char
        elif char in _CLOSERS:
            depth -= 1
            inner += char
            if depth == 0:
                firsts = [_WORD.findall(_leading_literal(alternative).lower())[:1] for alternative in _alternatives(inner[1:-1])]
                if inner[0] == "(" and all(firsts):
                    groups.append(frozenset(first[0] for first in firsts))
        elif depth == 0:
            outside.append(char)
        else:
            inner += char
    groups += [frozenset([word]) for word in _WORD.findall("".join(outside).lower())]
    return tuple(groups)


def _alternatives(group: str) -> list[str]:
    """The alternatives of a group's inside, split at its own `|` (not those of groups nested in it)."""
    depth, pieces, piece = 0, [], ""
    for char in group:
        depth += (char in _OPENERS) - (char in _CLOSERS)
        if char == "|" and depth == 0:
            pieces.append(piece)
            piece = ""
        else:
            piece += char
    return [*pieces, piece]


def _leading_literal(alternative: str) -> str:
    """An alternative's words before its first bracket (what it always starts with)."""
    for index, char in enumerate(alternative):
        if char in _OPENERS:
            return alternative[:index]
    return alternative


@functools.lru_cache(maxsize=1)
def required_words() -> tuple[tuple[frozenset[str], ...], ...]:
    """What each routing template requires (see `_required_words`): a sentence that lacks it for every template
    cannot match any."""
    data = _sentences_data()
    return tuple(
        _required_words(sentence)
        for name, intent in data["intents"].items() if name not in ROUTING_INTENTS_SKIPPED
        for block in intent["data"] for sentence in block["sentences"]
    )


@functools.lru_cache(maxsize=1)
def _templates_by_word() -> tuple[dict[str, list[tuple[frozenset[str], ...]]], bool]:
    """Each word of a template's first requirement -> the templates it may start; and whether some template requires nothing."""
    index: dict[str, list[tuple[frozenset[str], ...]]] = {}
    for required in required_words():
        for word in required[0] if required else ():
            index.setdefault(word, []).append(required)
    return index, any(not required for required in required_words())


def may_match(text: str) -> bool:
    """A cheap test before hassil: False when `text` lacks what every routing template requires (so most turns,
    which ask for no tool, cost a few dictionary lookups, not a parse)."""
    index, unconstrained = _templates_by_word()
    if unconstrained:
        return True
    words = set(_WORD.findall(text.lower().replace("\u2019", "'")))
    return any(all(group & words for group in required) for word in words for required in index.get(word, ()))


@dataclass(frozen=True)
class Match:
    """A sentence matched to an intent: its name and its slot values (wildcards as the user wrote them)."""

    intent: str
    slots: dict[str, Any]


def _clean(text: str) -> str:
    return " ".join(text.split()).strip(" .!?,;")


def match(text: str, only: tuple[str, ...] | None = None) -> Match | None:
    """The intent `text` asks for, or None. Among several readings, the one leaving the fewest words to wildcards
    (so "on Friday at 3 pm" stays a time, not part of the task). `only` limits the intents tried."""
    text = _clean(text)
    if not text or len(text) > 2000 or (only is None and not may_match(text)):
        return None
    best: tuple[int, Match] | None = None
    for result in recognize_all(text, intents()):
        name = result.intent.name
        if (only is None and name in ROUTING_INTENTS_SKIPPED) or (only is not None and name not in only):
            continue
        slots = {key: entity.value for key, entity in result.entities.items()}
        for key in WILDCARDS:
            if key in slots:
                slots[key] = _clean(str(slots[key]))
                if not slots[key]:
                    break
        else:
            wild = sum(len(str(slots[key])) for key in WILDCARDS if key in slots)
            if best is None or wild < best[0]:
                best = (wild, Match(name, slots))
    return None if best is None else best[1]


def _duration(slots: dict[str, Any]) -> timedelta | None:
    if "span" in slots:
        amount, unit = str(slots["span"]).split()
        return timedelta(seconds=int(amount) * UNIT_SECONDS[unit])
    if "amount" in slots and "unit" in slots:
        seconds = int(slots["amount"]) * UNIT_SECONDS[str(slots["unit"])]
        if "amount2" in slots and "unit2" in slots:
            seconds += int(slots["amount2"]) * UNIT_SECONDS[str(slots["unit2"])]
        return timedelta(seconds=seconds)
    return None


def _clock(slots: dict[str, Any]) -> time | None:
    """The time of day the slots name, or None. An hour from 1 to 6 without am/pm means the afternoon."""
    if "clock" in slots or "part_of_day" in slots:
        hour, minute = (int(x) for x in str(slots.get("clock") or slots["part_of_day"]).split(":"))
        return time(hour, minute)
    if "hour" not in slots:
        return None
    hour, minute = int(slots["hour"]), int(slots.get("minute", 0))
    ampm = slots.get("ampm")
    if ampm is not None:
        if not 1 <= hour <= 12:
            raise ValueError(f"{hour} {ampm} is not a time")
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    elif 1 <= hour <= 6:
        hour += 12
    return time(hour, minute)


def _day(slots: dict[str, Any], now: datetime) -> date | None:
    today = now.date()
    if "day" in slots:
        return today + timedelta(days=int(slots["day"]))
    if "weekday" in slots:
        ahead = (int(slots["weekday"]) - today.weekday()) % 7
        return today + timedelta(days=ahead or 7)
    if "month" in slots and "dom" in slots:
        month, dom = int(slots["month"]), int(slots["dom"])
    elif "dom" in slots:
        month, dom = today.month, int(slots["dom"])
    else:
        return None
    for year in (today.year, today.year + 1):
        try:
            day = date(year, month, dom)
        except ValueError:
            raise ValueError(f"there is no {dom} of month {month}") from None
        if day >= today:
            return day
    return date(today.year + 1, month, dom)


def resolve_when(slots: dict[str, Any], now: datetime) -> datetime:
    """The due time the slots of a `<when>` name, aware in `now`'s time zone. Rules: "in N units" counts from now;
    a day without a time is at DEFAULT_HOUR; a time without a day is today, or tomorrow once it has passed."""
    zone = now.tzinfo
    span = _duration(slots)
    if span is not None and "hour" not in slots:
        return now + span
    clock, day = _clock(slots), _day(slots, now)
    if day is None and clock is None:
        raise ValueError("no date or time")
    if day is None:
        assert clock is not None
        due = datetime.combine(now.date(), clock, zone)
        return due if due > now else datetime.combine(now.date() + timedelta(days=1), clock, zone)
    return datetime.combine(day, clock or time(DEFAULT_HOUR), zone)


def parse_when(phrase: str, now: datetime) -> datetime:
    """A due phrase in the user's words or ISO 8601 (no offset: the user's time zone) as an aware datetime in
    `now`'s zone; ValueError saying what was not understood."""
    phrase = _clean(phrase)
    if not phrase or len(phrase) > MAX_PHRASE_CHARS:
        raise ValueError("give the time as a phrase such as 'tomorrow at 9' or 'in 10 minutes', or as ISO 8601")
    if re.match(r"^\d{4}-\d{2}-\d{2}", phrase):
        try:
            value = datetime.fromisoformat(phrase.replace(" ", "T", 1) if " " in phrase and "T" not in phrase else phrase)
        except ValueError:
            raise ValueError(f"{phrase!r} is not an ISO 8601 date-time") from None
        return value.replace(tzinfo=now.tzinfo) if value.tzinfo is None else value.astimezone(now.tzinfo)
    found = match(phrase, only=("When",))
    if found is None:
        raise ValueError(f"{phrase!r} is not a time I understand; say e.g. 'tomorrow at 9', 'in 10 minutes', 'on Friday at 3 pm'")
    return resolve_when(found.slots, now)


def parse_duration(phrase: str) -> timedelta:
    """A length of time such as "10 minutes", "1 hour and 30 minutes", "half an hour"; ValueError otherwise."""
    found = match(_clean(phrase)[:MAX_PHRASE_CHARS], only=("Duration",))
    span = None if found is None else _duration(found.slots)
    if span is None:
        raise ValueError(f"{phrase!r} is not a length of time I understand; say e.g. '10 minutes' or 'an hour'")
    return span


def when_phrase(slots: dict[str, Any]) -> str:
    """The `<when>` slots of a match written back as a phrase `parse_when` reads the same way (for a tool's arguments)."""
    words: list[str] = []
    if "span" in slots:
        words.append(f"in {slots['span']}s" if not str(slots["span"]).startswith("1 ") else f"in {slots['span']}")
    elif "amount" in slots:
        words.append(f"in {int(slots['amount'])} {slots['unit']}s")
        if "amount2" in slots:
            words[-1] += f" and {int(slots['amount2'])} {slots['unit2']}s"
    names = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    months = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december")
    if "day" in slots:
        words.append({"0": "today", "1": "tomorrow", "2": "the day after tomorrow"}[str(slots["day"])])
    elif "weekday" in slots:
        words.append(f"on {names[int(slots['weekday'])]}")
    elif "month" in slots and "dom" in slots:
        words.append(f"on {months[int(slots['month']) - 1]} {int(slots['dom'])}")
    elif "dom" in slots:
        words.append(f"on the {int(slots['dom'])}")
    if "clock" in slots or "part_of_day" in slots or "hour" in slots:
        clock = _clock(slots)
        assert clock is not None
        words.append(f"at {clock.hour}:{clock.minute:02d}")
    return " ".join(words)
