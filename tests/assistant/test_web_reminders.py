"""The web page shows a reminder that goes off as a card with its text, time and place (Debian's Chromium via Playwright).

A screenshot is saved to test-artifacts/reminder-card.png for a person to look at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.async_api import async_playwright, expect

from tests.assistant.test_web import ARTIFACTS, launch, watch_page
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


async def test_a_due_reminder_shows_as_a_card_with_time_and_place(start_server, tmp_path):
    """The page sends the browser's time zone; a reminder due 2 s later appears as a card: text, local time and zone, conversation."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await (await browser.new_context(timezone_id="Europe/Berlin", locale="en-GB")).new_page()
        errors = await watch_page(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        await page.fill("#input", "hello")
        await page.press("#input", "Enter")
        await expect(page.locator(".message.assistant .text")).to_have_text("You said: hello")
        conversation_id = await page.evaluate("localStorage.getItem('assistant.conversation')")
        assert conversation_id, "the page remembers its conversation"
        now = datetime.now(UTC)
        due = (now + timedelta(seconds=2)).replace(microsecond=0)
        await server.app.reminders.create("local", conversation_id, "call the dentist", due, "Europe/Berlin", now)
        card = page.locator(".message.reminder")
        await expect(card).to_be_visible(timeout=30_000)
        await expect(card.locator("strong")).to_have_text("Reminder")
        await expect(card.locator(".text")).to_have_text("call the dentist")
        local = due.astimezone(ZoneInfo("Europe/Berlin"))
        await expect(card.locator("time")).to_contain_text(f"{local:%H:%M}")
        await expect(card.locator("time")).to_contain_text("(Europe/Berlin)")
        await expect(card.locator(".note")).to_have_text("Set in this conversation")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "reminder-card.png"))
        assert errors == []
        await browser.close()
