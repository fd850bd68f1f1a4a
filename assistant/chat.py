"""`assistant chat`: the terminal client. Type a line, watch the reply stream; attach images, send audio, paint.

Commands: `/image PATH` attaches an image to the next message, `/audio PATH` sends a recording as a
turn, `/imagine PROMPT` paints a picture (a progress bar while it paints; the PNG is saved and its
path printed), `/history`, `/new`, `/quit`. Ctrl-C stops a streaming reply or a painting job.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

HELP = "commands: /image PATH, /audio PATH, /imagine PROMPT, /history, /new, /quit"
LENGTH_NOTE = "[cut off at the token limit; say 'go on' for more]"
AUDIO_FORMATS = {".wav": "wav", ".mp3": "mp3", ".ogg": "ogg", ".opus": "ogg", ".webm": "webm", ".flac": "flac"}


def cmd_chat(args: argparse.Namespace) -> int:
    """Run the terminal client against `args.url` until /quit or end of input."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    try:
        url = websocket_url(args.url)
    except ValueError as exc:
        print(f"assistant: {exc}", file=sys.stderr)
        return 2
    try:
        ws = connect(url, max_size=None, open_timeout=args.timeout, additional_headers=headers)
    except InvalidStatus as exc:
        print(f"assistant: the server refused the connection: {exc.response.status_code} {exc.response.body.decode(errors='replace').strip()}",
              file=sys.stderr)
        return 1
    with ws:
        client = ChatClient(ws, Path(args.save_dir))
        conversation_id = client.start(args.conversation)
        print(f"conversation {conversation_id}  ({HELP.removeprefix('commands: ')}; Ctrl-C stops a reply)")
        while True:
            try:
                line = input("> ")
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if not client.command(line.strip()):
                return 0


def websocket_url(url: str) -> str:
    """The websocket URL for what a user typed: ws:// and wss:// as they are; http:// and https:// (the
    web page's address) become ws:// and wss:// with the path /ws when none is given. Else ValueError."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"--url {url!r}: give the server's address as ws://HOST:PORT/ws (or http://HOST:PORT/, the web page's address)")
    path = parts.path if parts.path not in ("", "/") or scheme == parts.scheme.lower() else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class ChatClient:
    """One websocket conversation driven by typed lines."""

    def __init__(self, ws: Any, save_dir: Path, out: TextIO = sys.stdout) -> None:
        self.ws = ws
        self.save_dir = save_dir
        self.out = out
        self.images: list[tuple[str, bytes, str]] = []  # (mime, bytes, path) waiting for the next message

    def say(self, text: str) -> None:
        """Print a line for the user."""
        print(text, file=self.out, flush=True)

    def command(self, line: str) -> bool:
        """Act on one typed line; False means quit."""
        if not line:
            return True
        verb, _, rest = line.partition(" ")
        rest = rest.strip()
        if verb in ("/quit", "/exit"):
            return False
        if verb == "/new":
            self.say(f"conversation {self.start(None)}")
        elif verb == "/history":
            self.print_history()
        elif verb == "/image":
            self.attach_image(rest)
        elif verb == "/audio":
            self.send_audio(rest)
        elif verb == "/imagine":
            self.imagine(rest)
        elif verb.startswith("/"):
            self.say(HELP)
        else:
            self.turn([{"type": "text", "text": line}])
        return True

    def ask(self, question: str) -> bool:
        """A yes/no question to the user on standard input; no answer (end of input) is no."""
        try:
            return input(question).strip().lower() in ("y", "yes")
        except EOFError:
            return False

    def _send(self, event: dict[str, Any]) -> None:
        self.ws.send(json.dumps(event))

    def _wait_for(self, event_type: str) -> dict[str, Any]:
        while True:
            event = json.loads(self.ws.recv())
            if event["type"] == event_type:
                return event
            if event["type"] == "error":
                raise SystemExit(f"error ({event['code']}): {event['message']}")

    def start(self, conversation_id: str | None) -> str:
        """Start (or resume) a conversation; returns its id."""
        self._send({"type": "session.start", **({"conversation_id": conversation_id} if conversation_id else {})})
        return self._wait_for("session.started")["conversation_id"]

    def print_history(self) -> None:
        """Print the conversation so far, one line per turn."""
        self._send({"type": "conversation.get"})
        for turn in self._wait_for("conversation.history")["turns"]:
            words = []
            for part in turn["content"]:
                if part["type"] in ("text", "transcript", "image_request"):
                    words.append(part["text"])
                elif part["type"] in ("image", "audio"):
                    words.append(f"[{part['type']} {part.get('url', '')}]".replace(" ]", "]"))
            status = "" if turn["status"] == "completed" else f" [{turn['status']}]"
            self.say(f"{turn['role']}{status}: {' '.join(w for w in words if w)}")

    def attach_image(self, path_text: str) -> None:
        """Read an image file to send with the next message."""
        path = Path(path_text).expanduser()
        mime = mimetypes.guess_type(path.name)[0] or ""
        if not path_text:
            self.say("usage: /image PATH")
        elif not path.is_file():
            self.say(f"no such file: {path}")
        elif not mime.startswith("image/"):
            self.say(f"not an image file: {path} (PNG, JPEG, WebP or GIF)")
        else:
            self.images.append((mime, path.read_bytes(), str(path)))
            self.say(f"attached {path} ({path.stat().st_size} bytes); it goes with your next message")

    def send_audio(self, path_text: str) -> None:
        """Send a recording (WAV, MP3, Ogg/Opus, WebM, FLAC) as a spoken turn, with any attached images."""
        path = Path(path_text).expanduser()
        audio_format = AUDIO_FORMATS.get(path.suffix.lower())
        if not path_text:
            self.say("usage: /audio PATH")
        elif not path.is_file():
            self.say(f"no such file: {path}")
        elif audio_format is None:
            self.say(f"not a recording this client sends: {path} ({', '.join(sorted(AUDIO_FORMATS))})")
        else:
            data = base64.b64encode(path.read_bytes()).decode()
            self.turn([{"type": "audio", "format": audio_format, "data": data}])

    def imagine(self, prompt: str) -> None:
        """Ask for a picture of `prompt`; follow it to the end and save it."""
        if not prompt:
            self.say("usage: /imagine PROMPT")
            return
        self._run({"type": "image.generate", "prompt": prompt}, expect_reply=False)

    def turn(self, content: list[dict[str, Any]]) -> None:
        """Send a turn (attached images first) and follow its reply, and any picture it starts."""
        images = [{"type": "image", "mime": mime, "data": base64.b64encode(data).decode()} for mime, data, _ in self.images]
        self.images = []
        speech_only = all(part["type"] == "audio" for part in content) and not images
        self._run({"type": "turn.create", "content": [*images, *content]}, expect_reply=True, silence_ends=speech_only)

    def _run(self, event: dict[str, Any], expect_reply: bool, silence_ends: bool = False) -> None:
        """Send `event` and print what follows; Ctrl-C cancels the reply or the jobs.

        While it runs, SIGINT only sets a flag: raising KeyboardInterrupt inside the websockets
        client's recv() could leave the connection unusable or drop a message.
        """
        event["event_id"] = uuid.uuid4().hex
        interrupted = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda _signum, _frame: interrupted.set())
        try:
            self._send(event)
            _Follower(self, event["event_id"], expect_reply, interrupted, silence_ends).run()
        finally:
            signal.signal(signal.SIGINT, previous)


class _Follower:
    """Prints one request's events until its reply has ended and its image jobs are done."""

    def __init__(
        self, client: ChatClient, event_id: str, expect_reply: bool, interrupted: threading.Event, silence_ends: bool = False
    ) -> None:
        self.client = client
        self.silence_ends = silence_ends  # a turn of audio alone gets no reply when nothing was said
        self.event_id = event_id
        self.reply_open = expect_reply
        self.job_expected = not expect_reply
        self.interrupted = interrupted
        self.response_id: str | None = None
        self.jobs: dict[str, Any] = {}  # job_id -> tqdm progress bar
        self.cancel_sent = False

    def run(self) -> None:
        """Follow until nothing more is coming."""
        while self.reply_open or self.jobs or self.job_expected:
            if self.interrupted.is_set() and not self.cancel_sent:
                self._cancel()
            try:
                event = json.loads(self.client.ws.recv(timeout=0.1))
            except TimeoutError:
                continue
            self._on(event)

    def _cancel(self) -> None:
        if self.response_id and self.reply_open:
            self.client._send({"type": "response.cancel", "response_id": self.response_id})
        for job_id in self.jobs:
            self.client._send({"type": "image.cancel", "job_id": job_id})
        self.cancel_sent = bool(self.response_id or self.jobs)

    def _on(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        say = self.client.say
        if kind == "transcript.done":
            say(f"(you said) {event['text']}" if event["text"] else "(nothing was heard)")
            if not event["text"] and self.silence_ends:
                self.reply_open = False
        elif kind == "response.created":
            self.response_id = event["response_id"]
        elif kind == "response.text.delta":
            print(event["delta"], end="", file=self.client.out, flush=True)
        elif kind == "response.done":
            note = "" if event["status"] == "completed" else f"  [{event['status']}]"
            if event.get("finish_reason") == "length":
                note += f"  {LENGTH_NOTE}"
            if event.get("error"):
                note += f" {event['error']['message']}"
            say(note)
            self.reply_open = False
        elif kind == "tool.call" and event["response_id"] == self.response_id:
            say(f"(tool {event['name'] or '?'} {json.dumps(event['arguments'], ensure_ascii=False)})")
            if event.get("needs_confirmation"):
                approved = self.client.ask(f"run {event['name']}? [y/N] ")
                self.client._send({"type": "tool.confirm", "call_id": event["call_id"], "approved": approved})
        elif kind == "tool.result" and event["response_id"] == self.response_id:
            outcome = json.dumps(event.get("result"), ensure_ascii=False) if event["status"] == "ok" else event.get("error", "")
            say(f"(tool {event['name'] or '?'} {event['status']}: {outcome[:200]})")
        elif kind == "image.started":
            from tqdm import tqdm

            self.job_expected = False
            self.jobs[event["job_id"]] = tqdm(total=event["steps"], desc="painting", unit="step", file=sys.stderr)
        elif kind == "image.progress" and event["job_id"] in self.jobs:
            bar = self.jobs[event["job_id"]]
            bar.update(event["step"] - bar.n)
        elif kind == "image.done" and event["job_id"] in self.jobs:
            self.jobs.pop(event["job_id"]).close()
            say(self._finished(event))
        elif kind == "error" and event.get("ref") == self.event_id:
            say(f"error ({event['code']}): {event['message']}")
            self.reply_open = self.job_expected = False

    def _finished(self, event: dict[str, Any]) -> str:
        """Save a completed picture; the line to print about how the job ended."""
        if event["status"] != "completed":
            reason = f": {event['error']['message']}" if event.get("error") else ""
            return f"(image {event['status']}{reason})"
        self.client.save_dir.mkdir(parents=True, exist_ok=True)
        path = self.client.save_dir / f"{event['job_id']}.png"
        path.write_bytes(base64.b64decode(event["data"]))
        return f"image saved: {path} (seed {event['seed']})"
