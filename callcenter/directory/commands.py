"""``callcenter elders …``: the directory's tools — import, export, generate, count.

``import FILE.csv|FILE.xlsx [--partial] [--dry-run]`` checks every cell (problems as ``FILE:ROW:COLUMN``, in
English and Chinese; exit 1) and writes nothing when there is a problem, unless ``--partial`` (the good rows
are written, the problems listed). ``export FILE.csv|FILE.xlsx [--unmasked]`` writes every elder (ID numbers
masked unless ``--unmasked``). ``generate --count N [--seed S]`` adds demo elders. Imports and exports are
written to the access log with the login name of whoever ran them. A progress bar goes to stderr when it
is a terminal. Exit status: 0 done, 1 problems (an import with any bad row, even with --partial), 2 bad use.
These commands never load the seed (``directory.seed``): only the engine does, into an empty directory."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from callcenter.config import Config


def add_parser(sub: Any, config_arg: Any) -> None:
    elders = sub.add_parser("elders", help="the directory of elders: import, export, generate")
    esub = elders.add_subparsers(dest="elders_command", required=True)
    imp = esub.add_parser("import", help="import elders from a .csv or .xlsx file (every bad cell reported; "
                                         "nothing imported on a problem unless --partial)")
    config_arg(imp)
    imp.add_argument("file", type=Path)
    imp.add_argument("--partial", action="store_true", help="import the good rows even when others have problems")
    imp.add_argument("--dry-run", action="store_true", help="check the file only")
    exp = esub.add_parser("export", help="export every elder to a .csv or .xlsx file")
    config_arg(exp)
    exp.add_argument("file", type=Path)
    exp.add_argument("--unmasked", action="store_true", help="whole ID numbers (needed to import the file again)")
    gen = esub.add_parser("generate", help="add realistic demo elders (for demos and benchmarks)")
    config_arg(gen)
    gen.add_argument("--count", type=int, required=True, help="how many elders")
    gen.add_argument("--seed", type=int, default=1, help="random seed (the same seed gives the same elders)")
    config_arg(esub.add_parser("count", help="print the number of elders"))


class Progress:
    """A plain-text progress bar on a terminal (quiet otherwise): ``import  45% [#####     ] 45000/100000``."""

    WIDTH = 30

    def __init__(self, label: str, stream: TextIO | None = None, *, interval: float = 0.1) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._shown = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._shown < self.interval and done < total):
            return
        self._shown = now
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        self.stream.write(f"\r{self.label} {share:4.0%} [{'#' * filled}{' ' * (self.WIDTH - filled)}] "
                          f"{done}/{total}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def run(args: argparse.Namespace, config: Config) -> int:
    from callcenter.logs import configure_logging

    configure_logging("warning", "console", sys.stderr)  # the tools print their own report
    return asyncio.run(_run(args, config))


async def _run(args: argparse.Namespace, config: Config) -> int:
    from callcenter.directory.lookup import SeedError, open_directory
    from callcenter.store.db import create_engine_for, run_migrations

    url = config.database_url()
    await asyncio.get_running_loop().run_in_executor(None, run_migrations, url)
    engine = create_engine_for(url)
    try:
        command = args.elders_command
        # never filled here: a center's own elders imported into a new database must not meet the demo ones
        store = await open_directory(config, engine, fill=False)
        user = getpass.getuser()
        if command == "count":
            print(await store.count())
            return 0
        if command == "generate":
            if not 1 <= args.count <= 1_000_000:
                print("--count: expected 1 to 1000000", file=sys.stderr)
                return 2
            from callcenter.directory.generator import generate

            started = time.perf_counter()
            added = await generate(store, args.count, seed=args.seed)
            seconds = time.perf_counter() - started
            print(f"{added} elders added in {seconds:.1f} s ({added / seconds:.0f}/s); "
                  f"{await store.count()} in the directory")
            return 0
        if command == "export":
            return await _export(store, args.file, args.unmasked, user)
        return await _import(store, args.file, args.partial, args.dry_run, user)
    except SeedError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


async def _import(store: Any, path: Path, partial: bool, dry_run: bool, user: str) -> int:
    from callcenter.directory.importer import import_file, rows_text
    from callcenter.directory.validation import DirectoryInputError

    progress = Progress("check")
    try:
        report = await import_file(store, path, partial=partial, dry_run=dry_run, progress=progress)
    except DirectoryInputError as exc:
        progress.close()
        print(f"{path}: nothing imported: {exc.message}\n  {path}: 未导入：{exc.zh}", file=sys.stderr)
        return 1
    progress.close()
    for line in rows_text(report.issues):
        print(line, file=sys.stderr)
    bad = len({issue.row for issue in report.issues})
    if report.written:
        await store.log_access(username=user, role="cli", action="import",
                               detail=f"{path.name}: {report.created} created, {report.updated} updated, {bad} bad")
        print(f"{path}: {report.created} elders added, {report.updated} updated"
              + (f"; {bad} row(s) with problems not imported" if report.issues else ""))
        return 1 if report.issues else 0
    if dry_run and not report.issues:
        print(f"{path}: {report.rows} rows checked, no problems (nothing imported: --dry-run)")
        return 0
    print(f"{path}: nothing imported ({len(report.issues)} problem(s) in {bad} row(s); --partial imports the "
          f"good rows)\n  {path}: 未导入（{bad} 行有 {len(report.issues)} 个问题；加 --partial 可只导入没有问题的行）",
          file=sys.stderr)
    return 1


async def _export(store: Any, path: Path, unmasked: bool, user: str) -> int:
    from callcenter.directory.exporter import export_file

    progress = Progress("export")
    try:
        count = await export_file(store, path, unmasked=unmasked, progress=progress)
    except (OSError, ValueError) as exc:
        progress.close()
        print(f"{path}: cannot export: {exc}", file=sys.stderr)
        return 1
    progress.close()
    await store.log_access(username=user, role="cli", action="export",
                           detail=f"{path.name}: {count} elders, {'unmasked' if unmasked else 'masked'}")
    print(f"{path}: {count} elders exported" + (" (whole ID numbers: keep the file safe)" if unmasked else ""))
    return 0
