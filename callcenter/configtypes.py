"""The building blocks of the configuration (:mod:`callcenter.config`): field types that explain what they
expect, host:port and phone-number parsing, uniqueness checks that point at each repeat, and the section base
(unknown keys refused, ``key:`` with no value meaning the default)."""

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from callcenter.yamlsource import Loc
from callcenter.yamlsource import invalid as _invalid
from callcenter.yamlsource import show_value as _show

HOSTPORT_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d{1,5})$")
NUMBER_RE = re.compile(r"^\+?[0-9]+$")


def matching(regex: str, what: str) -> AfterValidator:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise _invalid(f"expected {what}, got {_show(value)}")
        return value

    return AfterValidator(check)


Name = Annotated[str, matching(r"^[A-Za-z0-9._-]+$", "letters, digits, '.', '_' or '-'")]
SipUser = Annotated[str, matching(r"^[A-Za-z0-9._~+-]+$", "letters, digits or one of . _ ~ + -")]
Ha1 = Annotated[str, matching(r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{64})$", "32 (MD5) or 64 (SHA-256) hex digits")]
RedisUrl = Annotated[str, matching(r"^(redis|rediss|unix)://", 'a URL like "redis://127.0.0.1:6379/0"')]
Argon2Hash = Annotated[
    str,
    matching(
        r"^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$",
        'an argon2id hash like "$argon2id$v=19$m=65536,t=3,p=4$..." (make one with `callcenter users hash-password`)',
    ),
]


def split_hostport(text: str) -> tuple[str, int] | None:
    match = HOSTPORT_RE.match(text.strip())
    if match is None or int(match["port"]) > 65535:
        return None
    if match["v6"]:
        try:
            ipaddress.IPv6Address(match["v6"].split("%")[0])
        except ValueError:
            return None
    return match["v6"] or match["host"], int(match["port"])


def hostport_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def phone_number(value: str) -> str:
    """Phone numbers / DIDs: digits with an optional leading '+'; spaces and dashes are ignored."""
    number = re.sub(r"[\s-]", "", value)
    if not NUMBER_RE.match(number):
        raise _invalid(f'expected digits with an optional leading "+", got {_show(value)}')
    return number


def duplicates(values: list[Any], what: str) -> list[tuple[Loc, str]]:
    seen: dict[Any, int] = {}
    problems: list[tuple[Loc, str]] = []
    for index, value in enumerate(values):
        if value in seen:
            problems.append(((index,), f"duplicate {what} {_show(value)} (first at index {seen[value]})"))
        seen.setdefault(value, index)
    return problems


def require_unique(items: list[Any], field: str, what: str, key: Any = None) -> None:
    """Refuse a list whose items repeat ``field`` (compared through ``key``), pointing at each repeat."""
    values = [getattr(item, field) for item in items]
    if problems := duplicates([key(v) for v in values] if key else values, what):
        raise _invalid(problems=[(loc + (field,), text) for loc, text in problems])


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        """``key:`` with no value in YAML (null) means "use the default" for keys that have one."""
        if isinstance(data, dict):
            fields = cls.model_fields
            return {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].is_required()}
        return data
