"""Runs the real engine (`callcenter serve`) as a subprocess for integration tests.

The engine gets its own data directory, a configuration written for the test, free ports on
127.0.0.1, and JSON logs that the test can read (``wait_for_event``). ``stop()`` sends SIGTERM to
the PID we started and waits: the graceful shutdown path is exercised by every test.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.integration.peers import free_port, free_port_range, release_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
TRUNK_HOST = "127.0.0.2"  # the "carrier" lives on a second loopback address: its calls need no login
OPERATOR_PASSWORD = "operator-test-pw"
RTP_PORTS = 160  # 80 simultaneous calls per test engine
TTS_CACHE = Path(tempfile.gettempdir()) / "callcenter-tests-tts"


@functools.cache
def _hash(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def base_config(data_dir: Path, sip_port: int, http_port: int, rtp_low: int, trunk_port: int) -> dict[str, Any]:
    return {
        "engine": {"data_dir": str(data_dir), "max_call_duration": 60, "shutdown_grace": 3},
        "sip": {
            "listen": [f"udp:127.0.0.1:{sip_port}", f"tcp:127.0.0.1:{sip_port}"],
            "domain": "test.callcenter",
            "flood": {"rate": 5000, "burst": 10000, "ban_seconds": 10},
        },
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "recordings": {"root": str(data_dir / "recordings"), "record_calls": True},
        "media": {"address": "127.0.0.1", "rtp_port_min": rtp_low, "rtp_port_max": rtp_low + RTP_PORTS},
        "logging": {"level": "info", "format": "json"},
        # No flows unless a test puts some in data_dir/../flows; rendered prompts are shared by all tests.
        "flows": {"directory": str(data_dir.parent / "flows"), "watch_interval": 0.2, "tts_cache": str(TTS_CACHE)},
        "directory": {"file": None},
        "accounts": [
            {"username": "1001", "password": "secret1001", "kind": "phone", "display_name": "Operator 1"},
            {"username": "1002", "password": "secret1002", "kind": "phone"},
            {"username": "t0001", "password": "secret-t0001", "kind": "terminal", "max_bindings": 1},
        ],
        "trunks": [
            {
                "name": "carrier",
                "host": TRUNK_HOST,
                "port": trunk_port,
                "transport": "udp",
                "channels": 60,
                "emergency_reserve": 2,
                "dids": ["1000", "12349", "9196", "2000"],
            }
        ],
        "users": [
            {"username": "operator1", "password_hash": _hash(OPERATOR_PASSWORD), "role": "operator"},
            {"username": "auditor", "password_hash": _hash(OPERATOR_PASSWORD), "role": "auditor"},
        ],
        "routing": {
            "numbers": [
                {"number": "1000", "name": "Hotline", "action": "hold"},
                {"number": "12349", "name": "Emergency button", "action": "hold", "emergency": True},
                {"number": "9196", "name": "Echo test", "action": "echo"},
                {"number": "2000", "name": "Ringing line", "action": "hold", "answer_after": 5},
                {"number": "3000", "name": "Short line", "action": "hold", "max_duration": 1},
                {"number": "4000", "name": "Operator 1001", "action": "connect", "target": "1001",
                 "ring_timeout": 10},
            ]
        },
    }


class RunningEngine:
    def __init__(self, tmp: Path, *, tweak: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port("both")
        self.http_port = free_port("tcp")
        self.trunk_port = free_port("udp", host=TRUNK_HOST)
        self.rtp_low = free_port_range(RTP_PORTS, "udp")
        self.config = base_config(tmp / "data", self.sip_port, self.http_port, self.rtp_low, self.trunk_port)
        self.flows_dir = tmp / "flows"
        self.flows_dir.mkdir(exist_ok=True)
        if tweak is not None:
            tweak(self.config)
        self.config_path = tmp / "callcenter.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, allow_unicode=True))
        self.events: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self.returncode: int | None = None

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def api(self, method: str, path: str, body: Any = None, *, user: str = "operator1") -> tuple[int, Any]:
        """Call the engine's JSON API with HTTP Basic auth (as scripts do); returns (status, json)."""
        import base64
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.http_base + path, data=data, method=method)
        token = base64.b64encode(f"{user}:{OPERATOR_PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def start(self, timeout: float = 20.0) -> RunningEngine:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callcenter.cli", "serve", "--config", str(self.config_path)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for_event("engine.started", timeout=timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.raw_lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def find(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e for e in self.events if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for_event(self, name: str, timeout: float = 10.0, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    e
                    for e in self.events
                    if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
                ]
                if len(found) >= count:
                    return found
                if self.proc is not None and self.proc.poll() is not None and not self._pending_output():
                    raise AssertionError(f"engine exited ({self.proc.returncode}) before {name}:\n{self.log_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {count}× {name} {fields}:\n{self.log_tail()}")
                self._cond.wait(min(remaining, 0.2))

    def _pending_output(self) -> bool:
        return False

    def log_tail(self, lines: int = 40) -> str:
        with self._cond:
            return "".join(self.raw_lines[-lines:])

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        release_ports(self.rtp_low, RTP_PORTS)
        return self.returncode
