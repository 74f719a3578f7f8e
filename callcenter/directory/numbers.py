"""Phone numbers as the directory keys them: one written form for every way a number is written.

``normalise`` turns what people and carriers write into the key the directory stores and looks up:

=================================================  ===============
written                                            key
=================================================  ===============
``13800138001``, ``+86 138 0013 8001``,             ``13800138001``  (mobile: the 11 digits)
``008613800138001``, ``8613800138001``
``010-6234 5678``, ``(010)62345678``,               ``01062345678``  (landline: trunk 0 + area code + number,
``+86 10 62345678``, ``0086 10 6234 5678``                            the national form dialled in China)
``62345678`` with ``area_code="010"``               ``01062345678``  (see below)
``400 800 1234``                                    ``4008001234``
``1001``, ``12349``, ``110``                        unchanged        (internal extensions, service numbers:
                                                                      up to 6 digits are kept as digits)
``+852 9123 4567``                                  ``+85291234567`` (other countries: E.164)
=================================================  ===============

Validity comes from ``phonenumbers`` (Google's libphonenumber metadata): a number that is not a valid
number of its country raises :class:`InvalidNumber` (with an English and a Chinese message).

**Local numbers without an area code.** Carriers often send the calling number of a caller in the same city as
7–8 digits without the area code. With ``area_code`` set (``directory.area_code: "010"`` for Beijing) a number
of 7 or 8 digits that starts with 2–9 is read as a landline of that area; this is safe because a Chinese
subscriber number never starts with 0 or 1 and nothing else is 7–8 digits long. Without ``area_code`` such a
number is refused (the importer asks for the area code), and :func:`national` keeps its digits.

The common cases (11-digit mobiles, 0-prefixed landlines as plain digits) are checked against the same
metadata patterns without a full parse, so an import of 100,000 elders does not spend its time here."""

from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

SHORT_MAX = 6  # up to this many digits: an extension or a service number, kept as written
_SEPARATORS = re.compile(r"[\s\-.()（）/·]+")
_WRITTEN = re.compile(r"^\+?[0-9]+$")
_WIDE = str.maketrans("０１２３４５６７８９＋", "0123456789+")  # full-width forms, as Chinese input methods type them
_LOCAL = re.compile(r"^[2-9][0-9]{6,7}$")


class InvalidNumber(ValueError):
    """Not a phone number; ``en`` and ``zh`` say why."""

    def __init__(self, en: str, zh: str) -> None:
        super().__init__(en)
        self.en = en
        self.zh = zh


@functools.lru_cache(maxsize=8)
def _patterns(region: str) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None, str]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return None, None, ""
    mobile = metadata.mobile.national_number_pattern if metadata.mobile else None
    fixed = metadata.fixed_line.national_number_pattern if metadata.fixed_line else None
    return (re.compile(mobile) if mobile else None, re.compile(fixed) if fixed else None,
            metadata.national_prefix or "")


def fast_key(digits: str, region: str) -> str | None:
    """The key of a plain-digit mobile or trunk-prefixed landline, from the metadata patterns; None: parse it."""
    mobile, fixed, trunk = _patterns(region)
    if region == "CN":
        if len(digits) == 11 and digits[0] == "1" and mobile is not None and mobile.fullmatch(digits):
            return digits
        if trunk and digits.startswith(trunk) and not digits.startswith(trunk * 2) and fixed is not None \
                and fixed.fullmatch(digits[len(trunk):]):
            return digits
    return None


def _area(area_code: str | None) -> str | None:
    if not area_code:
        return None
    digits = re.sub(r"\D", "", area_code)
    return "0" + digits.lstrip("0") if digits.strip("0") else None


def normalise(raw: str, region: str = "CN", area_code: str | None = None) -> str:
    """The directory key of ``raw`` (see the module docstring); :class:`InvalidNumber` when it is none."""
    text = _SEPARATORS.sub("", str(raw).strip().translate(_WIDE))
    if not text:
        raise InvalidNumber("empty phone number", "电话号码是空的")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not _WRITTEN.fullmatch(text):
        raise InvalidNumber(f"{raw!r} is not a phone number (digits with an optional leading +)",
                            f"“{raw}”不是电话号码（只能写数字，可以“+”开头）")
    if text[0] != "+":
        if len(text) <= SHORT_MAX:
            return text
        fast = fast_key(text, region)
        if fast is not None:
            return fast
        local = _area(area_code)
        if local is not None and region == "CN" and _LOCAL.fullmatch(text):
            text = local + text
            fast = fast_key(text, region)
            if fast is not None:
                return fast
    try:
        parsed = phonenumbers.parse(text, region)
    except NumberParseException:
        raise InvalidNumber(f"{raw!r} is not a phone number", f"“{raw}”不是电话号码") from None
    if not phonenumbers.is_valid_number(parsed):
        if region == "CN" and parsed.country_code == 86 and _LOCAL.fullmatch(text):
            raise InvalidNumber(f"{raw!r} has no area code: write it as 010-{text} (or set directory.area_code)",
                                f"“{raw}”缺少区号：请写成 010-{text} 这样的形式（或在配置里设置 directory.area_code）")
        raise InvalidNumber(f"{raw!r} is not a valid phone number", f"“{raw}”不是有效的电话号码（位数或号段不对）")
    if parsed.country_code == phonenumbers.country_code_for_region(region):
        return re.sub(r"\D", "", phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL))
    return phonenumbers.format_number(parsed, PhoneNumberFormat.E164)


def national(number: str, region: str = "CN", area_code: str | None = None) -> str:
    """The key of a calling number, never failing: what :func:`normalise` gives, else the number's digits
    (a caller's number that is no valid number still matches itself)."""
    try:
        return normalise(number, region, area_code)
    except InvalidNumber:
        digits = re.sub(r"[^\d+]", "", str(number))
        if digits.startswith("00"):
            digits = "+" + digits[2:]
        return digits


def is_mobile(number: str) -> bool:
    """A mobile's key: a Chinese one (11 digits starting with 1) or another country's mobile (E.164)."""
    if number.startswith("+"):
        try:
            kind = phonenumbers.number_type(phonenumbers.parse(number))
        except NumberParseException:
            return False
        return kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    return len(number) == 11 and number[0] == "1" and number.isdigit()


@functools.lru_cache(maxsize=65_536)  # every profile and search result shows its numbers: parse each one once
def display(number: str, region: str = "CN") -> str:
    """A key written for people: "138 0013 8001", "010 6234 5678", "+852 9123 4567"; short numbers as they are."""
    if not number or (number.isdigit() and len(number) <= SHORT_MAX):
        return number
    try:
        parsed = phonenumbers.parse(number, region)
    except NumberParseException:
        return number
    if number.startswith("+"):
        return phonenumbers.format_number(parsed, PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL)
