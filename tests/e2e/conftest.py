"""End-to-end harness: the real engine, headless Chromium and real callers on 127.0.0.1.

- ``desk_engine``: `callcenter serve` as a subprocess (tests/integration/engine.py RunningEngine) with a configuration
  derived from config/callcenter.yaml: free SIP/HTTP/RTP ports, a temporary data directory, the shipped IVR flows,
  the carrier trunk on 127.0.0.2 pointing at ``engine.trunk_port`` (where a test puts a SIPp UAS standing in for
  120), WebRTC host candidates on 127.0.0.1, and the demo users with the test password.
- ``browsers``: ``browsers(name, engine) -> Browser``, headless Chromium through selenium 4 with fake media devices
  (the microphone plays 1.6 kHz tone bursts from a WAV file), console log capture (JavaScript errors fail the
  test), screenshots under test-artifacts/e2e/<test>/ at every step and on failure, RTCPeerConnections recorded by
  an instrumentation script so a test can read their getStats().
- ``callers``: ``callers(engine, number=..., did=...) -> RtpCaller`` (tests/e2e/caller.py), a caller on the carrier
  trunk written with the project's own SIP and RTP code: it sends a 600 Hz tone and keeps every frame it receives,
  so a test can prove what it heard.

Everything is stopped by the fixtures, by PID, passed or failed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from callcenter.config import Config, DirectoryConfig
from tests.e2e.caller import RtpCaller
from tests.integration.conftest import sipp_factory  # noqa: F401  (the same SIPp fixture as the integration tests)
from tests.integration.engine import OPERATOR_PASSWORD, REPO_ROOT, TRUNK_HOST, RunningEngine, _hash

PASSWORD = OPERATOR_PASSWORD  # every demo user logs in with it in these tests
ARTIFACTS_ROOT = REPO_ROOT / "test-artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30.0  # seconds an explicit wait may take on a loaded 2-core machine
BROWSER_TONE_HZ = 1600.0  # the fake microphone's tone (above every note of the hold music)
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,768",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required", "--no-first-run",
    "--disable-background-networking", "--disable-sync", "--disable-component-update", "--disable-default-apps",
    "--lang=zh-CN",
)
# Runs before any page script: remembers every RTCPeerConnection so a test can read getStats().
PEER_TRACKER_JS = """
(() => {
  const Original = window.RTCPeerConnection;
  if (!Original || Original.__e2e) return;
  window.__e2ePeers = [];
  class Tracked extends Original {
    constructor(...args) { super(...args); window.__e2ePeers.push(this); }
  }
  Tracked.__e2e = true;
  window.RTCPeerConnection = Tracked;
})();
"""
PEER_STATS_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const out = [];
  for (const pc of (window.__e2ePeers || [])) {
    if (pc.connectionState === 'closed') continue;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if ((r.type === 'inbound-rtp' || r.type === 'outbound-rtp') && r.kind === 'audio') {
        out.push({type: r.type, state: pc.connectionState, packets: r.packetsReceived ?? r.packetsSent ?? 0,
                  energy: r.totalAudioEnergy ?? null, level: r.audioLevel ?? null});
      }
    });
  }
  return out;
})().then(done, (e) => done([{error: String(e)}]));
"""
# The pages redraw lists (wallboard rows, the pop) whenever data arrives: a wait looks again.
REDRAWN = (NoSuchElementException, StaleElementReferenceException)
# Console messages that are not page errors: the browser's own favicon request.
IGNORED_CONSOLE = (re.compile(r"favicon\.ico"),)


# -- test outcome for fixtures (screenshots on failure) ------------------------------------------------------
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"e2e_{report.when}", report)
    return report


def _failed(node: pytest.Item) -> bool:
    return any(getattr(getattr(node, f"e2e_{when}", None), "failed", False) for when in ("setup", "call"))


# -- artifacts -----------------------------------------------------------------------------------------------
class Artifacts:
    """test-artifacts/e2e/<test>/: numbered screenshots, console logs, the engine log, measured figures."""

    def __init__(self, test_name: str) -> None:
        self.dir = ARTIFACTS_ROOT / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.count = 0
        self.figures: dict[str, Any] = {}

    def figure(self, name: str, value: Any) -> None:
        """Keep a measured figure (seconds, frame counts) in figures.json next to the screenshots."""
        self.figures[name] = round(value, 3) if isinstance(value, float) else value
        (self.dir / "figures.json").write_text(json.dumps(self.figures, indent=1, ensure_ascii=False) + "\n")

    def path(self, step: str, suffix: str = ".png") -> Path:
        self.count += 1
        return self.dir / f"{self.count:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', step)}{suffix}"


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Artifacts:
    return Artifacts(request.node.name)


# -- the engine ----------------------------------------------------------------------------------------------
def demo_elder(index: int = 0) -> tuple[str, str]:
    """(name, a phone number) of an elder of the shipped demo data (config/demo_elders.yaml)."""
    data = yaml.safe_load((REPO_ROOT / "config" / "demo_elders.yaml").read_text(encoding="utf-8"))
    elder = data["elders"][index]
    numbers = [str(n) for n in elder.get("numbers", [])]
    numbers += [str(p["number"] if isinstance(p, dict) else p) for p in elder.get("phones", [])]
    mobiles = [re.sub(r"\D", "", n) for n in numbers if re.fullmatch(r"1\d{10}", re.sub(r"\D", "", n))]
    return str(elder["name"]), (mobiles or [re.sub(r"\D", "", numbers[0])])[0]


def _absolute(value: Any) -> Any:
    if isinstance(value, str) and value and not Path(value).is_absolute() and (REPO_ROOT / value).exists():
        return str(REPO_ROOT / value)
    return value


def desk_config(overrides: Callable[[dict[str, Any]], None] | None = None) -> Callable[[dict[str, Any]], None]:
    """A RunningEngine tweak: config/callcenter.yaml with the test engine's ports, directories and users."""

    def tweak(config: dict[str, Any]) -> None:
        base = dict(config)  # tests/integration/engine.py base_config: free ports, temp data dir
        demo = yaml.safe_load((REPO_ROOT / "config" / "callcenter.yaml").read_text(encoding="utf-8"))
        config.clear()
        config.update(demo)
        for section in ("engine", "http", "recordings", "media", "logging"):
            config[section] = {**demo.get(section, {}), **base[section]}
        config["engine"]["max_call_duration"] = 300
        config["sip"] = {**demo["sip"], **base["sip"]}
        flows_dir = Path(base["flows"]["directory"])
        flows_dir.mkdir(parents=True, exist_ok=True)
        for flow in (REPO_ROOT / "ivr_flows").glob("*.yaml"):
            shutil.copy(flow, flows_dir / flow.name)
        config["flows"] = {**demo.get("flows", {}), **base["flows"]}
        trunk = base["trunks"][0]
        config["trunks"] = [{**demo["trunks"][0], "host": trunk["host"], "port": trunk["port"], "register": False}]
        config["users"] = [{**user, "password_hash": _hash(PASSWORD)} for user in demo["users"]]
        config["directory"] = {k: _absolute(v) for k, v in demo.get("directory", {}).items()}
        if "generate" in DirectoryConfig.model_fields:  # the demo elders among generated ones, as in the demo
            config["directory"]["generate"] = 500
        config["acd"] = {**demo.get("acd", {}), "ring_timeout": 60}  # a loaded machine may be slow to click
        if "webrtc" in Config.model_fields:
            config["webrtc"] = {**(demo.get("webrtc") or {}), "host_addresses": ["127.0.0.1"]}
        if overrides is not None:
            overrides(config)

    return tweak


def until(condition: Callable[[], Any], message: str, timeout: float = WAIT) -> Any:
    """Poll a condition outside the browser (the engine's API, a peer's ears) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (after {timeout:g} s)")
        time.sleep(0.1)


def _http_ready(base: str, timeout: float) -> None:
    wait = WebDriverWait(None, timeout, poll_frequency=0.2, ignored_exceptions=(OSError,))

    def ready(_: Any) -> bool:
        with urllib.request.urlopen(base + "/login", timeout=5) as response:
            return bool(response.status == 200)

    wait.until(ready, f"{base}/login does not answer")


@pytest.fixture
def desk_engine_factory(tmp_path: Path, artifacts: Artifacts) -> Iterator[Callable[..., RunningEngine]]:
    """``desk_engine_factory(overrides=None) -> RunningEngine`` started, flows live, /login answering."""
    started: list[RunningEngine] = []

    def make(overrides: Callable[[dict[str, Any]], None] | None = None) -> RunningEngine:
        engine = RunningEngine(tmp_path / f"engine{len(started)}", tweak=desk_config(overrides))
        started.append(engine)
        engine.start(timeout=60)
        engine.wait_for_event("ivr.started", timeout=60)
        _http_ready(engine.http_base, 30)
        return engine

    yield make
    codes = []
    for n, engine in enumerate(started):
        codes.append(engine.stop())
        with engine._cond:
            (artifacts.dir / f"engine{n}.log").write_text("".join(engine.raw_lines), encoding="utf-8")
    assert codes == [0] * len(codes), f"an engine exited with {codes}: see {artifacts.dir}/engine*.log"


@pytest.fixture
def desk_engine(desk_engine_factory: Callable[..., RunningEngine]) -> RunningEngine:
    return desk_engine_factory()


# -- callers -------------------------------------------------------------------------------------------------
@pytest.fixture
def callers() -> Iterator[Callable[..., RtpCaller]]:
    """``callers(engine, number=..., did=...) -> RtpCaller`` (not dialled yet); all closed at the end."""
    made: list[RtpCaller] = []

    def make(engine: RunningEngine, *, number: str, did: str, **options: Any) -> RtpCaller:
        caller = RtpCaller(engine.sip_port, number=number, did=did, host=TRUNK_HOST, **options)
        made.append(caller)
        return caller

    yield make
    for caller in made:
        caller.close()


# -- the browser ---------------------------------------------------------------------------------------------
def fake_microphone_wav(path: Path, hz: float = BROWSER_TONE_HZ, seconds: float = 2.0) -> Path:
    """A 48 kHz mono WAV for --use-file-for-fake-audio-capture (Chromium loops it): bursts of a tone, 300 ms on,
    200 ms off, like syllables. A steady tone would not do: the page asks for noise suppression, which takes a
    steady tone for noise and attenuates it ~15 dB within a second (measured); bursts pass untouched."""
    rate = 48000
    t = np.arange(int(rate * seconds)) / rate
    gate = np.convolve(((t % 0.5) < 0.3).astype(np.float64), np.ones(480) / 480, mode="same")  # 10 ms ramps
    pcm = (0.3 * 32767 * np.sin(2 * math.pi * hz * t) * gate).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


class Browser:
    """One headless Chromium session with explicit waits, screenshots per step and console capture."""

    def __init__(self, name: str, base_url: str, artifacts: Artifacts, microphone: Path) -> None:
        self.name = name
        self.base_url = base_url
        self.artifacts = artifacts
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--use-file-for-fake-audio-capture={microphone}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(CHROMEDRIVER, log_output=str(artifacts.dir / f"chromedriver-{name}.log"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(WAIT)
        self.driver.set_script_timeout(WAIT)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PEER_TRACKER_JS})
        self.console: list[dict[str, Any]] = []

    # navigation ----------------------------------------------------------------------------------------------
    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def login(self, username: str, password: str = PASSWORD, next_page: str = "/desk") -> None:
        self.open(f"/login?next={next_page}")
        self.type("#username", username)
        self.type("#password", password)
        self.find("#password").submit()
        self.wait_for(lambda d: "/login" not in d.current_url, f"{username} stays on the login page")

    def reload(self) -> None:
        self.driver.refresh()

    # waiting -------------------------------------------------------------------------------------------------
    def wait_for(self, condition: Callable[[Any], Any], message: str, timeout: float = WAIT) -> Any:
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2, ignored_exceptions=REDRAWN).until(condition)
        except TimeoutException:
            self.shot(f"timeout-{message[:40]}")
            raise AssertionError(f"[{self.name}] {message} (after {timeout:g} s)") from None

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def visible(self, css: str, timeout: float = WAIT) -> WebElement:
        return self.wait_for(ec.visibility_of_element_located((By.CSS_SELECTOR, css)), f"{css} is not visible",
                             timeout)

    def gone(self, css: str, timeout: float = WAIT) -> None:
        self.wait_for(ec.invisibility_of_element_located((By.CSS_SELECTOR, css)), f"{css} is still visible",
                      timeout)

    def text_in(self, css: str, text: str, timeout: float = WAIT) -> WebElement:
        def has(driver: Any) -> WebElement | bool:
            for element in driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed() and text in element.text:
                    return element
            return False

        return self.wait_for(has, f"{css} does not show {text!r}", timeout)

    # acting --------------------------------------------------------------------------------------------------
    def click(self, css: str, timeout: float = WAIT) -> None:
        """Click once the element is there, shown and enabled (again if the page redrew it meanwhile)."""

        def clicked(driver: Any) -> bool:
            element = ec.element_to_be_clickable((By.CSS_SELECTOR, css))(driver)
            if not element:
                return False
            element.click()
            return True

        self.wait_for(clicked, f"{css} is not clickable", timeout)

    def type(self, css: str, text: str) -> None:
        element = self.visible(css)
        element.clear()
        element.send_keys(text)

    def select(self, css: str, value: str) -> None:
        """Choose the option with this value; waits until the page has filled the options in."""
        element = self.wait_for(
            lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_enabled()
                            and e.find_elements(By.CSS_SELECTOR, f"option[value='{value}']")), False),
            f"{css} has no enabled option {value!r}")
        Select(element).select_by_value(value)

    def select_first(self, css: str) -> str:
        """Choose the first option with a value (a placeholder "choose…" has none); returns it."""
        element = self.wait_for(
            lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_enabled()
                            and e.find_elements(By.CSS_SELECTOR, "option:not([value=''])")), False),
            f"{css} has no option to choose")
        value = str(element.find_element(By.CSS_SELECTOR, "option:not([value=''])").get_attribute("value"))
        Select(element).select_by_value(value)
        return value

    def shot(self, step: str) -> Path:
        path = self.artifacts.path(f"{step}-{self.name}")
        self.driver.save_screenshot(str(path))
        return path

    # what the page does ------------------------------------------------------------------------------------
    def drain_console(self) -> list[dict[str, Any]]:
        entries = self.driver.get_log("browser")
        self.console.extend(entries)
        return entries

    def errors(self) -> list[str]:
        """JavaScript errors and console.error lines so far."""
        self.drain_console()
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"
                and e.get("source") in ("javascript", "console-api")
                and not any(p.search(e["message"]) for p in IGNORED_CONSOLE)]

    def peer_stats(self) -> list[dict[str, Any]]:
        """Audio RTP stats of the page's open RTCPeerConnections (inbound and outbound)."""
        return list(self.driver.execute_async_script(PEER_STATS_JS))

    def close(self, failed: bool) -> None:
        try:
            if failed:
                self.shot("failure")
            self.drain_console()
        finally:
            lines = [f"{e.get('level')} {e.get('source')} {e.get('message')}" for e in self.console]
            (self.artifacts.dir / f"console-{self.name}.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
            self.driver.quit()


@pytest.fixture
def browsers(request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path: Path) -> Iterator[Callable[..., Browser]]:
    """``browsers(name, engine) -> Browser``; at the end: failure screenshots, console logs, quit, and the test
    fails when a page logged a JavaScript error."""
    made: list[Browser] = []
    microphone = fake_microphone_wav(tmp_path / "microphone.wav")

    def make(name: str, engine: RunningEngine) -> Browser:
        browser = Browser(name, engine.http_base, artifacts, microphone)
        made.append(browser)
        return browser

    yield make
    failed = _failed(request.node)
    errors: list[str] = []
    for browser in made:
        try:
            errors += [f"[{browser.name}] {message}" for message in browser.errors()]
        finally:
            browser.close(failed)
    if not failed:
        assert not errors, "JavaScript errors in the pages:\n" + "\n".join(errors)


# -- audio analysis ------------------------------------------------------------------------------------------
def tone_frames(pcm: np.ndarray, hz: float, *, rate: int = 8000, min_rms: float = 200.0,
                min_share: float = 0.5) -> int:
    """How many 20 ms frames of ``pcm`` are a tone of ``hz``: loud enough, and most of their energy within
    ±75 Hz of it."""
    size = rate // 50
    count = 0
    window = np.hanning(size)
    freqs = np.fft.rfftfreq(size, 1 / rate)
    band = np.abs(freqs - hz) <= 75
    for start in range(0, len(pcm) - size + 1, size):
        frame = pcm[start:start + size].astype(np.float64)
        if math.sqrt(float(np.mean(frame * frame))) < min_rms:
            continue
        power = np.abs(np.fft.rfft(frame * window)) ** 2
        total = float(power[1:].sum())
        if total > 0 and float(power[band].sum()) / total >= min_share:
            count += 1
    return count


def read_recording(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) of a stereo 16-bit recording: the caller, and what the caller heard."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2, f"{path} is not 16-bit stereo"
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return data[0::2], data[1::2]
