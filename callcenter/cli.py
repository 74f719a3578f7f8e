"""The ``callcenter`` command: ``serve``, ``config check``, ``calls recent``, ``flows …``, ``stats``,
``elders …``, ``users hash-password``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from callcenter.config import Config, ConfigError, load_config


def _hostport(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callcenter", description="Elder-care call-center engine")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="configuration file (default: config/callcenter.yaml)")
        p.add_argument("--data-dir", type=Path, help="directory for the database and engine files")

    serve = sub.add_parser("serve", help="run the engine")
    config_arg(serve)
    serve.add_argument("--sip-listen", type=_hostport, metavar="HOST:PORT", help="SIP over UDP and TCP on HOST:PORT")
    serve.add_argument("--http-listen", type=_hostport, metavar="HOST:PORT", help="desktop and API address")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["auto", "json", "console"])

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a configuration file and print problems with file:line")
    config_arg(check)

    calls = sub.add_parser("calls", help="call detail records")
    calls_sub = calls.add_subparsers(dest="calls_command", required=True)
    recent = calls_sub.add_parser("recent", help="print the most recent call records")
    config_arg(recent)
    recent.add_argument("--limit", type=int, default=20)
    recent.add_argument("--json", action="store_true", help="one JSON object per line")

    from callcenter.ivr import commands as flow_commands

    flow_commands.add_parser(sub, config_arg)

    from callcenter.stats import commands as stats_commands

    stats_commands.add_parser(sub, config_arg)

    from callcenter.directory import commands as elder_commands

    elder_commands.add_parser(sub, config_arg)

    users = sub.add_parser("users", help="desktop and API users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    users_sub.add_parser(
        "hash-password",
        help="read a password (asked for on a terminal, else one line of stdin) and print its argon2id hash "
        "for the password_hash of a user in the configuration",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides.setdefault("engine", {})["data_dir"] = str(args.data_dir)
    if getattr(args, "sip_listen", None):
        overrides.setdefault("sip", {})["listen"] = [f"udp:{args.sip_listen}", f"tcp:{args.sip_listen}"]
    if getattr(args, "http_listen", None):
        overrides.setdefault("http", {})["listen"] = args.http_listen
    if getattr(args, "log_level", None):
        overrides.setdefault("logging", {})["level"] = args.log_level
    if getattr(args, "log_format", None):
        overrides.setdefault("logging", {})["format"] = args.log_format
    return overrides


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=_overrides(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "users":  # needs no configuration
        return hash_password()
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"callcenter: configuration is invalid:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(config)
    if args.command == "config":
        print(f"configuration OK: {len(config.accounts)} accounts, {len(config.trunks)} trunks, "
              f"{len(config.routing.numbers)} routed numbers, {len(config.users)} users")
        return 0
    if args.command == "calls":
        return asyncio.run(_recent_calls(config, args.limit, args.json))
    if args.command == "flows":
        from callcenter.ivr import commands as flow_commands

        return flow_commands.run(args, config)
    if args.command == "stats":
        from callcenter.stats import commands as stats_commands

        return stats_commands.run(args, config)
    if args.command == "elders":
        from callcenter.directory import commands as elder_commands

        return elder_commands.run(args, config)
    return 2


async def _recent_calls(config: Config, limit: int, as_json: bool) -> int:
    import json

    from callcenter.store.cdr import recent_calls
    from callcenter.store.db import create_engine_for, run_migrations

    url = config.database_url()
    run_migrations(url)
    engine = create_engine_for(url)
    try:
        rows = await recent_calls(engine, limit)
    finally:
        await engine.dispose()
    for r in rows:
        if as_json:
            print(json.dumps({c: _jsonable(getattr(r, c)) for c in r.__table__.columns.keys()}, ensure_ascii=False))
        else:
            print(f"{r.started_at:%Y-%m-%d %H:%M:%S} {r.direction:8} {r.from_number or '-':>14} -> "
                  f"{r.to_number or '-':<10} {r.end_reason or '-':<12} {r.sip_status or '-'} {r.call_id}")
    return 0


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


MIN_PASSWORD_LENGTH = 8


def hash_password() -> int:
    """``callcenter users hash-password``: print the argon2id hash of a password read without echo."""
    import getpass

    from argon2 import PasswordHasher

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("callcenter: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"callcenter: a password needs at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return 2
    print(PasswordHasher().hash(password))
    return 0


def serve(config: Config) -> int:
    """Run the engine until SIGTERM/SIGINT, on Twisted's asyncio reactor (one loop for everything)."""
    from callcenter.logs import configure_logging

    configure_logging(config.logging.level, config.logging.format, cache_loggers=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from callcenter.app import Engine

    engine = Engine(config, reactor)
    exit_code = 0

    def started_failed(failure: Any) -> None:
        nonlocal exit_code
        exit_code = 1
        import structlog

        structlog.get_logger("callcenter.app").error(
            "engine.start_failed", error=str(failure.value), error_type=type(failure.value).__name__
        )
        print(f"callcenter: could not start: {failure.value}", file=sys.stderr)
        reactor.stop()

    def start() -> None:
        d = Deferred.fromFuture(asyncio.ensure_future(engine.start()))
        d.addErrback(started_failed)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromFuture(asyncio.ensure_future(engine.stop()))
    )
    reactor.run()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
