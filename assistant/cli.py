"""Command line: `assistant serve | chat | plugins | models`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Sequence

from assistant.config import Config, ConfigError

DEFAULT_CONFIG = "config.toml"


def _load_config(path: str | None) -> Config:
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return Config.load(path)


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from assistant.server import serve_app

    config = _load_config(args.config)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port

    async def main() -> None:
        server = await serve_app(config)
        print(f"assistant: listening on ws://{config.server.host}:{server.port}/ws (Ctrl-C to stop)", flush=True)
        await server.run_until_signal()

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------- chat


def cmd_chat(args: argparse.Namespace) -> int:
    """A terminal client: type a line, watch the reply stream."""
    from websockets.sync.client import connect

    with connect(args.url, max_size=None, open_timeout=args.timeout) as ws:
        client = _ChatClient(ws)
        conversation_id = client.start(args.conversation)
        print(f"conversation {conversation_id}  (/history, /new, /quit; Ctrl-C stops a reply)")
        while True:
            try:
                line = input("> ")
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                return 0
            if line == "/new":
                print(f"conversation {client.start(None)}")
            elif line == "/history":
                client.print_history()
            elif line.startswith("/"):
                print("commands: /history, /new, /quit")
            else:
                client.turn(line)


class _ChatClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def _send(self, event: dict[str, Any]) -> None:
        self.ws.send(json.dumps(event))

    def _recv(self) -> dict[str, Any]:
        return json.loads(self.ws.recv())

    def _wait_for(self, event_type: str) -> dict[str, Any]:
        while True:
            event = self._recv()
            if event["type"] == event_type:
                return event
            if event["type"] == "error":
                raise SystemExit(f"error ({event['code']}): {event['message']}")

    def start(self, conversation_id: str | None) -> str:
        self._send({"type": "session.start", **({"conversation_id": conversation_id} if conversation_id else {})})
        return self._wait_for("session.started")["conversation_id"]

    def print_history(self) -> None:
        self._send({"type": "conversation.get"})
        for turn in self._wait_for("conversation.history")["turns"]:
            text = "".join(p.get("text", "") for p in turn["content"])
            status = "" if turn["status"] == "completed" else f" [{turn['status']}]"
            print(f"{turn['role']}{status}: {text}")

    def turn(self, text: str) -> None:
        """Send a text turn and print the reply as it streams; Ctrl-C cancels the reply.

        While a reply streams, SIGINT only sets a flag: raising KeyboardInterrupt inside the
        websockets client's recv() could leave the connection unusable or drop a message.
        """
        event_id = uuid.uuid4().hex
        interrupted = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda _signum, _frame: interrupted.set())
        try:
            self._send({"type": "turn.create", "event_id": event_id, "content": [{"type": "text", "text": text}]})
            self._follow_reply(event_id, interrupted)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _follow_reply(self, event_id: str, interrupted: threading.Event) -> None:
        response_id: str | None = None
        cancel_sent = False
        while True:
            if interrupted.is_set() and response_id and not cancel_sent:
                self._send({"type": "response.cancel", "response_id": response_id})
                cancel_sent = True
            try:
                event = json.loads(self.ws.recv(timeout=0.1))
            except TimeoutError:
                continue
            kind = event["type"]
            if kind == "response.created":
                response_id = event["response_id"]
            elif kind == "response.text.delta":
                print(event["delta"], end="", flush=True)
            elif kind == "response.done":
                note = "" if event["status"] == "completed" else f"  [{event['status']}]"
                if event.get("error"):
                    note += f" {event['error']['message']}"
                print(note)
                return
            elif kind == "error" and event.get("ref") == event_id:
                print(f"error ({event['code']}): {event['message']}")
                return


# ---------------------------------------------------------------- plugins, models


def cmd_plugins(args: argparse.Namespace) -> int:
    """List plugins with version, hooks and what they registered."""
    from assistant.app import App
    from assistant.plugins import describe_plugins

    app = App.prepare(_load_config(args.config))
    infos = describe_plugins(app.pm, app.registrations)
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0
    for info in infos:
        print(f"{info.name} {info.version or '(no version)'}")
        print(f"  hooks: {', '.join(info.hooks) or '-'}")
        if info.engines:
            print(f"  engines: {', '.join(info.engines)}")
        if info.model_sources:
            print(f"  model sources: {', '.join(info.model_sources)}")
        if info.routers:
            print(f"  routers: {', '.join(info.routers)}")
        if info.modalities:
            print(f"  modalities: {', '.join(info.modalities)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """For each role: the configured model's resolved path, or why it does not resolve."""
    from assistant.app import App
    from assistant.engines import ROLES
    from assistant.models import ModelNotFound

    app = App.prepare(_load_config(args.config))
    selected = app.selected_engines()
    failures = 0
    for role in ROLES:
        name = selected.get(role)
        if name is None:
            print(f"{role}: no engine configured")
            continue
        entry = app.registrations.engines.get((role, name))
        if entry is None:
            print(f"{role}: engine {name!r} is not registered by any plugin")
            failures += 1
            continue
        model = entry.model_name(app) if entry.model_name else None
        if model is None:
            print(f"{role}: {name} (no model configured)")
            continue
        try:
            print(f"{role}: {name} model {model!r} -> {app.models.resolve(model)}")
        except ModelNotFound as exc:
            print(f"{role}: {name} model {model!r} NOT FOUND\n  " + str(exc).replace("\n", "\n  "))
            failures += 1
    return 1 if failures else 0


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    parser = argparse.ArgumentParser(prog="assistant", description="Self-hosted multimodal assistant backend")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the websocket server")
    serve.add_argument("--config", help=f"config file (default: ./{DEFAULT_CONFIG} if present, else built-in defaults)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", help="chat in the terminal")
    chat.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    chat.add_argument("--conversation", help="resume this conversation id")
    chat.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the connection")
    chat.set_defaults(func=cmd_chat)

    plugins = sub.add_parser("plugins", help="list plugins, their hooks and engines")
    plugins.add_argument("--config")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    models = sub.add_parser("models", help="show where each role's model resolves")
    models.add_argument("--config")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `assistant` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # websockets logs every connection and every /healthz probe at INFO
        logging.getLogger("websockets").setLevel(logging.WARNING)
    from assistant.models import ModelNotFound
    from assistant.plugins import PluginError

    try:
        return args.func(args)
    except (ConfigError, PluginError, ModelNotFound) as exc:
        print(f"assistant: {exc}", file=sys.stderr)
        return 2
    except (ConnectionRefusedError, OSError) as exc:
        if args.command != "chat":
            raise
        print(f"assistant: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
