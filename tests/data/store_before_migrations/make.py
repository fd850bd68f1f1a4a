"""Fill a new database with the store of the release before migrations (commit 9137b56): run with that release's code first
on the path, `PYTHONPATH=OLD_CHECKOUT python make.py URL`, then dump it (sqlite3's iterdump; pg_dump --inserts --no-owner
--no-privileges with its comments, SET lines and psql meta-commands removed)."""

import hashlib
import sys
from datetime import UTC, datetime

from assistant.reminders import ReminderStore
from assistant.store import PartRecord, Store

url = sys.argv[1]
store = Store(url)
reminders = ReminderStore(store.engine)
alice = store.create_conversation("alice", "c-alice")
bob = store.create_conversation("bob", "c-bob")
png = bytes(range(64))
sha = hashlib.sha256(png).hexdigest()
begun = store.begin_turn(alice, [PartRecord("text", "what is in this picture?")], history_limit=5)
user = store.add_user_turn(alice, [PartRecord("text", "and this one?"), PartRecord("image", attachment_sha256=sha)], attachments=[("image/png", png)])
store.finish_reply(begun.reply_id, text="A cat on a sofa. ünïcödé ✓", status="completed", usage={"completion_tokens": 7}, last_seq=12)
reply = store.begin_reply(alice, user, history_limit=5)
call = PartRecord("tool_call", '{"call_id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}, "needs_confirmation": false}')
result = PartRecord("tool_result", '{"call_id": "c1", "name": "add", "status": "ok", "result": 5, "error": null}')
store.finish_reply(reply.reply_id, text="It is 5.", status="completed", parts=[call, result], last_seq=20)
store.put_image_features("clip-test", {sha: b"\x00\x01\x02\x03" * 6}, 6)
store.put_image_descriptions({(sha, "ocr"): "HELLO", (sha, "labels"): None})
store.begin_turn(bob, [PartRecord("text", "count")], history_limit=5)  # left in progress: a crash
store.add_generated_images("bob", "a red square", [("image/png", b"\x89PNG fake")])
reminders.create("alice", alice, "water the plants", datetime(2031, 1, 2, 9, 30, tzinfo=UTC), "Europe/Berlin", "reminder", 10)
reminders.create("bob", None, "tea", datetime(2026, 1, 1, 8, 0, tzinfo=UTC), "UTC", "timer", 10)
reminders.claim_due(datetime(2026, 1, 1, 8, 0, 5, tzinfo=UTC), ["bob"])
store.close()
