"""Command line: `assistant serve | chat | tokens | plugins [new] | models | db` (the chat client lives in `assistant.chat`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from assistant.chat import cmd_chat
from assistant.config import Config, ConfigError
from assistant.scaffold import ROLES

DEFAULT_CONFIG = "config.toml"


def _load_config(path: str | None) -> Config:
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return Config.load(path)


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from assistant.ports import check_port

    config = _load_config(args.config)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    check_port(config.server.host, config.server.port)  # before the slow imports and model loading

    from assistant.server import run_on_server_loop, serve_app

    async def main() -> bool:
        server = await serve_app(config)
        base = f"{config.server.host}:{server.port}"
        print(f"assistant: listening on ws://{base}/ws; web page http://{base}/ (Ctrl-C to stop)", flush=True)
        await server.run_until_signal()
        return server.app.scheduler.stuck_threads() > 0

    if run_on_server_loop(main(), config):
        # An engine call that never returned still holds a worker thread; Python would wait for it forever.
        logging.getLogger("assistant").warning("exiting with engine calls still hung")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


# ---------------------------------------------------------------- plugins, models


def cmd_plugins(args: argparse.Namespace) -> int:
    """List plugins with version, hooks and what they registered; `plugins new` writes a new plugin package."""
    if args.action == "new":
        return cmd_plugins_new(args)
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


def cmd_plugins_new(args: argparse.Namespace) -> int:
    """Write a working plugin package (pyproject, module, conformance tests) for `args.name` of `args.role`."""
    from assistant.scaffold import write_plugin

    try:
        folder = write_plugin(args.name, args.role, Path(args.dir))
    except ValueError as exc:
        print(f"assistant: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {folder}: pyproject.toml, {args.role} plugin assistant_{args.name}.py, tests/ (the {args.role} conformance suite)")
    print(f"next: cd {folder} && pip install -e '.[test]' && pytest")
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


def cmd_db(args: argparse.Namespace) -> int:
    """`db upgrade`: bring the configured database's schema to this release's; `db current`: its revision and whether it is the head."""
    from assistant.schema import migrate, state
    from assistant.store import open_engine

    config = _load_config(args.config)
    engine = open_engine(config.database_url)
    try:
        if args.action == "upgrade":
            before = migrate(engine)
            after = state(engine)
            if before.up_to_date:
                print(f"{after.current}: already the head, nothing to do")
            else:
                print(f"upgraded {'an empty database' if before.empty else before.current or 'a database made before migrations'} to {after.current} (head)")
            return 0
        now = state(engine)
        print(now.describe())
        return 0 if now.up_to_date else 1 if now.known else 2
    finally:
        engine.dispose()


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
    formatter = argparse.ArgumentDefaultsHelpFormatter  # every option's help shows its default
    config_help = f"config file (./{DEFAULT_CONFIG} when present, else built-in defaults)"
    parser = argparse.ArgumentParser(prog="assistant", description="Self-hosted multimodal assistant backend", formatter_class=formatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (web page, websocket, HTTP APIs)", formatter_class=formatter)
    serve.add_argument("--config", help=config_help)
    serve.add_argument("--host", help="address to listen on (overrides [server] host; 127.0.0.1 in the built-in defaults)")
    serve.add_argument("--port", type=int, help="TCP port to listen on (overrides [server] port; 8765 in the built-in defaults)")
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", help="chat in the terminal", formatter_class=formatter)
    chat.add_argument("--url", default="ws://127.0.0.1:8765/ws", help="the server's websocket (an http:// address becomes ws://HOST:PORT/ws)")
    chat.add_argument("--conversation", help="resume this conversation id")
    chat.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the connection")
    chat.add_argument("--token", default=os.environ.get("ASSISTANT_TOKEN"), help="access token (default from $ASSISTANT_TOKEN)")
    chat.add_argument("--save-dir", default="assistant-images", help="folder for generated images")
    chat.set_defaults(func=cmd_chat)

    tokens = sub.add_parser("tokens", help="create, list or revoke access tokens", formatter_class=formatter)
    tokens.add_argument("--config", help=config_help)
    token_actions = tokens.add_subparsers(dest="action", required=True)
    token_actions.add_parser("create", help="a new token for a principal (printed once)", formatter_class=formatter).add_argument("name", help="the principal")
    token_actions.add_parser("list", help="every token: id, principal, created, revoked", formatter_class=formatter)
    revoke = token_actions.add_parser("revoke", help="revoke a token by id, or every token of a principal", formatter_class=formatter)
    revoke.add_argument("name", help="token id or principal")
    tokens.set_defaults(func=cmd_tokens)

    plugins = sub.add_parser("plugins", help="list plugins, their hooks and engines; `plugins new` starts a plugin", formatter_class=formatter)
    plugins.add_argument("--config", help=config_help)
    plugins.add_argument("--json", action="store_true", help="print the list as JSON")
    plugin_actions = plugins.add_subparsers(dest="action")
    new = plugin_actions.add_parser("new", help="write a working plugin package with conformance tests", formatter_class=formatter)
    new.add_argument("name", help="the plugin's name (lower case, digits, underscores): its entry point and [plugins.NAME] table")
    new.add_argument("--role", required=True, choices=ROLES, help="what it adds: an engine of this role, or a modality")
    new.add_argument("--dir", default=".", help="folder to create the package folder in")
    plugins.set_defaults(func=cmd_plugins)

    models = sub.add_parser("models", help="show where each role's model resolves", formatter_class=formatter)
    models.add_argument("--config", help=config_help)
    models.set_defaults(func=cmd_models)

    db = sub.add_parser("db", help="the database schema: upgrade it, or show its revision", formatter_class=formatter)
    db.add_argument("--config", help=config_help)
    db_actions = db.add_subparsers(dest="action", required=True)
    for action, action_help in (
        ("upgrade", "create or upgrade the schema to this release's (safe to run again)"),
        ("current", "the schema's revision and whether it is the head (exit 1 when older, 2 when newer)"),
    ):  # `db --config PATH upgrade` and `db upgrade --config PATH` both work
        db_actions.add_parser(action, help=action_help, formatter_class=formatter).add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    db.set_defaults(func=cmd_db)
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
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its set-up steps; assistant.schema logs an upgrade
    try:
        return args.func(args)
    except Exception as exc:
        if isinstance(exc, _one_line_errors()):
            print(f"assistant: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and args.command == "chat":
            print(f"assistant: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
        raise


def _one_line_errors() -> tuple[type[Exception], ...]:
    """Errors a user fixes from their one-line message (a config key, a port, a model): no traceback.

    Imported when one happens, so that `serve` reaches its port check before the server's imports.
    """
    from assistant.auth import AuthError
    from assistant.cluster import ClusterError
    from assistant.models import ModelNotFound
    from assistant.plugins import PluginError
    from assistant.ports import PortUnavailable
    from assistant.schema import SchemaError
    from assistant.server import UnsafeListen

    return (ConfigError, PluginError, ModelNotFound, AuthError, UnsafeListen, PortUnavailable, SchemaError, ClusterError)

if __name__ == "__main__":
    sys.exit(main())
