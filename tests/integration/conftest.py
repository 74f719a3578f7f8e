"""Fixtures for integration tests against real SIP peers (see peers.py).

Each factory fixture builds peers whose files live under the test's ``tmp_path`` and stops
every peer it built when the test ends, passed or failed. A missing tool fails the test (the
project's setup installs it: ``tools/setup --test``); it never skips.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .engine import RunningEngine
from .peers import Baresip, PyVoipPhone, Sipp, stop_all


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: run tools/setup --test", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _stop_leftover_peers() -> Iterator[None]:
    yield
    stop_all()


@pytest.fixture
def sipp_factory(tmp_path: Path) -> Iterator[Callable[..., Sipp]]:
    """``sipp_factory(scenario, **options) -> Sipp`` (not started)."""
    made: list[Sipp] = []

    def make(scenario: str | Path = "uac", **options: Any) -> Sipp:
        _require(options.get("binary", "sipp"))
        options.setdefault("workdir", tmp_path / f"sipp-{len(made)}")
        peer = Sipp(scenario, **options)
        made.append(peer)
        return peer

    yield make
    for peer in reversed(made):
        if peer.proc is not None:
            peer.stop(grace=2.0)


@pytest.fixture
def baresip_factory(tmp_path: Path) -> Iterator[Callable[..., Baresip]]:
    """``baresip_factory(user, **options) -> Baresip`` (not started)."""
    made: list[Baresip] = []

    def make(user: str = "1001", **options: Any) -> Baresip:
        _require(options.get("binary", "baresip"))
        options.setdefault("workdir", tmp_path / f"baresip-{len(made)}")
        peer = Baresip(user, **options)
        made.append(peer)
        return peer

    yield make
    for peer in reversed(made):
        peer.stop()


@pytest.fixture
def pyvoip_factory() -> Iterator[Callable[..., PyVoipPhone]]:
    """``pyvoip_factory(server, port, username, password, **options) -> PyVoipPhone``."""
    made: list[PyVoipPhone] = []

    def make(*args: Any, **options: Any) -> PyVoipPhone:
        phone = PyVoipPhone(*args, **options)
        made.append(phone)
        return phone

    yield make
    for phone in reversed(made):
        phone.stop()


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Callable[..., RunningEngine]]:
    """``engine_factory(tweak=None) -> RunningEngine``: `callcenter serve` as a subprocess, started; ``tweak``
    edits the test configuration first. Every engine is stopped with SIGTERM at the end and must exit 0."""
    started: list[RunningEngine] = []

    def make(tweak: Callable[[dict[str, Any]], None] | None = None) -> RunningEngine:
        e = RunningEngine(tmp_path / f"engine{len(started)}", tweak=tweak)
        started.append(e)
        return e.start()

    yield make
    for e in started:
        code = e.stop()
        assert code == 0, f"engine exited with {code}:\n{e.log_tail()}"


@pytest.fixture
def engine(engine_factory: Callable[..., RunningEngine]) -> RunningEngine:
    return engine_factory()
