"""Who is calling: the caller's profile by calling number.

The full directory (elders, normalised numbers, terminals, contacts, history; import and screen pop) is
its own piece of work; this module defines the lookup every room uses and a directory read from a YAML
file (the demo elders in config/demo_elders.yaml, or a center's small list). Numbers are compared in
national form: "+86 138-0013-8000", "008613800138000" and "13800138000" are the same elder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog
import yaml

from callcenter.ivr.context import CallerProfile

log = structlog.get_logger("callcenter.directory")


def national(number: str) -> str:
    digits = re.sub(r"[^\d+]", "", number)
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix):
            digits = digits[len(prefix):]
            if len(digits) < 11 and not digits.startswith("0"):
                digits = "0" + digits  # a landline written internationally: +86 10 ... → 010 ...
            break
    return digits.lstrip("+")


class Directory(Protocol):
    def lookup(self, number: str) -> CallerProfile: ...


@dataclass
class FileDirectory:
    """Elders from a YAML list: name, title, language, living_alone, numbers, family_numbers."""

    by_number: dict[str, CallerProfile] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> FileDirectory:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        directory = cls()
        for index, row in enumerate(data.get("elders", []), start=1):
            name = str(row["name"])
            profile = CallerProfile(
                known=True,
                elder_id=int(row.get("id", index)),
                name=name,
                surname=str(row.get("surname", name[:1])),
                title=str(row.get("title", name)),
                language=str(row.get("language", "cmn")),
                living_alone=bool(row.get("living_alone", False)),
                family_numbers=tuple(national(str(n)) for n in row.get("family_numbers", [])),
            )
            for number in row.get("numbers", []):
                directory.by_number[national(str(number))] = profile
        log.info("directory.loaded", file=str(path), numbers=len(directory.by_number))
        return directory

    def lookup(self, number: str) -> CallerProfile:
        return self.by_number.get(national(number), CallerProfile())
