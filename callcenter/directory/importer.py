"""Elders from a spreadsheet (CSV or XLSX): every bad cell reported, nothing half-imported.

The first row names the columns, in Chinese or English (``姓名`` or ``name``, also ``姓名/name``); the order
is free and only ``姓名/name`` is required. Columns (:data:`COLUMNS`):

================  ==============  ==========================================================================
Chinese           English         value
================  ==============  ==========================================================================
姓名              name            required
称呼              title           how the IVR greets (default: 王奶奶 / 王爷爷 from the surname and sex)
性别              sex             女/男, F/M (default: from the ID number)
出生日期          birth_date      1943-05-01, 1943/5/1, 1943年5月1日, a spreadsheet date (default: from the ID)
身份证号          id_number       18 characters, check digit verified (15-digit old numbers are converted)
区 / 街道 / 社区  district …      text
地址              address         building, unit, room
电话              phones          several, separated by ; or 、 — each may start with its kind: 手机/mobile,
                                  家/home, 终端/terminal ("终端:13800138001; 010-62345678")
终端              terminal        type:serial:installed ("一键呼座机:YJH20240000001:2024-03-01")
终端按键          buttons         12349=emergency; 12340=family (default: the center's button numbers)
联系人            contacts        name:relation:number; … in the order to call ("张丽:女儿:13900139001")
语言              language        cmn/普通话, yue/粤语
独居              living_alone    是/否, yes/no, 1/0
健康              health_notes    text
照护等级          care_level      text (自理, 轻度失能 …)
纬度 / 经度       lat / lon       decimal degrees
================  ==============  ==========================================================================

Every problem is reported as ``FILE:ROW:COLUMN: column: message`` and again in Chinese. With any problem
nothing is written, unless ``partial`` (then the good rows are). The same elder — the same ID number, else
the same name and one of the same numbers — is updated rather than added again (numbers are added, contacts
and the terminal replaced when given); two rows of the file for the same elder are a problem. A cell that
starts with ' followed by = + - @ (how the exporter protects spreadsheet formulas) loses the '."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from callcenter.directory.store import DirectoryStore
from callcenter.directory.validation import ElderInput, FieldError, input_problems, parse_buttons, parse_terminal

COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "姓名"), ("title", "称呼"), ("sex", "性别"), ("birth_date", "出生日期"), ("id_number", "身份证号"),
    ("district", "区"), ("street", "街道"), ("community", "社区"), ("address", "地址"), ("phones", "电话"),
    ("terminal", "终端"), ("buttons", "终端按键"), ("contacts", "联系人"), ("language", "语言"),
    ("living_alone", "独居"), ("health_notes", "健康"), ("care_level", "照护等级"), ("lat", "纬度"), ("lon", "经度"))
ALIASES = {
    "区县": "district", "所在区": "district", "详细地址": "address", "住址": "address", "电话号码": "phones",
    "联系电话": "phones", "号码": "phones", "健康状况": "health_notes", "健康情况": "health_notes",
    "照护级别": "care_level", "护理等级": "care_level", "是否独居": "living_alone", "latitude": "lat",
    "longitude": "lon", "lng": "lon", "证件号码": "id_number", "身份证": "id_number", "生日": "birth_date",
    "contact": "contacts", "phone": "phones", "numbers": "phones", "health": "health_notes",
}
FORMULA_START = "=+-@"


@dataclass(frozen=True)
class ImportIssue:
    """One bad cell (``column`` 0: the row as a whole; ``row`` 0: the file)."""

    source: str
    row: int
    column: int
    header: str
    en: str
    zh: str

    @property
    def where(self) -> str:
        return f"{self.source}:{self.row}:{self.column}" if self.row else self.source

    def __str__(self) -> str:
        return f"{self.where}: {self.header + ': ' if self.header else ''}{self.en}"

    def bilingual(self) -> str:
        return f"{self}\n  {self.where}: {self.header + '：' if self.header else ''}{self.zh}"


@dataclass
class ImportReport:
    rows: int = 0
    good: list[tuple[int, ElderInput]] = field(default_factory=list)
    issues: list[ImportIssue] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    written: bool = False


def column_field(header: str) -> str | None:
    """The field a header names: "姓名", "name", "姓名/name", "Name" …; None for an unknown header."""
    names = {english: english for english, _ in COLUMNS} | {chinese: english for english, chinese in COLUMNS}
    written = header.replace("（", "(").replace("）", ")").strip()
    for part in (written, *written.split("/"), *re.split(r"[()]", written)):
        key = part.strip()
        found = names.get(key) or names.get(key.lower()) or ALIASES.get(key) or ALIASES.get(key.lower())
        if found:
            return found
    return None


def read_table(path: Path) -> tuple[list[Any], list[list[Any]]]:
    """(header, rows) of a CSV (UTF-8, with or without BOM, else GB18030) or XLSX file (its first sheet)."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        try:
            rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
        finally:
            book.close()
    elif path.suffix.lower() in (".csv", ".txt"):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("gb18030")
        rows = [list(r) for r in csv.reader(io.StringIO(text, newline=""))]
    else:
        raise ValueError(f"{path}: expected a .csv or .xlsx file")
    if not rows:
        return [], []
    return rows[0], rows[1:]


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_START:
            return value[1:]
    return value


def parse_rows(path: Path, store: DirectoryStore, *,
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Read and check every row (nothing is written)."""
    source = str(path)
    report = ImportReport()
    try:
        header, rows = read_table(path)
    except (OSError, ValueError, KeyError, csv.Error) as exc:
        report.issues.append(ImportIssue(source, 0, 0, "", f"cannot read the file: {exc}", f"无法读取文件：{exc}"))
        return report
    columns: dict[str, int] = {}
    for index, title in enumerate(header, start=1):
        if title is None or str(title).strip() == "":
            continue
        name = column_field(str(title))
        if name is None:
            report.issues.append(ImportIssue(source, 1, index, str(title), "unknown column (see the column list)",
                                             "不认识的列名（请对照列名表）"))
        elif name in columns:
            first = columns[name]
            report.issues.append(ImportIssue(source, 1, index, str(title), f"the same column as column {first}",
                                             f"与第 {first} 列重复"))
        else:
            columns[name] = index
    if "name" not in columns:
        report.issues.append(ImportIssue(source, 1, 0, "", "no 姓名/name column", "缺少“姓名”列"))
        return report
    titles = {name: str(header[index - 1]).strip() for name, index in columns.items()}
    context = {"region": store.region, "area_code": store.area_code, "today": store.today()}
    seen_ids: dict[str, int] = {}
    seen_numbers: dict[tuple[str, str], int] = {}
    total = len(rows)
    for position, row in enumerate(rows, start=2):
        if progress is not None and position % 1000 == 0:
            progress(position - 1, total)
        values = {name: _cell(row[index - 1]) if index - 1 < len(row) else None for name, index in columns.items()}
        if all(v is None or v == "" for v in values.values()):
            continue
        report.rows += 1
        data = {name: value for name, value in values.items() if value is not None and value != ""}

        def issue(name: str, en: str, zh: str, row_number: int = position) -> None:
            report.issues.append(ImportIssue(source, row_number, columns.get(name, 0), titles.get(name, ""), en, zh))

        buttons = data.pop("buttons", None)
        if buttons is not None:
            try:
                terminal = parse_terminal(data.get("terminal") or {}, context["today"]) or {}
            except FieldError as exc:
                issue("terminal", exc.en, exc.zh)
                continue
            try:
                terminal["buttons"] = parse_buttons(buttons)
            except FieldError as exc:
                issue("buttons", exc.en, exc.zh)
                continue
            data["terminal"] = terminal
        try:
            elder = ElderInput.model_validate(data, context=context)
        except ValidationError as exc:
            for name, en, zh in input_problems(exc):
                name = name.split(".")[0]
                if name not in columns and name in ("birth_date", "sex"):  # derived from the ID number
                    name = "id_number"
                issue(name, en, zh)
            continue
        pairs = [(elder.name, p["number"]) for p in elder.phones]
        duplicate = seen_ids.get(elder.id_number or "") or next(
            (seen_numbers[pair] for pair in pairs if pair in seen_numbers), None)
        if duplicate is not None:
            issue("id_number" if elder.id_number in seen_ids else "phones", f"the same elder as row {duplicate}",
                  f"与第 {duplicate} 行是同一位老人")
            continue
        if elder.id_number:
            seen_ids[elder.id_number] = position
        seen_numbers.update({(elder.name, p["number"]): position for p in elder.phones})
        report.good.append((position, elder))
    if progress is not None:
        progress(total, total)
    return report


async def import_file(store: DirectoryStore, path: Path, *, partial: bool = False, dry_run: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Check the file, then (unless ``dry_run``, and only without problems unless ``partial``) write its elders
    in one transaction."""
    report = parse_rows(path, store, progress=progress)
    if dry_run or not report.good or (report.issues and not partial):
        return report
    result = await store.write_inputs([elder for _, elder in report.good])
    report.created, report.updated, report.written = result.created, result.updated, True
    return report


def rows_text(issues: Sequence[ImportIssue], limit: int = 200) -> Iterator[str]:
    """The problems, two lines each (English, Chinese), at most ``limit`` of them."""
    for issue in issues[:limit]:
        yield issue.bilingual()
    if len(issues) > limit:
        yield f"… and {len(issues) - limit} more problem(s)\n  … 另有 {len(issues) - limit} 个问题"
