"""Import (CSV, XLSX) with its row:column report and all-or-nothing rule, export, the round trip, and the
`callcenter elders …` commands (access log, exit codes, progress bar)."""

import asyncio
import csv
import datetime as dt
import getpass
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from openpyxl import Workbook

from callcenter.cli import main as cli
from callcenter.directory.commands import Progress
from callcenter.directory.exporter import export_file
from callcenter.directory.importer import column_field, import_file
from callcenter.directory.lookup import prepare
from callcenter.directory.store import DirectoryInputError, DirectoryStore
from callcenter.directory.validation import id_check_digit
from callcenter.store.db import create_engine_for, run_migrations

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
BUTTONS = {"12349": "emergency", "12340": "family"}
ID_F = "11010219400305" + "124"
ID_F = ID_F + id_check_digit(ID_F)  # a woman born 1940-03-05
ID_M = "11010519430501" + "135"
ID_M = ID_M + id_check_digit(ID_M)  # a man born 1943-05-01
HEADER = "姓名,性别,出生日期,身份证号,电话,联系人,独居,语言,纬度,经度,终端,终端按键"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The commands point the logs at the captured stderr, which pytest closes after each test."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "callcenter.logs"]:
        root.removeHandler(handler)


def new_store(tmp_path: Path, name: str = "cc.db") -> DirectoryStore:
    url = f"sqlite+aiosqlite:///{tmp_path / name}"
    run_migrations(url)
    return DirectoryStore(create_engine_for(url), now=lambda: NOW, buttons=BUTTONS)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_import_with_chinese_columns(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "elders.csv", HEADER,
                       f'王秀兰,女,1940-03-05,{ID_F},"13911112222; 家:010-64011111",张三:儿子:13922223333,是,普通话,'
                       '39.9,116.4,一键呼座机:SN-A:2024-01-01,12349=emergency',
                       "赵强,男,,,13911113333,,否,粤语,,,,", ",,,,,,,,,,,")

    async def main() -> None:
        store = new_store(tmp_path)
        report = await import_file(store, source)
        assert (report.rows, report.created, report.updated, report.issues) == (2, 2, 0, [])
        wang = await store.elder(1, unmask=True)
        assert wang is not None and (wang["name"], wang["title"], wang["id_number"]) == ("王秀兰", "王奶奶", ID_F)
        assert [(p["number"], p["kind"]) for p in wang["phones"]] == [("13911112222", "mobile"),
                                                                      ("01064011111", "home")]
        assert [(c["name"], c["relation"], c["number"]) for c in wang["contacts"]] == [("张三", "儿子", "13922223333")]
        assert wang["terminals"][0] | {"id": 0} == {"id": 0, "type": "一键呼座机", "serial": "SN-A",
                                                   "installed": "2024-01-01", "buttons": {"12349": "emergency"},
                                                   "last_heartbeat": None, "battery": "ok", "power": "ac"}
        assert wang["living_alone"] is True and wang["location"] == {"lat": 39.9, "lon": 116.4}
        zhao = await store.elder(2)
        assert zhao is not None and (zhao["language"], zhao["sex"], zhao["title"]) == ("yue", "M", "赵爷爷")
        again = await import_file(store, source)  # the same elders: updated, not added twice
        assert (again.created, again.updated) == (0, 2) and await store.count() == 2
        assert await store.elder(1, unmask=True) | {"updated_at": None} == wang | {"updated_at": None}
        changed = write_csv(tmp_path / "changed.csv", "姓名,电话,联系人,终端,健康",
                            '王秀兰,"13911115555; 13911112222",李四:女儿:13922224444,智能手表:SN-A,高血压')
        assert (await import_file(store, changed)).updated == 1  # the same name and one of the same numbers
        after = await store.elder(1)
        assert after is not None and [p["number"] for p in after["phones"]] == ["13911112222", "13911115555",
                                                                                 "01064011111"]
        assert [(c["name"], c["number"]) for c in after["contacts"]] == [("李四", "13922224444")]
        assert [(t["type"], t["serial"], t["installed"]) for t in after["terminals"]] == [("智能手表", "SN-A", None)]
        assert (after["health_notes"], after["birth_date"], after["living_alone"]) == ("高血压", "1940-03-05", True)
        await store.db.dispose()

    run(main())


def test_xlsx_import_with_english_columns_and_spreadsheet_values(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["Name", "sex", "birth_date", "ID_number/身份证号", "phones", "living_alone", "address"])
    sheet.append(["李桂英", "F", dt.datetime(1940, 3, 5), ID_F, 13911112222, True, "菊儿胡同21号"])
    sheet.append(["周建华", "m", None, None, "+86 10 6401 2222、13911114444", 0, None])
    path = tmp_path / "elders.xlsx"
    book.save(path)

    async def main() -> None:
        store = new_store(tmp_path)
        report = await import_file(store, path)
        assert report.issues == [] and report.created == 2
        li = await store.elder(1)
        assert li is not None and li["birth_date"] == "1940-03-05" and li["phones"][0]["number"] == "13911112222"
        assert li["address"]["detail"] == "菊儿胡同21号" and li["living_alone"] is True
        zhou = await store.elder(2)
        assert zhou is not None and [p["number"] for p in zhou["phones"]] == ["13911114444", "01064012222"]
        await store.db.dispose()

    run(main())


def test_every_bad_cell_is_reported_and_nothing_is_half_imported(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "bad.csv", HEADER,
        f"王秀兰,女,1940-03-05,{ID_F},13911112222,,,,,,,",  # 2: good
        ",女,,,13911112223,,,,,,,",  # 3
        "甲,X,,,,,,,,,,",  # 4
        "乙,,1943-02-30,,,,,,,,,",  # 5
        f"丙,,,{ID_F[:17]}{'0' if ID_F[17] != '0' else '1'},,,,,,,,",  # 6
        '丁,,,,"13800138001; 12-ab",,,,,,,',  # 7
        "戊,,,,,张三:儿子,,,,,,",  # 8
        "己,,,,,,也许,,,,,",  # 9
        "庚,,,,,,,klingon,,,,",  # 10
        "辛,,,,,,,,39.9,,,",  # 11
        "壬,,,,,,,,,,a:b:c:d,",  # 12
        "癸,,,,,,,,,,,12349",  # 13
        f"王秀兰,女,,{ID_F},,,,,,,,",  # 14: the elder of row 2 again
        f"子,女,1950-01-01,{ID_M},,,,,,,,",  # 15
        "丑,X,someday,,,,,,,,,",  # 16: two problems
        "寅,,,,62345678,,,,,,,",  # 17: a local number, no area code configured
        f"卯,女,1940-03-05,{ID_F[:14]}****{ID_F[-4:]},,,,,,,,",  # 18: a masked export
        "辰,男,1946-07-01,,13911119999,,,,,,,",  # 19: good
    )
    expected = [
        "bad.csv:3:1: 姓名: a name is required",
        "bad.csv:4:2: 性别: 'X' is not F or M",
        "bad.csv:5:3: 出生日期: '1943-02-30' is not a date of the calendar",
        f"bad.csv:6:4: 身份证号: '{ID_F[:17]}{'0' if ID_F[17] != '0' else '1'}': wrong check digit (a digit was "
        "mistyped)",
        "bad.csv:7:5: 电话: '12-ab' is not a phone number (digits with an optional leading +)",
        "bad.csv:8:6: 联系人: '儿子' is not a phone number (digits with an optional leading +)",
        "bad.csv:9:7: 独居: '也许' is not yes or no",
        "bad.csv:10:8: 语言: 'klingon' is not a language the center speaks (cmn, yue)",
        "bad.csv:11:10: 经度: give both latitude and longitude, or neither",
        "bad.csv:12:11: 终端: 'a:b:c:d': write the terminal as type:serial:installed",
        "bad.csv:13:12: 终端按键: '12349': write a button as number=button",
        "bad.csv:14:4: 身份证号: the same elder as row 2",
        "bad.csv:15:3: 出生日期: 1950-01-01 differs from the ID number's 1943-05-01",
        "bad.csv:16:2: 性别: 'X' is not F or M",
        "bad.csv:16:3: 出生日期: 'someday' is not a date (write YYYY-MM-DD)",
        "bad.csv:17:5: 电话: '62345678' has no area code: write it as 010-62345678 (or set directory.area_code)",
        "bad.csv:18:4: 身份证号: the ID number is masked: export with --unmasked to import it again",
    ]

    async def main() -> None:
        store = new_store(tmp_path)
        report = await import_file(store, source)
        assert [str(i).replace(str(tmp_path) + "/", "") for i in report.issues] == expected
        assert report.issues[0].bilingual().splitlines()[1].endswith("bad.csv:3:1: 姓名：必须填写姓名")
        assert not report.written and await store.count() == 0
        dry = await import_file(store, source, partial=True, dry_run=True)
        assert not dry.written and await store.count() == 0
        partial = await import_file(store, source, partial=True)
        assert partial.written and (partial.created, len(partial.issues)) == (2, len(expected))
        assert [e["name"] for e in await store.search("王秀兰")] == ["王秀兰"] and await store.count() == 2
        await store.db.dispose()

    run(main())


def test_a_refused_write_leaves_nothing_behind(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "clash.csv", "姓名,电话,终端", "甲,13911112222,座机:SN-1", "乙,13911113333,座机:SN-2")

    async def main() -> None:
        store = new_store(tmp_path)
        await store.create_elder({"name": "丙", "number": "13911114444", "terminal": "座机:SN-2"})
        with pytest.raises(DirectoryInputError) as caught:
            await import_file(store, source)  # 乙's terminal is 丙's: the database refuses the whole import
        assert caught.value.field == "terminal"
        assert await store.count() == 1 and await store.search("13911112222") == []
        await store.db.dispose()

    run(main())


def test_header_problems(tmp_path: Path) -> None:
    async def main() -> None:
        store = new_store(tmp_path)
        unknown = await import_file(store, write_csv(tmp_path / "h.csv", "姓名,电话,颜色,name", "甲,13911112222,,"))
        assert [str(i).split(": ", 1)[1] for i in unknown.issues] == ["颜色: unknown column (see the column list)",
                                                                      "name: the same column as column 1"]
        nameless = await import_file(store, write_csv(tmp_path / "n.csv", "电话", "13911112222"))
        assert [i.en for i in nameless.issues] == ["no 姓名/name column"]
        other = await import_file(store, write_csv(tmp_path / "x.txt.json", "{}"))
        assert "cannot read the file" in other.issues[0].en and await store.count() == 0
        await store.db.dispose()

    run(main())
    assert [column_field(h) for h in ("姓名", "Name", "姓名/name", "电话（phones）", "是否独居", "颜色")] == [
        "name", "name", "name", "phones", "living_alone", None]


def test_export_imports_again_unchanged(tmp_path: Path) -> None:
    async def main() -> None:
        store = new_store(tmp_path)
        await prepare(store, seed=REPO / "config" / "demo_elders.yaml", generate=40)
        await store.create_elder({"name": "=HYPERLINK(1)", "number": "+852 9123 4567"})
        first, book, masked = tmp_path / "first.csv", tmp_path / "all.xlsx", tmp_path / "masked.csv"
        assert await export_file(store, first, unmasked=True) == 47
        assert await export_file(store, book, unmasked=True) == 47
        assert await export_file(store, masked) == 47
        rows = list(csv.reader(io.StringIO(first.read_text(encoding="utf-8-sig"))))
        assert rows[0][:5] == ["姓名", "称呼", "性别", "出生日期", "身份证号"]
        assert rows[1][:5] == ["王秀英", "王奶奶", "女", "1943-05-01", "110102194305011248"]
        assert rows[-1][0] == "'=HYPERLINK(1)" and rows[-1][9] == "mobile:+85291234567"
        assert "110102********1248" in masked.read_text(encoding="utf-8-sig")
        for source, name in ((first, "csv.db"), (book, "xlsx.db")):
            fresh = new_store(tmp_path, name)
            report = await import_file(fresh, source)
            assert report.issues == [] and report.created == 47
            again = tmp_path / f"again-{name}.csv"
            await export_file(fresh, again, unmasked=True)
            assert again.read_text(encoding="utf-8-sig") == first.read_text(encoding="utf-8-sig")
            assert (await fresh.elder(47))["name"] == "=HYPERLINK(1)"
            await fresh.db.dispose()
        refused = await import_file(new_store(tmp_path, "masked.db"), masked)
        assert refused.issues and all("masked" in i.en for i in refused.issues)
        await store.db.dispose()

    run(main())


def test_the_elders_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    source = write_csv(tmp_path / "elders.csv", HEADER, f"王秀兰,女,1940-03-05,{ID_F},13911112222,,,,,,,",
                       "甲,X,,,,,,,,,,")
    assert cli(["elders", "import", str(source), *data]) == 1
    out, err = capsys.readouterr()
    assert "elders.csv:3:2: 性别: 'X' is not F or M" in err and "性别：“X”应为 女(F) 或 男(M)" in err
    assert "nothing imported (1 problem(s) in 1 row(s)" in err
    assert cli(["elders", "count", *data]) == 0 and capsys.readouterr().out.strip() == "0"
    assert cli(["elders", "import", str(source), "--partial", *data]) == 1
    assert "1 elders added, 0 updated; 1 row(s) with problems not imported" in capsys.readouterr().out
    assert cli(["elders", "generate", "--count", "25", "--seed", "3", *data]) == 0
    assert "25 elders added" in capsys.readouterr().out
    exported = tmp_path / "out.xlsx"
    assert cli(["elders", "export", str(exported), *data]) == 0
    assert "26 elders exported" in capsys.readouterr().out
    assert cli(["elders", "export", str(tmp_path / "out.pdf"), *data]) == 1
    assert cli(["elders", "generate", "--count", "0", *data]) == 2
    capsys.readouterr()

    async def log() -> list[dict]:
        store = new_store(tmp_path / "data", "callcenter.db")
        rows = await store.access_log()
        await store.db.dispose()
        return rows

    rows = run(log())
    assert [(r["action"], r["username"], r["role"]) for r in rows] == [("export", getpass.getuser(), "cli"),
                                                                       ("import", getpass.getuser(), "cli")]
    assert rows[0]["detail"] == "out.xlsx: 26 elders, masked"


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, hidden = Terminal(), io.StringIO()
    for stream in (shown, hidden):
        bar = Progress("import", stream, interval=0)
        bar(500, 1000)
        bar(1000, 1000)
        bar.close()
    assert hidden.getvalue() == ""
    assert shown.getvalue().startswith("\rimport  50% [###############               ] 500/1000")
    assert shown.getvalue().endswith("1000/1000\n")
