"""Phone numbers: every usual way of writing a number gives the same directory key; wrong ones are refused."""

import pytest

from callcenter.directory.numbers import InvalidNumber, display, fast_key, national, normalise

SAME = {
    "13800138001": ["13800138001", "138 0013 8001", "138-0013-8001", "+86 138 0013 8001", "+8613800138001",
                    "008613800138001", "0086 138 0013 8001", "8613800138001", "(+86) 138-0013-8001",
                    "１３８００１３８００１", "＋86 13800138001", "+86 0138 0013 8001"],
    "01062345678": ["01062345678", "010-62345678", "010-6234 5678", "(010)62345678", "（010）6234-5678",
                    "+86 10 62345678", "+86-10-6234-5678", "0086 10 6234 5678", "+86 010 62345678",
                    "861062345678", "010.6234.5678"],
    "02112345678": ["021-12345678", "+86 21 1234 5678"],
    "075588888888": ["0755-88888888", "+86 755 8888 8888"],
    "4008001234": ["400 800 1234", "400-800-1234", "+86 400 800 1234"],
    "+85291234567": ["+852 9123 4567", "00852 91234567"],
    "+16502530000": ["+1 650 253 0000"],
    "1001": ["1001", " 1001 "],
    "12349": ["12349"],
    "110": ["110"],
}

WRONG = ["", "   ", "abc", "138-0013-800a", "+", "++8613800138001", "138001380", "14012345678", "1380013800123",
         "62345678", "0010 1234", "+86 138", "1 2 3 4 5 6 7 8", "13800138001#", "*13800138001"]


@pytest.mark.parametrize(("key", "written"), [(k, w) for k, forms in SAME.items() for w in forms])
def test_every_form_gives_the_same_key(key: str, written: str) -> None:
    assert normalise(written) == key


@pytest.mark.parametrize("written", WRONG)
def test_wrong_numbers_are_refused_with_both_languages(written: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalise(written)
    assert caught.value.en and caught.value.zh and caught.value.zh != caught.value.en


def test_local_numbers_need_the_configured_area_code() -> None:
    with pytest.raises(InvalidNumber, match="no area code"):
        normalise("62345678")
    assert normalise("62345678", area_code="010") == "01062345678"
    assert normalise("6234 5678", area_code="10") == "01062345678"
    assert normalise("13800138001", area_code="010") == "13800138001"  # mobiles are not local numbers
    assert normalise("1001", area_code="010") == "1001"  # nor extensions
    with pytest.raises(InvalidNumber):
        normalise("2345678", area_code="010")  # Beijing numbers have 8 digits
    assert normalise("88888888", area_code="0755") == "075588888888"


def test_the_fast_path_agrees_with_the_full_parse() -> None:
    import phonenumbers

    for number in ["13800138001", "19912345678", "16612345678", "01062345678", "01082345678", "02112345678",
                   "075588888888", "01012345678"]:
        parsed = phonenumbers.parse(number, "CN")
        full = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL).replace(" ", "")
        assert fast_key(number, "CN") in (None, full)
        assert normalise(number) == full
    assert fast_key("14012345678", "CN") is None  # no such mobile range: the full parse refuses it


def test_national_never_fails_and_display_is_for_people() -> None:
    assert national("+86 138 0013 8001") == "13800138001"
    assert national("anonymous") == ""
    assert national("62345678") == "62345678"
    assert national("62345678", area_code="010") == "01062345678"
    assert national("00123") == "+123"
    assert display("13800138001") == "138 0013 8001"
    assert display("01062345678") == "010 6234 5678"
    assert display("+85291234567") == "+852 9123 4567"
    assert display("1001") == "1001" and display("") == ""
