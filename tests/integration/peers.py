"""Real SIP peers for integration tests: SIPp, baresip and pyVoIP, all on 127.0.0.1.

Every wrapper starts its peer as a child process (or threads, for pyVoIP), keeps its files in a
private work directory, and has a ``stop()`` that ends what it started (by PID, never by name)
and waits for it. The fixtures in ``conftest.py`` call ``stop()`` in finalisers, so a failing
test still leaves no process behind.

The binaries come from Debian packages that ``tools/setup --test`` installs: ``sip-tester``
(``sipp``) and ``baresip-core`` (``baresip``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Literal

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
SIPP_SCENARIO_DIR = REPO_ROOT / "tools" / "sipp"

PortKind = Literal["udp", "tcp", "both"]

# ---------------------------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------------------------

_live: set[Any] = set()  # peers started and not stopped yet (see stop_all)
_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _can_bind(port: int, kind: PortKind, host: str = LOOPBACK) -> bool:
    kinds = ("udp", "tcp") if kind == "both" else (kind,)
    for k in kinds:
        sock_type = socket.SOCK_DGRAM if k == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, sock_type) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(kind: PortKind = "udp", *, host: str = LOOPBACK) -> int:
    """A port on 127.0.0.1 that is free now for ``kind`` ("udp", "tcp" or "both").

    The kernel picks it (bind to port 0); a port already handed out by this process is never
    handed out again, so two peers of one test cannot get the same one.
    """
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with _ports_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, sock_type) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port in _handed_out or not _can_bind(port, kind, host):
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free {kind} port on {host}")


def free_port_range(count: int, kind: PortKind = "udp", *, host: str = LOOPBACK) -> int:
    """First port of ``count`` consecutive ports free for ``kind`` (an RTP range, a SIP port
    whose neighbour must be free too). Chosen below the kernel's ephemeral range (32768+), so
    outgoing sockets of other programs do not take them in the meantime."""
    with _ports_lock:
        for _ in range(500):
            base = random.randrange(20000, 32000 - count, 2)
            ports = range(base, base + count)
            if any(p in _handed_out for p in ports):
                continue
            if all(_can_bind(p, kind, host) for p in ports):
                _handed_out.update(ports)
                return base
    raise RuntimeError(f"no {count} consecutive free {kind} ports on {host}")


def release_ports(base: int, count: int = 1) -> None:
    """Give ports back (their owner has stopped) so long test runs do not run out of ranges."""
    with _ports_lock:
        _handed_out.difference_update(range(base, base + count))


def _port_taken(port: int, kind: Literal["udp", "tcp"], host: str = LOOPBACK) -> bool:
    return not _can_bind(port, kind, host)


def require_binary(name: str) -> str:
    """Absolute path of ``name`` or a RuntimeError telling how to install it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name!r} is not installed: run tools/setup --test")
    return path


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _end_process(
    proc: subprocess.Popen[bytes],
    first: signal.Signals,
    grace: float,
    second: signal.Signals = signal.SIGTERM,
    second_grace: float = 2.0,
) -> int:
    """Send ``first`` to our child, escalate to ``second`` then SIGKILL, and reap it."""
    for sig, wait in ((first, grace), (second, second_grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


# ---------------------------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------------------------

SIPP_BUILTIN_SCENARIOS = frozenset(
    {"uac", "uas", "regexp", "branchc", "branchs", "uac_pcap", "3pcc-A", "3pcc-B", "3pcc-C-A", "3pcc-C-B"}
)

# sipp's documented exit codes.
SIPP_EXIT_CODES: Mapping[int, str] = {
    0: "all calls were successful",
    1: "at least one call failed",
    97: "exit on internal command (calls may have been processed; e.g. -timeout reached)",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


@dataclass
class SippResult:
    """What a finished sipp run reports.

    ``successful``/``failed``/``retransmissions`` are the cumulative counters of the last row of
    the ``-trace_stat`` CSV (columns ``SuccessfulCall(C)``, ``FailedCall(C)``,
    ``Retransmissions(C)``); ``stats`` holds that whole row by column name.
    """

    returncode: int
    successful: int
    failed: int
    retransmissions: int
    stats: dict[str, str] = field(default_factory=dict)
    errors: str = ""
    workdir: Path | None = None
    screen: str = ""

    @property
    def meaning(self) -> str:
        return SIPP_EXIT_CODES.get(self.returncode, f"killed or unknown exit code {self.returncode}")

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0

    def stat(self, column: str) -> int:
        """An integer column of the last stats row, e.g. ``stat("FailedTimeoutOnRecv(C)")``."""
        return int(self.stats.get(column, "0") or 0)

    def __str__(self) -> str:
        text = (
            f"sipp exit {self.returncode} ({self.meaning}): {self.successful} successful, "
            f"{self.failed} failed, {self.retransmissions} retransmissions"
        )
        if self.errors:
            text += f"\n--- errors ---\n{self.errors[-3000:]}"
        if self.returncode not in (0, 1) and self.screen:
            text += f"\n--- screen/log ---\n{self.screen[-3000:]}"
        return text


def parse_sipp_stats(path: Path) -> dict[str, str]:
    """Last row of a sipp ``-trace_stat`` CSV (``;``-separated, header first) by column name."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    row = lines[-1].rstrip(";").split(";")
    return dict(zip(header, row, strict=False))


class Sipp:
    """One sipp process (``sipp ... -i 127.0.0.1 -mi 127.0.0.1 -ci 127.0.0.1 -nostdin``; another
    loopback address with ``local_ip``, e.g. 127.0.0.2 for a "carrier").

    ``scenario`` is a built-in name (``"uac"``, ``"uas"`` → ``-sn``) or an XML file (``-sf``); a
    bare ``"uac_cancel.xml"`` that is not a path to an existing file is looked up in
    ``tools/sipp/``. Statistics always go to ``<workdir>/stat.csv`` (``-trace_stat -fd 1``) and
    errors to ``<workdir>/errors.log`` (``-trace_err``); ``trace_msg``/``trace_screen`` add the
    message log and the final screen. Times are in seconds (``timeout``, ``recv_timeout``) or
    milliseconds where sipp counts in them (``duration_ms`` = ``-d``); sipp rounds ``timeout`` up
    to whole seconds and lets calls in progress finish after it, so give ``recv_timeout`` too
    when the peer may stay silent. Exit code 0 only says no call failed: check ``successful``.

    Use ``run(timeout)`` for a bounded run in the foreground, or ``start()``, then ``stop()``
    for a peer in the background (a UAS the engine calls, a load generator).
    """

    def __init__(
        self,
        scenario: str | os.PathLike[str] = "uac",
        *,
        target: str | None = None,
        local_ip: str = LOOPBACK,
        local_port: int | None = None,
        transport: str = "u1",
        service: str | None = None,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        max_calls: int | None = None,
        limit: int | None = None,
        duration_ms: int | None = None,
        lost: float | None = None,
        auth_user: str | None = None,
        auth_pass: str | None = None,
        timeout: float | None = None,
        recv_timeout: float | None = None,
        media_port: int | None = None,
        keys: Mapping[str, str] | None = None,
        trace_msg: bool = False,
        trace_screen: bool = False,
        extra_args: Sequence[str] = (),
        workdir: Path | None = None,
        binary: str = "sipp",
    ) -> None:
        self.scenario = scenario
        self.target = target
        self.local_ip = local_ip
        self.transport = transport
        tcp = transport.startswith("t")
        self.local_port = local_port if local_port is not None else free_port("tcp" if tcp else "udp", host=local_ip)
        self.service = service
        self.rate = rate
        self.rate_period_ms = rate_period_ms
        self.max_calls = max_calls
        self.limit = limit
        self.duration_ms = duration_ms
        self.lost = lost
        self.auth_user = auth_user
        self.auth_pass = auth_pass
        self.timeout = timeout
        self.recv_timeout = recv_timeout
        self.media_port = media_port
        self.keys = dict(keys or {})
        self.trace_msg = trace_msg
        self.trace_screen = trace_screen
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="sipp-"))
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._result: SippResult | None = None

    # files -----------------------------------------------------------------------------------
    @property
    def stat_file(self) -> Path:
        return self.workdir / "stat.csv"

    @property
    def error_file(self) -> Path:
        return self.workdir / "errors.log"

    @property
    def message_file(self) -> Path:
        return self.workdir / "messages.log"

    @property
    def screen_file(self) -> Path:
        return self.workdir / "screen.log"

    @property
    def log_file(self) -> Path:
        """sipp's stdout/stderr (the periodic screen when there is no terminal)."""
        return self.workdir / "sipp.out"

    def _scenario_args(self) -> list[str]:
        sc = self.scenario
        if isinstance(sc, str) and sc in SIPP_BUILTIN_SCENARIOS:
            return ["-sn", sc]
        path = Path(sc)
        if not path.is_file() and not path.is_absolute() and (SIPP_SCENARIO_DIR / path).is_file():
            path = SIPP_SCENARIO_DIR / path
        if not path.is_file():
            raise FileNotFoundError(f"sipp scenario not found: {sc}")
        return ["-sf", str(path.resolve())]

    def command(self) -> list[str]:
        """The full sipp command line (for logs and failure messages)."""
        args = [self.binary, *self._scenario_args()]
        ip = self.local_ip
        args += ["-i", ip, "-mi", ip, "-ci", ip, "-p", str(self.local_port)]
        args += ["-t", self.transport, "-nostdin"]
        if self.service is not None:
            args += ["-s", self.service]
        if self.rate is not None:
            args += ["-r", f"{self.rate:g}"]
        if self.rate_period_ms is not None:
            args += ["-rp", f"{self.rate_period_ms}ms"]
        if self.max_calls is not None:
            args += ["-m", str(self.max_calls)]
        if self.limit is not None:
            args += ["-l", str(self.limit)]
        if self.duration_ms is not None:
            args += ["-d", f"{self.duration_ms}ms"]
        if self.lost is not None:
            args += ["-lost", f"{self.lost:g}"]
        if self.auth_user is not None:
            args += ["-au", self.auth_user]
        if self.auth_pass is not None:
            args += ["-ap", self.auth_pass]
        if self.timeout is not None:
            # sipp's global timeout counts whole seconds; when it expires sipp places no new
            # calls and exits once the calls in progress end (bound those with recv_timeout).
            args += ["-timeout", f"{max(1, math.ceil(self.timeout))}s"]
        if self.recv_timeout is not None:
            args += ["-recv_timeout", f"{round(self.recv_timeout * 1000)}ms"]
        if self.media_port is not None:
            args += ["-mp", str(self.media_port)]
        for key, value in self.keys.items():
            args += ["-key", key, value]
        args += ["-trace_stat", "-stf", str(self.stat_file), "-fd", "1"]
        args += ["-trace_err", "-error_file", str(self.error_file)]
        if self.trace_msg:
            args += ["-trace_msg", "-message_file", str(self.message_file)]
        if self.trace_screen:
            args += ["-trace_screen", "-screen_file", str(self.screen_file)]
        args += self.extra_args
        if self.target is not None:
            args.append(self.target)
        return args

    # life cycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout: float = 5.0) -> Sipp:
        """Start sipp in the background; without a target (server mode) wait until it listens."""
        if self.proc is not None:
            raise RuntimeError("sipp already started")
        cmd = self.command()
        require_binary(self.binary)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_file, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        _live.add(self)
        if self.target is None:
            try:
                self.wait_ready(ready_timeout)
            except BaseException:
                self.stop(grace=1.0)
                raise
        return self

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until sipp holds its local SIP port."""
        kind: Literal["udp", "tcp"] = "tcp" if self.transport.startswith("t") else "udp"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipp exited early ({self.proc.returncode}):\n{self._diagnostics()}")
            if _port_taken(self.local_port, kind, self.local_ip):
                return
            time.sleep(0.02)
        raise TimeoutError(f"sipp did not bind {kind} {self.local_ip}:{self.local_port}\n{self._diagnostics()}")

    def run(self, timeout: float = 30.0) -> SippResult:
        """Run to completion (starting it if needed). On ``timeout`` stop it and raise."""
        if self.proc is None:
            self.start()
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            result = self.stop()
            raise TimeoutError(f"sipp did not finish within {timeout} s; stopped it.\n{result}") from None
        return self._finish()

    def stop(self, grace: float = 5.0) -> SippResult:
        """SIGUSR1 (sipp stops placing calls and exits when the calls in progress are done), then
        SIGTERM and SIGKILL if it takes longer than ``grace``; wait for it and return the result."""
        if self._result is not None:
            return self._result
        if self.proc is None:
            raise RuntimeError("sipp was never started")
        _end_process(self.proc, signal.SIGUSR1, grace)
        return self._finish()

    def _finish(self) -> SippResult:
        if self._result is not None:
            return self._result
        assert self.proc is not None
        code = self.proc.wait()
        if self._log is not None:
            self._log.close()
        _live.discard(self)
        stats = parse_sipp_stats(self.stat_file)

        def num(column: str) -> int:
            try:
                return int(stats.get(column, "0") or 0)
            except ValueError:
                return 0

        self._result = SippResult(
            returncode=code,
            successful=num("SuccessfulCall(C)"),
            failed=num("FailedCall(C)"),
            retransmissions=num("Retransmissions(C)"),
            stats=stats,
            errors=_tail(self.error_file, 20000),
            workdir=self.workdir,
            screen=_tail(self.screen_file) or _tail(self.log_file),
        )
        return self._result

    def _diagnostics(self) -> str:
        return f"command: {' '.join(self.command())}\n{_tail(self.log_file)}\n{_tail(self.error_file)}"

    def cleanup(self) -> None:
        """Stop if running and remove the work directory if we made it."""
        if self.proc is not None:
            self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Sipp:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()


# ---------------------------------------------------------------------------------------------
# baresip
# ---------------------------------------------------------------------------------------------

BARESIP_MODULE_DIRS = (
    "/usr/lib/baresip/modules",  # Debian baresip-core
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
    "/usr/lib/aarch64-linux-gnu/baresip/modules",
    "/usr/local/lib/baresip/modules",
)


def baresip_module_path() -> str:
    """Where baresip's modules are (``$BARESIP_MODULE_PATH`` wins)."""
    env = os.environ.get("BARESIP_MODULE_PATH")
    candidates = ([env] if env else []) + list(BARESIP_MODULE_DIRS)
    for directory in candidates:
        if (Path(directory) / "ctrl_tcp.so").is_file():
            return directory
    raise RuntimeError("baresip modules (ctrl_tcp.so) not found: run tools/setup --test")


class BaresipError(RuntimeError):
    """baresip answered a command with ok=false, or died."""


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def _parse_netstrings(buffer: bytearray) -> Iterator[bytes]:
    """Pop complete netstrings (``<len>:<data>,``) off the front of ``buffer``."""
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            return
        length = int(buffer[:colon])
        end = colon + 1 + length
        if len(buffer) < end + 1:
            return
        if buffer[end : end + 1] != b",":
            raise BaresipError(f"bad netstring from ctrl_tcp: {bytes(buffer[: end + 1])!r}")
        payload = bytes(buffer[colon + 1 : end])
        del buffer[: end + 1]
        yield payload


class Baresip:
    """A headless baresip user agent driven over its ``ctrl_tcp`` module.

    Configuration (written to a private config dir, run as ``baresip -f <dir>``): SIP on
    ``<local_ip>:<sip_port>`` (UDP and TCP; baresip also takes ``sip_port + 1`` for TLS; local_ip
    is 127.0.0.1 unless given), ``net_interface <local_ip>`` (``lo`` is refused: "could not get
    network address"; without the line baresip picks eth0's address for Contact and SDP). Its RTP
    sockets bind 0.0.0.0 within ``rtp_ports`` (baresip 1.0 has no setting for that). G.711 only, audio from ``ausine``
    (a 440 Hz tone; 48 kHz stereo, resampled to 8 kHz by baresip) or ``aufile`` (a WAV file), audio
    played into ``aubridge`` with no matching source (dropped: no sound card needed), no ``stdio``
    UI, ``ctrl_tcp`` on ``127.0.0.1:<ctrl_port>``. ``record_dir`` loads ``sndfile``, which writes
    ``dump-*-enc.wav`` (sent) and ``dump-*-dec.wav`` (received) there.

    The account is created after the control connection is up (``uanew``), so no REGISTER event
    is missed: ``<sip:user@domain>;auth_pass=…;regint=N;answermode=…``. With ``domain`` unset
    the AOR is ``sip:user@127.0.0.1`` and nothing registers.

    ctrl_tcp speaks netstring-framed JSON both ways: commands
    ``{"command": "dial", "params": "sip:…", "token": "t1"}``, responses
    ``{"response": true, "ok": true, "data": "…", "token": "t1"}``, and events
    ``{"event": true, "class": "call", "type": "CALL_ESTABLISHED", "accountaor": …,
    "direction": "outgoing", "peeruri": …, "id": <call id>, "param": …}``.
    """

    def __init__(
        self,
        user: str = "1001",
        *,
        domain: str | None = None,
        password: str | None = None,
        regint: int = 0,
        answermode: Literal["manual", "auto", "early"] = "manual",
        display_name: str | None = None,
        transport: Literal["udp", "tcp"] = "udp",
        local_ip: str = LOOPBACK,
        sip_port: int | None = None,
        ctrl_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        audio_file: Path | None = None,
        sine_hz: int = 440,
        record_dir: Path | None = None,
        extra_config: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        binary: str = "baresip",
    ) -> None:
        self.user = user
        self.domain = domain
        self.password = password
        self.regint = regint
        self.answermode = answermode
        self.display_name = display_name
        self.transport = transport
        self.local_ip = local_ip
        self.sip_port = sip_port if sip_port is not None else free_port_range(2, "both", host=local_ip)
        self.ctrl_port = ctrl_port if ctrl_port is not None else free_port("tcp")
        if rtp_ports is None:
            base = free_port_range(10, "udp")
            rtp_ports = (base, base + 9)
        self.rtp_ports = rtp_ports
        self.audio_file = audio_file
        self.sine_hz = sine_hz
        self.record_dir = record_dir
        self.extra_config = dict(extra_config or {})
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="baresip-"))
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._responses: dict[str, dict[str, Any]] = {}
        self._pending: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        """Every event received, in order (``wait_event`` does not remove from this list)."""
        self._token = 0
        self._closed = False

    # files -----------------------------------------------------------------------------------
    @property
    def config_dir(self) -> Path:
        return self.workdir / "conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "baresip.log"

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain or self.local_ip}"

    @property
    def contact_uri(self) -> str:
        """Where this UA listens: dial this from the engine when it does not register."""
        return f"sip:{self.user}@{self.local_ip}:{self.sip_port}"

    def account_line(self) -> str:
        uri = f"sip:{self.user}@{self.domain or self.local_ip}"
        if self.transport != "udp":
            uri += f";transport={self.transport}"
        line = f"<{uri}>"
        if self.display_name:
            line = f'"{self.display_name}" {line}'
        if self.password is not None:
            line += f";auth_pass={self.password}"
        line += f";regint={self.regint if self.domain else 0}"
        line += f";answermode={self.answermode}"
        line += ";audio_codecs=PCMU,PCMA"
        return line

    def config_text(self) -> str:
        conf: dict[str, str] = {
            "poll_method": "epoll",
            "sip_listen": f"{self.local_ip}:{self.sip_port}",
            "sip_trans_def": self.transport,
            "net_interface": self.local_ip,
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": "aubridge,nil",
            "audio_alert": "aubridge,nil",
            "audio_level": "no",
            "rtp_ports": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "rtcp_mux": "no",
            "jitter_buffer_delay": "5-10",
            "statmode_default": "off",
            "ctrl_tcp_listen": f"{LOOPBACK}:{self.ctrl_port}",
            "module_path": baresip_module_path(),
        }
        source_module = "ausine.so"
        if self.audio_file is not None:
            conf["audio_source"] = f"aufile,{Path(self.audio_file).resolve()}"
            source_module = "aufile.so"
        else:
            conf["audio_source"] = f"ausine,{self.sine_hz}"
            conf["ausrc_srate"] = "48000"  # ausine only makes 48 kHz stereo
            conf["ausrc_channels"] = "2"
        if self.record_dir is not None:
            conf["snd_path"] = str(Path(self.record_dir).resolve())
        conf.update(self.extra_config)
        lines = [f"{key}\t{value}" for key, value in conf.items()]
        modules = ["g711.so", source_module, "aubridge.so"]
        if self.record_dir is not None:
            modules.append("sndfile.so")
        lines += [f"module\t{m}" for m in modules]
        lines += ["module_tmp\tuuid.so", "module_tmp\taccount.so"]
        lines += ["module_app\tmenu.so", "module_app\tctrl_tcp.so"]
        return "\n".join(lines) + "\n"

    # life cycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0, *, wait_registered: bool = True) -> Baresip:
        """Start baresip, connect to ctrl_tcp and create the account (``uanew``). If it
        registers (``domain`` and ``regint > 0``), wait for REGISTER_OK unless told not to."""
        if self.proc is not None:
            raise RuntimeError("baresip already started")
        binary = require_binary(self.binary)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        if self.record_dir is not None:
            Path(self.record_dir).mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config").write_text(self.config_text(), encoding="utf-8")
        (self.config_dir / "accounts").write_text("", encoding="utf-8")
        (self.config_dir / "contacts").write_text("", encoding="utf-8")
        self._log = open(self.log_file, "wb")
        self.proc = subprocess.Popen(
            [binary, "-f", str(self.config_dir)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _live.add(self)
        try:
            self._connect(timeout)
            response = self.command("uanew", self.account_line(), timeout=timeout)
            if not response.get("ok"):
                raise BaresipError(f"uanew failed: {response}")
            if wait_registered and self.domain and self.regint > 0:
                self.wait_registered(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BaresipError(f"baresip exited ({self.proc.returncode}):\n{_tail(self.log_file)}")
            try:
                self._sock = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"baresip ctrl_tcp did not listen on {self.ctrl_port}:\n{_tail(self.log_file)}"
                    ) from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name=f"baresip-ctrl-{self.ctrl_port}", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        assert self._sock is not None
        buffer = bytearray()
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                buffer += data
                for payload in _parse_netstrings(buffer):
                    message = json.loads(payload)
                    with self._cond:
                        if message.get("response"):
                            self._responses[str(message.get("token", ""))] = message
                        elif message.get("event"):
                            self.events.append(message)
                            self._pending.append(message)
                        self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def stop(self, grace: float = 3.0) -> int | None:
        """Close the control connection, SIGTERM baresip (it un-registers), a second SIGTERM
        (baresip then exits at once) and SIGKILL if it lingers; wait for it."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        code: int | None = None
        if self.proc is not None:
            code = _end_process(self.proc, signal.SIGTERM, grace)
        if self._reader is not None:
            self._reader.join(2.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        _live.discard(self)
        return code

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Baresip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # control ---------------------------------------------------------------------------------
    def command(self, cmd: str, params: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send one ctrl_tcp command and return its response
        (``{"response": true, "ok": bool, "data": str, "token": str}``)."""
        if self._sock is None:
            raise BaresipError("baresip is not started")
        with self._cond:
            self._token += 1
            token = f"t{self._token}"
        message: dict[str, Any] = {"command": cmd, "token": token}
        if params is not None:
            message["params"] = params
        self._sock.sendall(_netstring(json.dumps(message).encode()))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise TimeoutError(f"no response to {message} from baresip:\n{_tail(self.log_file)}")
                self._cond.wait(left)
            return self._responses.pop(token)

    def _checked(self, cmd: str, params: str | None = None) -> dict[str, Any]:
        response = self.command(cmd, params)
        if not response.get("ok"):
            raise BaresipError(f"{cmd} {params or ''} failed: {response.get('data')!r}")
        return response

    def wait_event(
        self,
        type: str | Sequence[str],  # baresip's events name it "type"
        timeout: float = 10.0,
        *,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """First event of ``type`` (one type or several) not yet returned by an earlier call,
        waiting up to ``timeout`` s for it. Earlier events of other types stay available."""
        types = {type} if isinstance(type, str) else set(type)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, event in enumerate(self._pending):
                    if event.get("type") in types and (predicate is None or predicate(event)):
                        del self._pending[index]
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    seen = [e.get("type") for e in self.events]
                    raise TimeoutError(
                        f"no {sorted(types)} event from baresip within {timeout} s; events: {seen}\n"
                        f"{_tail(self.log_file)}"
                    )
                self._cond.wait(left)

    def wait_registered(self, timeout: float = 10.0) -> dict[str, Any]:
        event = self.wait_event(("REGISTER_OK", "REGISTER_FAIL"), timeout)
        if event["type"] != "REGISTER_OK":
            raise BaresipError(f"registration failed: {event}")
        return event

    def dial(self, uri: str) -> dict[str, Any]:
        """Place a call (``dial``); watch CALL_RINGING / CALL_ESTABLISHED / CALL_CLOSED events."""
        return self._checked("dial", uri)

    def accept(self) -> dict[str, Any]:
        """Answer the incoming call (after a CALL_INCOMING event)."""
        return self._checked("accept")

    def hangup(self) -> dict[str, Any]:
        """Hang up the current call (CALL_CLOSED follows)."""
        return self._checked("hangup")

    def send_dtmf(self, digits: str) -> dict[str, Any]:
        """Send DTMF digits in the current call (``sndcode``; RFC 4733 telephone-events)."""
        return self._checked("sndcode", digits)


# ---------------------------------------------------------------------------------------------
# pyVoIP
# ---------------------------------------------------------------------------------------------

PYVOIP_SOCKET_TIMEOUT: float | None = 10.0
"""Timeout of blocking reads on pyVoIP's SIP socket once patched (None: block for ever)."""

_pyvoip_patch_lock = threading.Lock()


def _restore_blocking(sock: socket.socket) -> None:
    try:
        sock.settimeout(PYVOIP_SOCKET_TIMEOUT)  # blocking mode (with a bound) again
    except OSError:
        pass  # closed by stop() meanwhile: nothing left to restore


@contextlib.contextmanager
def _locked_nonblocking_socket(lock: threading.Lock, sock: socket.socket) -> Iterator[None]:
    """pyVoIP's ``acquired_lock_and_unblocked_socket`` with the socket made blocking again
    *before* the lock is released (pyVoIP's own version does it after)."""
    with lock:
        sock.setblocking(False)
        try:
            yield
        finally:
            _restore_blocking(sock)


def _restoring_blocking(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            _restore_blocking(self.s)

    wrapper._callcenter_patched = True  # type: ignore[attr-defined]
    return wrapper


def patch_pyvoip() -> None:
    """Fix pyVoIP 1.6.8's race on its SIP socket (idempotent).

    pyVoIP's ``SIPClient`` shares one UDP socket between its receive thread and the threads
    that call ``register()`` (``start()`` and the re-register timer) or ``invite()``
    (``VoIPPhone.call()``), serialised by ``recvLock``. The receive thread wants the socket
    non-blocking; ``invite()`` does a plain blocking ``self.s.recv()`` for the 100/180/401.

    * ``recv_loop`` (every 10 ms) uses ``pyVoIP.util.acquired_lock_and_unblocked_socket``,
      which makes the socket non-blocking inside the lock but blocking again in a ``finally``
      that runs *after* the lock is released. A ``call()`` waiting for the lock is woken in
      that gap and its ``recv()`` meets a non-blocking socket: ``BlockingIOError``, no call.
    * ``__register``/``__deregister`` (run inside the lock) set the socket non-blocking. On
      success pyVoIP's ``parse_message`` happens to set it blocking again, but on the paths
      that raise (timeout, 401 with bad credentials, 500 → retry) it stays non-blocking after
      ``register()`` has released the lock, with the same effect on the next ``call()``.

    The patch replaces the name ``acquired_lock_and_unblocked_socket`` in ``pyVoIP.SIP`` with a
    version that restores blocking mode while still holding the lock, and wraps
    ``__register``/``__deregister`` so that they restore it before the lock is released: whoever
    takes ``recvLock`` finds a blocking socket. "Blocking" has a bound here
    (``PYVOIP_SOCKET_TIMEOUT``), so an unanswered INVITE raises ``TimeoutError`` from ``call()``
    instead of holding the lock for ever; a socket already closed by ``stop()`` is left alone
    (pyVoIP's version raised ``OSError`` in the receive thread then). ``pyVoIP.util`` keeps the
    original, for comparison.
    """
    sip = _pyvoip_sip_module()
    with _pyvoip_patch_lock:
        if getattr(sip, "_callcenter_patched", False):
            return
        sip.acquired_lock_and_unblocked_socket = _locked_nonblocking_socket
        client = sip.SIPClient
        for name in ("_SIPClient__register", "_SIPClient__deregister"):
            setattr(client, name, _restoring_blocking(getattr(client, name)))
        sip._callcenter_patched = True


def _pyvoip_sip_module() -> ModuleType:
    # pyVoIP.VoIP first: importing pyVoIP.SIP first fails on a circular import
    importlib.import_module("pyVoIP.VoIP")
    return importlib.import_module("pyVoIP.SIP")


def pyvoip_patched() -> bool:
    return bool(getattr(_pyvoip_sip_module(), "_callcenter_patched", False))


class PyVoipPhone:
    """A pyVoIP 1.6.8 ``VoIPPhone`` (a terminal that registers and calls), with the socket race
    patched (see ``patch_pyvoip``). ``start()`` registers and waits for REGISTERED."""

    def __init__(
        self,
        server: str = LOOPBACK,
        port: int = 5060,
        username: str = "1001",
        password: str = "secret",
        *,
        my_ip: str = LOOPBACK,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        call_callback: Callable[[Any], None] | None = None,
        sip_timeout: float = 5.0,
    ) -> None:
        self.server = server
        self.port = port
        self.username = username
        self.password = password
        self.my_ip = my_ip
        self.sip_port = sip_port if sip_port is not None else free_port("udp")
        if rtp_ports is None:
            base = free_port_range(10, "udp")
            rtp_ports = (base, base + 9)
        self.rtp_ports = rtp_ports
        self.call_callback = call_callback
        self.sip_timeout = sip_timeout
        self.phone: Any = None
        self.calls: list[Any] = []

    def _make_phone(self) -> Any:
        patch_pyvoip()
        from pyVoIP.VoIP import VoIPPhone

        phone = VoIPPhone(
            self.server,
            self.port,
            self.username,
            self.password,
            myIP=self.my_ip,
            callCallback=self.call_callback,
            sipPort=self.sip_port,
            rtpPortLow=self.rtp_ports[0],
            rtpPortHigh=self.rtp_ports[1],
        )
        phone.sip.register_timeout = self.sip_timeout  # pyVoIP waits 30 s by default
        return phone

    @property
    def status(self) -> str:
        return "INACTIVE" if self.phone is None else str(self.phone.get_status().value)

    def start(self, timeout: float = 10.0) -> PyVoipPhone:
        """Bind, register and wait until the phone is REGISTERED."""
        from pyVoIP.VoIP.status import PhoneStatus

        if self.phone is not None:
            raise RuntimeError("phone already started")
        self.phone = self._make_phone()
        _live.add(self)
        try:
            self.phone.start()
            deadline = time.monotonic() + timeout
            while self.phone.get_status() != PhoneStatus.REGISTERED:
                if time.monotonic() > deadline or self.phone.get_status() == PhoneStatus.FAILED:
                    raise TimeoutError(f"pyVoIP phone did not register (status {self.status})")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def call(self, number: str) -> Any:
        """INVITE ``number`` at the server; returns pyVoIP's ``VoIPCall`` (state DIALING)."""
        if self.phone is None:
            raise RuntimeError("phone not started")
        call = self.phone.call(number)
        self.calls.append(call)
        return call

    def wait_answered(self, call: Any = None, timeout: float = 10.0) -> Any:
        """Wait until ``call`` (default: the last one) is ANSWERED; raise if it ends first."""
        from pyVoIP.VoIP import CallState

        call = call if call is not None else self.calls[-1]
        deadline = time.monotonic() + timeout
        while call.state != CallState.ANSWERED:
            if call.state == CallState.ENDED:
                raise RuntimeError("call ended before it was answered")
            if time.monotonic() > deadline:
                raise TimeoutError(f"call not answered within {timeout} s (state {call.state})")
            time.sleep(0.02)
        return call

    def hangup(self, call: Any = None) -> None:
        """BYE the call (default: the last one) if it is answered."""
        from pyVoIP.VoIP import CallState

        call = call if call is not None else (self.calls[-1] if self.calls else None)
        if call is not None and call.state == CallState.ANSWERED:
            call.hangup()

    def stop(self) -> None:
        """Hang up what is answered, de-register, close the sockets (pyVoIP joins nothing: its
        receive thread ends on its own once the socket is closed)."""
        if self.phone is not None:
            with contextlib.suppress(Exception):
                self.phone.stop()
        _live.discard(self)

    def __enter__(self) -> PyVoipPhone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# safety net
# ---------------------------------------------------------------------------------------------


def stop_all() -> None:
    """Stop every peer this process started and has not stopped yet."""
    for peer in list(_live):
        with contextlib.suppress(Exception):
            peer.stop()
        _live.discard(peer)
