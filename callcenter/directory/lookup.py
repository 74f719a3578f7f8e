"""Who is calling: the lookup every room uses, and the directory the engine starts with.

:class:`Directory` is what the IVR and the ACD need: ``await lookup(number)`` gives the caller's
:class:`~callcenter.ivr.context.CallerProfile` (an unknown number gives ``CallerProfile()``), ``recent(number)``
what the last lookup found, without waiting. :class:`~callcenter.directory.store.DirectoryStore` is the real
one; :class:`EmptyDirectory` knows nobody.

At start (:func:`open_directory`) the engine builds the store from ``directory:`` in the configuration and, when
the elders table is empty, fills it: the elders of the ``seed`` YAML file (config/demo_elders.yaml: the demo
elders, with their ids), then ``generate`` demo elders (:mod:`callcenter.directory.generator`). The YAML
file lists elders with the fields of :class:`~callcenter.directory.validation.ElderInput` (and ``id``); the
older keys ``numbers`` (phones) and ``family_numbers`` (contacts, in order) are still read."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
import yaml
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.directory.numbers import national
from callcenter.directory.store import DirectoryStore
from callcenter.directory.validation import ElderInput, input_problems
from callcenter.ivr.context import BUTTONS, CallerProfile

__all__ = ["Directory", "EmptyDirectory", "SeedError", "national", "number_key", "open_directory", "prepare",
           "read_seed"]

log = structlog.get_logger("callcenter.directory")


class Directory(Protocol):
    async def lookup(self, number: str) -> CallerProfile: ...

    def recent(self, number: str) -> CallerProfile | None: ...


class EmptyDirectory:
    """A directory that knows nobody (tools and tests without a database)."""

    async def lookup(self, number: str) -> CallerProfile:
        return CallerProfile()

    def recent(self, number: str) -> CallerProfile | None:
        return None


class SeedError(ValueError):
    """The seed file has problems; each line is ``file: elders[i].field: message`` (English, then Chinese)."""


def terminal_buttons(config: Any) -> dict[str, str]:
    """The button map of the center's terminals: each routed number with a terminal button (DID → button)."""
    return {r.number: r.button for r in config.routing.numbers if r.button in BUTTONS and r.button != "hotline"}


def number_key(config: Any) -> Callable[[str], str]:
    """The directory key of a number as the configuration reads numbers (region, area code): for the CDR writer's
    ``party_number``, so that an elder's calls are found by the elder's numbers."""
    return functools.partial(national, region=config.directory.region, area_code=config.directory.area_code)


def build_store(config: Any, db: AsyncEngine) -> DirectoryStore:
    directory = config.directory
    return DirectoryStore(db, region=directory.region, area_code=directory.area_code,
                          zone=ZoneInfo(config.flows.timezone), buttons=terminal_buttons(config))


def read_seed(path: Path, store: DirectoryStore) -> tuple[list[ElderInput], list[int | None]]:
    """The elders of a seed YAML file, checked; :class:`SeedError` lists every problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SeedError(f"{path}: cannot read the elders: {exc}\n  {path}: 无法读取老人名单") from None
    rows = data.get("elders", []) if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise SeedError(f"{path}: expected `elders:` with a list of elders\n  {path}: 应为 elders: 加老人列表")
    inputs: list[ElderInput] = []
    ids: list[int | None] = []
    problems: list[str] = []
    context = {"region": store.region, "area_code": store.area_code, "today": store.today()}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            problems.append(f"{path}: elders[{index}]: expected a mapping\n  {path}: elders[{index}]: 应为键值")
            continue
        row = dict(row)
        elder_id = row.pop("id", None)
        if "numbers" in row:
            row["phones"] = [*row.pop("numbers"), *(row.get("phones") or [])]
        if "family_numbers" in row:
            family = [{"name": "", "relation": "家属", "number": str(n)} for n in row.pop("family_numbers") or []]
            row["contacts"] = [*(row.get("contacts") or []), *family]
        row.pop("surname", None)  # derived from the name
        if elder_id is not None and (isinstance(elder_id, bool) or not isinstance(elder_id, int) or elder_id < 1):
            problems.append(f"{path}: elders[{index}].id: expected a whole number from 1\n"
                            f"  {path}: elders[{index}].id: 应为从 1 起的整数")
            continue
        try:
            inputs.append(ElderInput.model_validate(row, context=context))
            ids.append(elder_id)
        except ValidationError as exc:
            problems += [f"{path}: elders[{index}].{field}: {en}\n  {path}: elders[{index}].{field}: {zh}"
                         for field, en, zh in input_problems(exc)]
    if problems:
        raise SeedError("\n".join(problems))
    return inputs, ids


async def prepare(store: DirectoryStore, *, seed: Path | None, generate: int = 0, random_seed: int = 1) -> int:
    """Fill an empty directory: the seed file's elders, then ``generate`` demo elders. Gives the elders added
    (0 when the directory had elders already)."""
    if await store.count():
        return 0
    added = 0
    if seed is not None:
        inputs, ids = read_seed(Path(seed), store)
        added += (await store.write_inputs(inputs, ids=ids, match=False)).created
    if generate:
        from callcenter.directory.generator import generate as make_elders

        added += await make_elders(store, generate, seed=random_seed)
    log.info("directory.seeded", seed=str(seed) if seed else None, elders=added)
    return added


async def open_directory(config: Any, db: AsyncEngine, *, fill: bool = True) -> DirectoryStore:
    """The directory of the engine's database, filled at first start (see the module docstring)."""
    store = build_store(config, db)
    if fill:
        started = dt.datetime.now(dt.UTC)
        added = await prepare(store, seed=config.directory.seed, generate=config.directory.generate)
        if added:
            log.info("directory.ready", elders=added,
                     seconds=round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3))
    return store
