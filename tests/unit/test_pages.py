"""The desktop's pages (agents.pages): /desk and /wallboard render for the roles that may open them, carry their
words and configuration as JSON blocks that never run, load only module scripts from /static (CSP), and keep
the element ids the end-to-end tests and the scripts rely on.

aiohttp's TestServer/TestClient against the fake engine of tests/unit/test_web.py (no SIP, no browser)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from agents.i18n import DESK_STRINGS, LANGS, STRINGS
from agents.pages import PAUSE_REASONS
from agents.web import STATIC, TEMPLATES, create_app
from callcenter.config import Config
from tests.unit.test_web import FakeEngine, Now, logged_in, make_config

DESK_IDS = ("pop", "pop-name", "pop-button", "btn-answer", "btn-hangup", "btn-hold", "btn-mute", "dtmf-pad",
            "btn-conf-120", "record-form", "record-disposition", "record-notes", "btn-save-record", "history",
            "state-select", "device-select", "softphone-status", "call-timer", "btn-dial", "dial-number")
WALLBOARD_IDS = ("wallboard-queues", "wallboard-operators")
NASTY = '</script><script>alert(1)</script>"\'&'


def page_config() -> Config:
    data = make_config().model_dump(mode="json")
    data["queues"] = [{"name": "emergency", "display_name": "紧急呼叫"}, {"name": "hotline"}]
    data["operators"] = [
        {"name": "op1", "display_name": NASTY, "user": "op", "queues": {"emergency": 10}},
        {"name": "op2", "display_name": "话务员 2", "queues": {"hotline": 5}},
    ]
    data["webrtc"] = {"ice_servers": [{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "c"}]}
    return Config.model_validate(data)


def run(test: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        config = page_config()
        async with TestClient(TestServer(create_app(FakeEngine(config), config, now=Now()))) as client:
            await test(client)

    asyncio.run(main())


class Page(HTMLParser):
    """What the tests look at in a page: ids, script tags (attributes and text), inline handlers and styles."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.inline: list[str] = []  # on*= handlers and style= attributes (both refused by the CSP)
        self._script: dict[str, str | None] | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        self.inline += [f"{tag} {name}" for name, _ in attrs if name.startswith("on") or name == "style"]
        if tag == "script":
            self._script, self._text = values, []

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None

    def json_block(self, block_id: str) -> Any:
        (text,) = [text for attrs, text in self.scripts if attrs.get("id") == block_id]
        return json.loads(text)


async def page(client: TestClient, path: str, status: int = 200) -> Page:
    response = await client.get(path, allow_redirects=False)
    html = await response.text()
    assert response.status == status, (path, response.status, html[:300])
    return Page(html)


def check_scripts(parsed: Page) -> list[str]:
    """Every script is a JSON block (never run) or a module from /static that exists; returns the modules."""
    modules = []
    for attrs, text in parsed.scripts:
        if attrs.get("type") == "application/json":
            assert attrs.get("id") and "src" not in attrs
            json.loads(text)
            continue
        assert attrs.get("type") == "module" and not text.strip(), attrs
        src = str(attrs.get("src"))
        assert src.startswith("/static/"), src
        name = src.removeprefix("/static/").split("?", 1)[0]
        assert (STATIC / name).is_file(), name
        modules.append(name)
    assert parsed.inline == []
    return modules


# -- who may open the pages ---------------------------------------------------------------------------------


def test_desk_renders_for_operators_supervisors_and_admins_with_every_hook():
    async def test(client: TestClient) -> None:
        for user in ("op", "sup", "admin"):
            client.session.cookie_jar.clear()
            await logged_in(client, user)
            parsed = await page(client, "/desk")
            missing = set(DESK_IDS) - parsed.ids
            assert not missing, (user, missing)
            assert check_scripts(parsed) == ["desk.js"]
            assert {"desk-strings", "desk-config"} <= parsed.ids

    run(test)


def test_wallboard_renders_for_supervisors_and_admins():
    async def test(client: TestClient) -> None:
        for user in ("sup", "admin"):
            client.session.cookie_jar.clear()
            await logged_in(client, user)
            parsed = await page(client, "/wallboard")
            assert set(WALLBOARD_IDS) <= parsed.ids
            assert check_scripts(parsed) == ["wallboard.js"]
            config = parsed.json_block("desk-config")
            assert config["role"] == user.replace("sup", "supervisor")
            assert config["ice_servers"] == []  # no softphone here: the TURN credential stays on the desk

    run(test)


def test_other_roles_and_anonymous_users_are_refused():
    async def test(client: TestClient) -> None:
        for path in ("/desk", "/wallboard"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 303 and response.headers["Location"] == f"/login?next=%2F{path[1:]}"
        await logged_in(client, "aud")
        await page(client, "/desk", 403)
        await page(client, "/wallboard", 403)
        client.session.cookie_jar.clear()
        await logged_in(client, "op")
        await page(client, "/wallboard", 403)

    run(test)


def test_the_status_page_links_to_the_pages_each_role_may_open():
    async def test(client: TestClient) -> None:
        links = {}
        for user in ("op", "sup", "aud"):
            client.session.cookie_jar.clear()
            await logged_in(client, user)
            html = await (await client.get("/")).text()
            links[user] = set(re.findall(r'<a href="(/desk|/wallboard)"', html))
        assert links == {"op": {"/desk"}, "sup": {"/desk", "/wallboard"}, "aud": set()}

    run(test)


# -- what the scripts get -----------------------------------------------------------------------------------


def test_the_scripts_get_the_words_of_the_page_language_and_their_configuration():
    async def test(client: TestClient) -> None:
        await logged_in(client, "op")
        zh = await page(client, "/desk")
        strings = zh.json_block("desk-strings")
        assert strings["desk_title"] == "坐席工作台" and strings["unknown_caller"] == "未知来电"
        config = zh.json_block("desk-config")
        assert config["operator"] == "op1" and config["role"] == "operator" and config["lang"] == "zh"
        assert config["operator_label"] == NASTY  # survives the trip through the HTML intact ...
        assert config["pause_reasons"] == list(PAUSE_REASONS)
        assert config["queues"] == [{"name": "emergency", "label": "紧急呼叫"}, {"name": "hotline", "label": "hotline"}]
        assert [o["name"] for o in config["operators"]] == ["op1", "op2"]
        assert config["ice_servers"] == [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}]
        en = await page(client, "/desk?lang=en")
        assert en.json_block("desk-strings")["desk_title"] == "Operator desk"
        assert en.json_block("desk-config")["lang"] == "en"
        html = await (await client.get("/desk")).text()  # the session keeps the language
        assert 'lang="en"' in html and "Operator desk" in html
        assert "<script>alert(1)" not in html  # ... and never breaks out of its block

    run(test)


def test_a_login_without_an_operator_gets_no_operator():
    async def test(client: TestClient) -> None:
        await logged_in(client, "sup")
        config = (await page(client, "/desk")).json_block("desk-config")
        assert config["operator"] is None and config["user"] == "sup"

    run(test)


def test_every_word_the_pages_use_exists_in_both_languages():
    scripts = "\n".join(path.read_text() for path in STATIC.glob("*.js"))
    used = set(re.findall(r"\bt\('([a-z0-9_]+)'", scripts)) | set(re.findall(r"text: '([a-z0-9_]+)'", scripts))
    templates = "\n".join((TEMPLATES / name).read_text() for name in ("desk.html", "wallboard.html", "base.html"))
    used |= set(re.findall(r"\bt\.([a-z0-9_]+)", templates))
    assert len(used) > 100
    for lang in LANGS:
        assert not used - STRINGS[lang].keys(), (lang, sorted(used - STRINGS[lang].keys()))
    assert DESK_STRINGS["zh"].keys() == DESK_STRINGS["en"].keys()
    for lang in LANGS:  # no word of the desk is shadowed by an older word of the same name
        shadowed = [k for k, v in DESK_STRINGS[lang].items() if STRINGS[lang][k] != v]
        assert shadowed == [], (lang, shadowed)


def test_every_module_import_resolves_and_every_module_is_used():
    imports = re.compile(r"^import [^;]*? from '\./([\w.-]+)';", re.MULTILINE)
    seen: set[str] = set()
    todo = ["desk.js", "wallboard.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = STATIC / name
        assert path.is_file(), name
        todo += imports.findall(path.read_text())
    assert seen == {p.name for p in STATIC.glob("*.js")}


def test_the_hooks_are_documented_and_the_shortcuts_spare_the_browser_keys():
    desk = (STATIC / "desk.js").read_text()
    documented = desk.split("import ", 1)[0]
    for element_id in (*DESK_IDS, "btn-decline", "tab-history"):
        assert f"#{element_id}" in documented, element_id
    assert "[data-contact-number]" in documented
    assert "dataset: {contactNumber:" in (STATIC / "pop.js").read_text()  # rendered as data-contact-number
    assert "[data-dial-number]" in documented
    assert all("dataset: {dialNumber:" in (STATIC / name).read_text() for name in ("pop.js", "lists.js"))
    wallboard = (STATIC / "wallboard.js").read_text()
    assert all(f"#{element_id}" in wallboard for element_id in WALLBOARD_IDS)
    shortcuts = (STATIC / "shortcuts.js").read_text()
    keys = set(re.findall(r"'([^']+)'", "".join(re.findall(r"keys: \[([^\]]*)\]", shortcuts))))
    assert {"F2", "F3", "F4", "F6", "F7", "F8", "F9", "F10", "Ctrl+S", "?"} <= keys
    assert not keys & {"Ctrl+W", "Ctrl+T", "Ctrl+N", "Ctrl+R", "F5", "F11", "F12"}


def test_no_page_asks_for_anything_outside_the_center():
    for path in [*STATIC.glob("*.js"), *STATIC.glob("*.css"), TEMPLATES / "desk.html", TEMPLATES / "wallboard.html"]:
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name  # no CDN, no public STUN
        assert "innerHTML" not in text and "eval(" not in text, path.name


def test_every_stylesheet_of_the_pages_exists():
    async def test(client: TestClient) -> None:
        await logged_in(client, "admin")
        for path in ("/desk", "/wallboard"):
            html = await (await client.get(path)).text()
            sheets = re.findall(r'<link rel="stylesheet" href="/static/([\w.-]+)\?v=', html)
            assert "desk.css" in sheets and all((STATIC / name).is_file() for name in sheets), sheets
            assert ("wallboard.css" in sheets) == (path == "/wallboard")

    run(test)


def test_static_files_are_served_to_the_browser():
    async def test(client: TestClient) -> None:
        for name in ("desk.js", "softphone.js", "desk.css"):
            response = await client.get(f"/static/{name}")
            assert response.status == 200, name
            kind = "text/css" if name.endswith(".css") else "javascript"
            assert kind in response.headers["Content-Type"]

    run(test)


def test_csp_allows_no_inline_script_on_the_pages():
    async def test(client: TestClient) -> None:
        await logged_in(client, "admin")
        for path in ("/desk", "/wallboard"):
            response = await client.get(path)
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "unsafe-inline" not in csp
            assert "microphone=(self)" in response.headers["Permissions-Policy"]

    run(test)


def test_the_page_config_needs_no_webrtc_section():
    config = make_config()
    assert config.operators == []

    async def main() -> None:
        async with TestClient(TestServer(create_app(FakeEngine(config), config, now=Now()))) as client:
            await logged_in(client, "op")
            parsed = await page(client, "/desk")
            assert parsed.json_block("desk-config")["ice_servers"] == []
            assert parsed.json_block("desk-config")["operator"] is None

    asyncio.run(main())


def test_templates_exist_where_the_pages_expect_them():
    assert {p.name for p in Path(TEMPLATES).glob("*.html")} >= {"desk.html", "wallboard.html", "base.html"}
