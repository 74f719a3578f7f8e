"""What a person writes about an elder, checked and normalised before it reaches the database.

:class:`ElderInput` is the one door for every writer (the desktop's API, the spreadsheet importer, the YAML
seed): each field has a parser that accepts the usual ways of writing it (Chinese and English words, dates as
people and spreadsheets write them, phone numbers in any form) and refuses the rest with a :class:`FieldError`
in English and Chinese. :func:`validate_elder` turns the first problem into a :class:`DirectoryInputError`
naming the field (the API's 4xx); :func:`input_problems` lists them all (the importer's row:column report).

Resident ID numbers (居民身份证号, GB 11643) are checked: 17 digits and a check digit (ISO 7064 MOD 11-2),
a real birth date; a 15-digit one of the old kind is converted. Birth date and sex are taken from it when
not given, and must agree with it when given."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from callcenter.directory.models import BATTERY_STATES, PHONE_KINDS, POWER_STATES
from callcenter.directory.numbers import InvalidNumber, is_mobile, normalise

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
COMPOUND_SURNAMES = frozenset({"欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文",
                               "司徒", "夏侯", "轩辕", "令狐", "端木", "西门", "南宫", "独孤", "万俟"})
WORK_ORDER_MOVES = {"open": ("in_progress", "done", "cancelled"), "in_progress": ("done", "cancelled"),
                    "done": (), "cancelled": ()}
KIND_WORDS = {"home": "home", "家": "home", "家庭": "home", "座机": "home", "固话": "home", "住宅": "home",
              "mobile": "mobile", "手机": "mobile", "移动": "mobile",
              "terminal": "terminal", "终端": "terminal", "sim": "terminal"}
LANGUAGE_WORDS = {"cmn": "cmn", "zh": "cmn", "mandarin": "cmn", "普通话": "cmn", "国语": "cmn", "汉语": "cmn",
                  "yue": "yue", "cantonese": "yue", "粤语": "yue", "广东话": "yue", "白话": "yue"}
SEX_WORDS = {"f": "F", "female": "F", "女": "F", "m": "M", "male": "M", "男": "M"}
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "是", "独居", "✓", "√", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "否", "不是", "非独居", "f", ""})
_SPLIT_ITEMS = re.compile(r"[;；、\n]+")
_SPLIT_PHONES = re.compile(r"[;；、,，\n]+")
_PARTS = re.compile(r"[:：]")
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_BUTTON = re.compile(r"^[a-z][a-z_]{0,31}$")
EXCEL_EPOCH = date(1899, 12, 30)


class FieldError(ValueError):
    """A value that cannot be used; ``en`` and ``zh`` say why. ``field`` names it when the check spans fields."""

    def __init__(self, en: str, zh: str, field: str | None = None) -> None:
        super().__init__(en)
        self.en, self.zh, self.field = en, zh, field


class DirectoryInputError(ValueError):
    """Bad input for the directory: ``field`` names it (the API answers 4xx with it), ``message`` says why
    in English, ``zh`` in Chinese."""

    def __init__(self, field: str, message: str, zh: str = "") -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.zh = field, message, zh or message


def id_check_digit(first17: str) -> str:
    """The 18th character of a resident ID number (GB 11643, ISO 7064 MOD 11-2)."""
    return ID_CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def mask_id(id_number: str | None) -> str | None:
    """"110102********1234": the first 6 and the last 4 characters only."""
    if not id_number:
        return None
    if len(id_number) >= 10:
        return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]
    return "*" * max(0, len(id_number) - 4) + id_number[-4:]


def id_birth_date(id_number: str) -> date:
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def id_sex(id_number: str) -> str:
    return "M" if int(id_number[16]) % 2 else "F"


def age_on(birth: date | None, today: date) -> int | None:
    if birth is None:
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def surname(name: str) -> str:
    return name[:2] if name[:2] in COMPOUND_SURNAMES else name[:1]


def default_title(name: str, sex: str | None) -> str:
    """How the IVR greets an elder nobody gave a title: 王奶奶 / 王爷爷 (else the name)."""
    if sex in ("F", "M") and name:
        return surname(name) + ("奶奶" if sex == "F" else "爷爷")
    return name[:32]


def plain(value: Any) -> str:
    """A cell or JSON value as text: 13800138001.0 (a spreadsheet number) → "13800138001"."""
    if type(value) is str:
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_text(value: Any, limit: int) -> str:
    result = plain(value)
    if len(result) > limit:
        raise FieldError(f"longer than {limit} characters", f"超过 {limit} 个字")
    return result


def parse_date(value: Any, *, earliest: date = date(1880, 1, 1), latest: date | None = None) -> date | None:
    """A date from "1943-05-01", "1943/5/1", "1943年5月1日", "19430501", a spreadsheet date or serial."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        result = value.date()
    elif isinstance(value, date):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 100_000:
        result = EXCEL_EPOCH + timedelta(days=int(value))
    else:
        written = plain(value)
        match = _DATE.match(written)
        if match is None and re.fullmatch(r"\d{8}", written):
            match = re.match(r"(\d{4})(\d{2})(\d{2})", written)
        if match is None:
            raise FieldError(f"{written!r} is not a date (write YYYY-MM-DD)",
                             f"“{written}”不是日期（请写成 年-月-日，如 1943-05-01）")
        try:
            result = date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            raise FieldError(f"{written!r} is not a date of the calendar", f"“{written}”不是有效的日期") from None
    if result < earliest or (latest is not None and result > latest):
        raise FieldError(f"{result.isoformat()} is out of range ({earliest.isoformat()} … {latest or ''})",
                         f"{result.isoformat()} 超出范围（{earliest.isoformat()} 至 {latest or ''}）")
    return result


def parse_id_number(value: Any, today: date) -> str | None:
    """An 18-character resident ID number (a 15-digit one of the old kind is converted), checked."""
    written = plain(value).upper().replace(" ", "")
    if not written:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and len(written) >= 15:
        raise FieldError("the ID number was stored as a number and lost digits: format the column as text",
                         "身份证号被表格存成了数字，后几位已丢失：请把这一列设为“文本”格式后重新填写")
    if "*" in written:
        raise FieldError("the ID number is masked: export with --unmasked to import it again",
                         "身份证号是打码的：需要用 --unmasked 导出的文件才能导入")
    if re.fullmatch(r"\d{15}", written):
        written = written[:6] + "19" + written[6:]
        written += id_check_digit(written)
    if not re.fullmatch(r"[1-9]\d{16}[\dX]", written):
        raise FieldError(f"{written!r} is not an ID number (18 characters: 17 digits and a digit or X)",
                         f"“{written}”不是身份证号（应为 18 位：17 位数字加 1 位数字或 X）")
    try:
        birth = id_birth_date(written)
    except ValueError:
        raise FieldError(f"{written!r}: the birth date in the ID number is not a date",
                         f"“{written}”：身份证号里的出生日期无效") from None
    if not date(1880, 1, 1) <= birth <= today:
        raise FieldError(f"{written!r}: the birth date in the ID number is out of range",
                         f"“{written}”：身份证号里的出生日期不合理")
    if id_check_digit(written[:17]) != written[17]:
        raise FieldError(f"{written!r}: wrong check digit (a digit was mistyped)",
                         f"“{written}”：校验位不对（有数字输错了）")
    return written


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    written = plain(value).lower()
    if written in TRUE_WORDS:
        return True
    if written in FALSE_WORDS:
        return False
    raise FieldError(f"{written!r} is not yes or no", f"“{written}”应为 是 或 否")


def parse_float(value: Any, low: float, high: float) -> float | None:
    written = plain(value)
    if not written:
        return None
    try:
        number = float(written)
    except ValueError:
        raise FieldError(f"{written!r} is not a number", f"“{written}”不是数字") from None
    if not low <= number <= high:
        raise FieldError(f"{written} is out of range ({low} … {high})", f"{written} 超出范围（{low} 至 {high}）")
    return number


def _number(raw: str, context: Mapping[str, Any]) -> str:
    try:
        return normalise(raw, context.get("region", "CN"), context.get("area_code"))
    except InvalidNumber as exc:
        raise FieldError(exc.en, exc.zh) from None


def parse_phones(value: Any, context: Mapping[str, Any]) -> list[dict[str, str]]:
    """Numbers from a list or a text "13800138001; home:010-62345678; 终端:13800138002" (kind inferred when
    not written: 11-digit mobiles are "mobile", the rest "home"); the same number twice is kept once."""
    if value is None or value == "":
        return []
    items = _SPLIT_PHONES.split(plain(value)) if isinstance(value, str | int | float) else list(value)
    phones: dict[str, dict[str, str]] = {}
    for item in items:
        if isinstance(item, Mapping):
            raw, kind = plain(item.get("number")), plain(item.get("kind")).lower()
        else:
            raw, kind = plain(item), ""
            parts = _PARTS.split(raw, maxsplit=1)
            if len(parts) == 2 and parts[0].strip().lower() in KIND_WORDS:
                kind, raw = parts[0].strip().lower(), parts[1].strip()
        if not raw:
            continue
        key = _number(raw, context)
        kind = KIND_WORDS.get(kind, kind) if kind else ("mobile" if is_mobile(key) else "home")
        if kind not in PHONE_KINDS:
            raise FieldError(f"{kind!r} is not a kind of number (home, mobile, terminal)",
                             f"“{kind}”不是号码类型（home 家庭座机、mobile 手机、terminal 终端）")
        phones.setdefault(key, {"number": key, "raw": raw[:64], "kind": kind})
    return list(phones.values())


def parse_contacts(value: Any, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Contacts from a list or a text "张丽:女儿:13900139001; 李强:儿子:13900139011" (in the order to call)."""
    if value is None or value == "":
        return []
    items = _SPLIT_ITEMS.split(plain(value)) if isinstance(value, str) else list(value)
    contacts: list[dict[str, Any]] = []
    for position, item in enumerate((i for i in items if i not in ("", None)), start=1):
        if isinstance(item, Mapping):
            name, relation, raw = plain(item.get("name")), plain(item.get("relation")), plain(item.get("number"))
            order = item.get("order") or position
        else:
            parts = [p.strip() for p in _PARTS.split(plain(item))]
            if not 1 <= len(parts) <= 3:
                raise FieldError(f"{plain(item)!r}: write a contact as name:relation:number",
                                 f"“{plain(item)}”：联系人请写成 姓名:关系:电话")
            raw = parts[-1]
            name = parts[0] if len(parts) > 1 else ""
            relation = parts[1] if len(parts) == 3 else ""
            order = position
        if not raw:
            raise FieldError(f"contact {name or position}: no number", f"联系人 {name or position} 没有电话")
        if len(name) > 64 or len(relation) > 32:
            raise FieldError("a contact's name or relation is too long", "联系人姓名或关系太长")
        try:
            order = int(order)
        except (TypeError, ValueError):
            raise FieldError(f"contact order {order!r} is not a whole number", f"联系人顺序“{order}”不是整数") from None
        contacts.append({"name": name, "relation": relation, "number": _number(raw, context), "raw": raw[:64],
                         "order": order})
    contacts.sort(key=lambda c: c["order"])
    for position, contact in enumerate(contacts, start=1):
        contact["order"] = position
    return contacts


def parse_buttons(value: Any) -> dict[str, str]:
    """A terminal's button map: {"12349": "emergency"} or the text "12349=emergency; 12340=family"."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(_buttons(tuple((plain(k), plain(v)) for k, v in value.items())))
    pairs = []
    for item in _SPLIT_PHONES.split(plain(value)):
        if not item.strip():
            continue
        did, sep, button = item.partition("=")
        if not sep:
            raise FieldError(f"{item!r}: write a button as number=button", f"“{item}”：按键请写成 号码=按键名")
        pairs.append((did.strip(), button.strip()))
    return dict(_buttons(tuple(pairs)))


@functools.lru_cache(maxsize=256)  # a center's terminals mostly share one button map
def _buttons(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    checked = []
    for did, button in pairs:
        if not re.fullmatch(r"\+?\d{1,20}", did.replace("-", "")) or not _BUTTON.match(button):
            raise FieldError(f"{did}={button}: expected a number and a button name like emergency",
                             f"{did}={button}：应为 号码=按键名（如 12349=emergency）")
        checked.append((did.replace("-", ""), button))
    return tuple(checked)


def parse_terminal(value: Any, today: date) -> dict[str, Any] | None:
    """A terminal from a mapping or the text "type:serial:installed" (e.g. "fixed:T2024000123:2024-03-01")."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        data = dict(value)
    else:
        parts = [p.strip() for p in _PARTS.split(plain(value))]
        if len(parts) > 3:
            raise FieldError(f"{plain(value)!r}: write the terminal as type:serial:installed",
                             f"“{plain(value)}”：终端请写成 型号:序列号:安装日期")
        data = dict(zip(("type", "serial", "installed"), parts, strict=False))
    unknown = set(data) - {"type", "serial", "installed", "buttons", "battery", "power", "last_heartbeat"}
    if unknown:
        raise FieldError(f"unknown terminal key(s): {', '.join(sorted(unknown))}",
                         f"终端没有这些项：{', '.join(sorted(unknown))}")
    battery, power = plain(data.get("battery")) or "ok", plain(data.get("power")) or "ac"
    if battery not in BATTERY_STATES or power not in POWER_STATES:
        raise FieldError("battery is ok or low; power is ac, battery or lost",
                         "电量应为 ok 或 low；供电应为 ac、battery 或 lost")
    heartbeat = data.get("last_heartbeat")
    if isinstance(heartbeat, str) and heartbeat:
        try:
            heartbeat = datetime.fromisoformat(heartbeat.replace("Z", "+00:00"))
        except ValueError:
            raise FieldError(f"last_heartbeat {heartbeat!r} is not an ISO time", "心跳时间格式不对") from None
    if isinstance(heartbeat, datetime) and heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=UTC)
    return {"type": parse_text(data.get("type"), 32), "serial": parse_text(data.get("serial"), 64) or None,
            "installed": parse_date(data.get("installed"), earliest=date(1990, 1, 1), latest=today),
            "buttons": parse_buttons(data.get("buttons")), "battery": battery, "power": power,
            "last_heartbeat": heartbeat or None}


TEXT_LIMITS = {"title": 32, "district": 32, "street": 64, "community": 64, "address": 255, "health_notes": 2000,
               "care_level": 32}


class ElderInput(BaseModel):
    """An elder as written by a person (API, spreadsheet, YAML): every field checked and normalised.
    Validate with ``context={"region": "CN", "area_code": None, "today": date}`` (see :func:`validate_elder`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str = ""
    sex: str | None = None
    birth_date: date | None = None
    id_number: str | None = None
    district: str = ""
    street: str = ""
    community: str = ""
    address: str = ""
    lat: float | None = None
    lon: float | None = None
    language: str = "cmn"
    living_alone: bool = False
    health_notes: str = ""
    care_level: str = ""
    phones: list[dict[str, str]] = []
    contacts: list[dict[str, Any]] = []
    terminal: dict[str, Any] | None = None

    @staticmethod
    def _today(info: ValidationInfo) -> date:
        context = info.context or {}
        return context.get("today") or date.today()

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        name = parse_text(value, 64)
        if not name:
            raise FieldError("a name is required", "必须填写姓名")
        return name

    @field_validator(*TEXT_LIMITS, mode="before")
    @classmethod
    def _texts(cls, value: Any, info: ValidationInfo) -> str:
        return parse_text(value, TEXT_LIMITS[str(info.field_name)])

    @field_validator("sex", mode="before")
    @classmethod
    def _sex(cls, value: Any) -> str | None:
        written = plain(value)
        if not written:
            return None
        if written.lower() not in SEX_WORDS:
            raise FieldError(f"{written!r} is not F or M", f"“{written}”应为 女(F) 或 男(M)")
        return SEX_WORDS[written.lower()]

    @field_validator("birth_date", mode="before")
    @classmethod
    def _birth(cls, value: Any, info: ValidationInfo) -> date | None:
        return parse_date(value, earliest=date(1880, 1, 1), latest=cls._today(info))

    @field_validator("id_number", mode="before")
    @classmethod
    def _id(cls, value: Any, info: ValidationInfo) -> str | None:
        return parse_id_number(value, cls._today(info))

    @field_validator("lat", mode="before")
    @classmethod
    def _lat(cls, value: Any) -> float | None:
        return parse_float(value, -90.0, 90.0)

    @field_validator("lon", mode="before")
    @classmethod
    def _lon(cls, value: Any) -> float | None:
        return parse_float(value, -180.0, 180.0)

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: Any) -> str:
        written = plain(value).lower()
        if not written:
            return "cmn"
        if written not in LANGUAGE_WORDS:
            raise FieldError(f"{written!r} is not a language the center speaks (cmn, yue)",
                             f"“{written}”不是支持的语言（cmn 普通话、yue 粤语）")
        return LANGUAGE_WORDS[written]

    @field_validator("living_alone", mode="before")
    @classmethod
    def _alone(cls, value: Any) -> bool:
        return parse_bool(value)

    @field_validator("phones", mode="before")
    @classmethod
    def _phones(cls, value: Any, info: ValidationInfo) -> list[dict[str, str]]:
        return parse_phones(value, info.context or {})

    @field_validator("contacts", mode="before")
    @classmethod
    def _contacts(cls, value: Any, info: ValidationInfo) -> list[dict[str, Any]]:
        return parse_contacts(value, info.context or {})

    @field_validator("terminal", mode="before")
    @classmethod
    def _terminal(cls, value: Any, info: ValidationInfo) -> dict[str, Any] | None:
        return parse_terminal(value, cls._today(info))

    @model_validator(mode="after")
    def _consistent(self) -> ElderInput:
        if self.id_number:
            born, sex = id_birth_date(self.id_number), id_sex(self.id_number)
            if self.birth_date is None:
                self.birth_date = born
            elif self.birth_date != born:
                raise FieldError(f"{self.birth_date.isoformat()} differs from the ID number's {born.isoformat()}",
                                 f"{self.birth_date.isoformat()} 与身份证号里的出生日期 {born.isoformat()} 不一致",
                                 field="birth_date")
            if self.sex is None:
                self.sex = sex
            elif self.sex != sex:
                raise FieldError(f"{self.sex} differs from the ID number's {sex}",
                                 f"性别与身份证号不一致（身份证号为{'男' if sex == 'M' else '女'}）", field="sex")
        if (self.lat is None) != (self.lon is None):
            raise FieldError("give both latitude and longitude, or neither", "纬度和经度要么都填，要么都不填",
                             field="lat" if self.lat is None else "lon")
        if not self.title:
            self.title = default_title(self.name, self.sex)
        return self


def input_problems(exc: ValidationError) -> list[tuple[str, str, str]]:
    """(field, English, Chinese) for every problem of a failed :class:`ElderInput` validation."""
    problems = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        loc = [str(part) for part in error["loc"]]
        field = getattr(cause, "field", None) or ".".join(loc) or "body"
        if isinstance(cause, FieldError):
            en, zh = cause.en, cause.zh
        elif error["type"] == "missing" and field == "name":
            en, zh = "a name is required", "必须填写姓名"
        elif error["type"] == "missing":
            en, zh = "required", "必须填写"
        elif error["type"] == "extra_forbidden":
            en, zh = "unknown field", "没有这个字段"
        else:
            en, zh = error["msg"], f"格式不对：{error['msg']}"
        problems.append((field, en, zh))
    return problems


def validate_elder(data: Mapping[str, Any], *, region: str = "CN", area_code: str | None = None,
                   today: date | None = None) -> ElderInput:
    """:class:`ElderInput` from ``data``, or :class:`DirectoryInputError` naming the first bad field."""
    try:
        return ElderInput.model_validate(dict(data), context={"region": region, "area_code": area_code,
                                                              "today": today or date.today()})
    except ValidationError as exc:
        field, en, zh = input_problems(exc)[0]
        raise DirectoryInputError(field, en, zh) from None
