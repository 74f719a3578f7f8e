"""``callcenter flows …``: the supervisors' tools (lint, simulate, publish, history, rollback, schema)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from callcenter.config import Config
from callcenter.ivr.context import CallerProfile, CallFacts
from callcenter.ivr.lint import LintEnvironment, flow_json_schema, lint_text
from callcenter.ivr.messages import bilingual
from callcenter.ivr.runner import CompiledFlow


def add_parser(sub: Any, config_arg: Any) -> None:
    flows = sub.add_parser("flows", help="IVR flows: lint, simulate, publish, history, rollback")
    fsub = flows.add_subparsers(dest="flows_command", required=True)
    lint = fsub.add_parser("lint", help="check flow files; every problem with file:line:column (exit 1 if any)")
    config_arg(lint)
    lint.add_argument("files", nargs="*", type=Path, help="flow files (default: every file in the flows folder)")
    sim = fsub.add_parser("simulate", help="a dry run of a flow without SIP: nodes, prompts and where it ends")
    config_arg(sim)
    sim.add_argument("flow", help="flow name (a file in the flows folder) or a path to a flow file")
    sim.add_argument("--caller", default="", help="calling number (looked up in the directory)")
    sim.add_argument("--did", default="", help="dialled number (its route gives the button)")
    sim.add_argument("--button", help="terminal button (default: from the dialled number's route)")
    sim.add_argument("--digits", default="", help='keys pressed after each prompt, comma-separated: "1,2" '
                                                  '("" or - for no key)')
    sim.add_argument("--at", help='local time of the call, "YYYY-MM-DD HH:MM" (default: now)')
    sim.add_argument("--emergency", action="store_true", help="mark the call as an emergency call")
    sim.add_argument("--no-answer", action="store_true", help="transfers are not answered")
    pub = fsub.add_parser("publish", help="validate a flow file and make it the live version")
    config_arg(pub)
    pub.add_argument("file", type=Path)
    pub.add_argument("--author", default=None, help="who publishes (default: the login name)")
    hist = fsub.add_parser("history", help="versions of a flow (newest first; * = live)")
    config_arg(hist)
    hist.add_argument("flow")
    hist.add_argument("--diff", type=int, metavar="VERSION", help="show what VERSION changed")
    roll = fsub.add_parser("rollback", help="make an earlier version live again (as a new version)")
    config_arg(roll)
    roll.add_argument("flow")
    roll.add_argument("version", type=int)
    roll.add_argument("--author", default=None)
    config_arg(fsub.add_parser("schema", help="print the JSON Schema of flow files (for editors)"))


def run(args: argparse.Namespace, config: Config) -> int:
    from callcenter.logs import configure_logging

    configure_logging("warning", "console", sys.stderr)  # the tools print their own report on stdout
    command = args.flows_command
    if command == "schema":
        print(json.dumps(flow_json_schema(), ensure_ascii=False, indent=2, sort_keys=True))
        return 0
    if command == "lint":
        return lint_command(config, args.files)
    if command == "simulate":
        return simulate_command(config, args)
    return asyncio.run(_store_command(config, args))


def _environment(config: Config, extra_names: set[str] | None = None) -> LintEnvironment:
    directory = Path(config.flows.directory)
    names = {p.stem for p in directory.glob("*.yaml")} if directory.is_dir() else set()
    return LintEnvironment(
        flows_dir=directory,
        flow_names=frozenset(names | (extra_names or set())),
        queues=frozenset(q.name for q in config.queues),
        trunks=frozenset(t.name for t in config.trunks),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read the file: {exc}\n  {path}: 无法读取文件：{exc}", file=sys.stderr)
        return None


def lint_command(config: Config, files: list[Path]) -> int:
    directory = Path(config.flows.directory)
    paths = files or sorted(directory.glob("*.yaml"))
    if not paths:
        print(f"no flow files in {directory}/", file=sys.stderr)
        return 1
    env = _environment(config, {p.stem for p in paths})
    errors = warnings = 0
    for path in paths:
        text = _read(path)
        if text is None:
            errors += 1
            continue
        _, issues = lint_text(text, str(path), env, name=path.stem)
        for issue in issues:
            print(bilingual(issue))
            errors += issue.severity == "error"
            warnings += issue.severity == "warning"
    print(f"{len(paths)} file(s): {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0


def load_flows(config: Config, extra: Path | None = None) -> tuple[dict[str, CompiledFlow], int]:
    """Every flow file of the flows folder (and ``extra``) compiled as version 0; prints problems."""
    directory = Path(config.flows.directory)
    paths = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    if extra is not None:
        paths.append(extra)
    env = _environment(config, {p.stem for p in paths})
    flows: dict[str, CompiledFlow] = {}
    errors = 0
    for path in paths:
        text = _read(path)
        if text is None:
            errors += 1
            continue
        parsed, issues = lint_text(text, str(path), env, name=path.stem)
        for issue in issues:
            if issue.severity == "error":
                print(bilingual(issue), file=sys.stderr)
                errors += 1
        if parsed is not None and not any(i.severity == "error" for i in issues):
            flows[parsed.name] = CompiledFlow(parsed.name, 0, parsed.document, directory)
    return flows, errors


def simulate_command(config: Config, args: argparse.Namespace) -> int:
    from callcenter.directory.lookup import SeedError
    from callcenter.ivr.simulator import report, simulate

    given = Path(args.flow)
    extra = given if given.suffix in (".yaml", ".yml") and given.exists() else None
    flows, errors = load_flows(config, extra)
    name = given.stem if extra is not None else args.flow
    if name not in flows:
        print(f"flow {name!r} cannot run" + (" (see the problems above)" if errors else
                                              f" (flows: {', '.join(sorted(flows)) or 'none'})"), file=sys.stderr)
        return 1
    zone = ZoneInfo(config.flows.timezone)
    try:
        at = dt.datetime.strptime(args.at, "%Y-%m-%d %H:%M").replace(tzinfo=zone) if args.at else \
            dt.datetime.now(zone)
    except ValueError:
        print(f'--at: expected "YYYY-MM-DD HH:MM", got {args.at!r}', file=sys.stderr)
        return 2
    route = next((r for r in config.routing.numbers if r.number == args.did), None)
    button = args.button or (route.button if route else None)
    try:
        caller = asyncio.run(_caller(config, args.caller))
    except SeedError as exc:
        print(exc, file=sys.stderr)
        return 1
    digits = ["" if part.strip() in ("", "-") else part.strip() for part in args.digits.split(",")] \
        if args.digits else []
    emergency = args.emergency or bool(route and route.emergency)
    sim = simulate(flows, name, caller=caller, facts=CallFacts(args.caller, args.did, button, emergency),
                   at=at, digits=digits, transfer_answers=not args.no_answer)
    who = f"{caller.title or caller.name} (elder {caller.elder_id})" if caller.known else "unknown caller"
    print(f"flow {name} · caller {args.caller or '-'} ({who}) · dialled {args.did or '-'} · button {button or '-'} "
          f"· {at:%Y-%m-%d %H:%M %a}")
    print(report(sim))
    return 0 if sim.result.outcome != "error" else 1


async def _caller(config: Config, number: str) -> CallerProfile:
    """The caller as the engine's directory knows them (an empty directory is filled as at engine start)."""
    from callcenter.directory.lookup import open_directory
    from callcenter.store.db import create_engine_for, run_migrations

    if not number:
        return CallerProfile()
    url = config.database_url()
    await asyncio.get_running_loop().run_in_executor(None, run_migrations, url)
    engine = create_engine_for(url)
    try:
        return await (await open_directory(config, engine)).lookup(number)
    finally:
        await engine.dispose()


async def _store_command(config: Config, args: argparse.Namespace) -> int:
    from callcenter.ivr.versions import FlowStore, UnknownVersion
    from callcenter.store.db import create_engine_for, run_migrations

    url = config.database_url()
    await asyncio.get_running_loop().run_in_executor(None, run_migrations, url)
    engine = create_engine_for(url)
    store = FlowStore(engine)
    author = getattr(args, "author", None) or getpass.getuser()
    try:
        if args.flows_command == "publish":
            path: Path = args.file
            text = _read(path)
            if text is None:
                return 1
            parsed, issues = lint_text(text, str(path), _environment(config, {path.stem}), name=path.stem)
            for issue in issues:
                print(bilingual(issue), file=sys.stderr)
            if parsed is None or any(i.severity == "error" for i in issues):
                print(f"{path}: not published; the live version keeps serving\n  {path}: 未发布，当前版本继续使用",
                      file=sys.stderr)
                return 1
            version, created = await store.publish(parsed.name, text, author=author, origin="cli",
                                                   source_path=str(path))
            print(f"{parsed.name} v{version.version} is live" if created else
                  f"{parsed.name} v{version.version} is already live with this text")
            return 0
        if args.flows_command == "history":
            if args.diff is not None:
                print((await store.get(args.flow, args.diff)).diff or "(first version: no diff)")
                return 0
            versions = await store.history(args.flow)
            if not versions:
                print(f"flow {args.flow!r} has never been published", file=sys.stderr)
                return 1
            for v in versions:
                note = f"  ({v.note})" if v.note else ""
                print(f"{'*' if v.live else ' '} v{v.version:<4} {v.created_at:%Y-%m-%d %H:%M:%S} {v.origin:<8} "
                      f"{v.author}{note}")
            return 0
        if args.flows_command == "rollback":
            version = await store.rollback(args.flow, args.version, author=author)
            print(f"{args.flow} v{version.version} is live ({version.note})")
            return 0
    except (UnknownVersion, ValueError) as exc:
        print(f"callcenter flows {args.flows_command}: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    return 2
