"""Command line: `assistant serve | chat | tokens | plugins | models` (the chat client lives in `assistant.chat`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from assistant.chat import cmd_chat
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

    async def main() -> bool:
        server = await serve_app(config)
        print(f"assistant: listening on ws://{config.server.host}:{server.port}/ws (Ctrl-C to stop)", flush=True)
        await server.run_until_signal()
        return server.app.scheduler.stuck_threads() > 0

    if asyncio.run(main()):
        # An engine call that never returned still holds a worker thread; Python would wait for it forever.
        logging.getLogger("assistant").warning("exiting with engine calls still hung")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


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
        if info.turn_routers:
            print(f"  turn routers: {', '.join(info.turn_routers)}")
        if info.modalities:
            print(f"  modalities: {', '.join(info.modalities)}")
        if info.tools:
            print(f"  tools: {', '.join(info.tools)}")
        if info.part_types:
            print(f"  part types: {', '.join(info.part_types)}")
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
        model = entry.configured_model(app)
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


def cmd_tokens(args: argparse.Namespace) -> int:
    """Create, list or revoke access tokens in the configured token file (stored hashed)."""
    from assistant.auth import TokenFile

    config = _load_config(args.config)
    tokens = TokenFile(config.tokens_path)
    if args.action == "create":
        record, token = tokens.create(args.name)
        print(f"created {record.id} for {record.principal} in {tokens.path}")
        print(f"token (shown once; keep it secret): {token}")
    elif args.action == "list":
        records = tokens.read()
        if not records:
            print(f"no tokens in {tokens.path}")
        for record in records:
            state = f"revoked {record.revoked_at}" if record.revoked_at else "active"
            print(f"{record.id}  {record.principal:20s}  created {record.created_at}  {state}")
    else:
        revoked = tokens.revoke(args.name)
        if not revoked:
            print(f"no active token with id or principal {args.name!r}", file=sys.stderr)
            return 1
        for record in revoked:
            print(f"revoked {record.id} ({record.principal})")
    return 0


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
    chat.add_argument("--token", default=os.environ.get("ASSISTANT_TOKEN"), help="access token (default: $ASSISTANT_TOKEN)")
    chat.add_argument("--save-dir", default="assistant-images", help="folder for generated images (default: ./assistant-images)")
    chat.set_defaults(func=cmd_chat)

    tokens = sub.add_parser("tokens", help="create, list or revoke access tokens")
    tokens.add_argument("--config")
    token_actions = tokens.add_subparsers(dest="action", required=True)
    token_actions.add_parser("create", help="a new token for a principal (printed once)").add_argument("name", help="the principal")
    token_actions.add_parser("list", help="every token: id, principal, created, revoked")
    token_actions.add_parser("revoke", help="revoke a token by id, or every token of a principal").add_argument("name", help="token id or principal")
    tokens.set_defaults(func=cmd_tokens)

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
    if not args.verbose:  # uvicorn logs every websocket accepted, and its access log every request, at INFO
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
    from assistant.auth import AuthError
    from assistant.models import ModelNotFound
    from assistant.plugins import PluginError
    from assistant.server import UnsafeListen

    try:
        return args.func(args)
    except (ConfigError, PluginError, ModelNotFound, AuthError, UnsafeListen) as exc:
        print(f"assistant: {exc}", file=sys.stderr)
        return 2
    except (ConnectionRefusedError, OSError) as exc:
        if args.command != "chat":
            raise
        print(f"assistant: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
