#!/usr/bin/env python3
"""Media benchmark: N concurrent held calls, each hearing music on hold while it is recorded, measured at
the receiving end (127.0.0.0/8 only, every step bounded in calls and time).

Per step (N = 100, 250, 500, 1000 by default) a fresh `callcenter serve` is started (temp data dir and
recordings root, trunk "carrier" on 127.0.0.2, number 1000 = hold), SIPp places N calls from 127.0.0.2
(tools/sipp/uac_media_hold.xml: every call offers its own media port, 46000 + 4 n, and holds for a
fixed time, then BYE). Once every call is up, tcpdump captures the engine's RTP to those ports on `lo` for
--seconds, while the engine's CPU (/proc/PID/stat) and RSS (/proc/PID/status) are sampled. The pcap is
parsed with `struct` and grouped by RTP SSRC:

  late %      frames that arrived > 5 ms after their ideal time: per stream, a least-squares line of
              arrival time against RTP timestamp (removes the clock offset, and the stream's fixed position
              inside the engine's 20 ms tick, which is no lateness), late = arrival - line > 5 ms.
  vs best %   the stricter reading: late = > 5 ms after the stream's best (earliest) arrival relative to its
              RTP timestamp in the window, i.e. the schedule the engine keeps when nothing delays it.
  missing %   frames a stream should have delivered in the window (its span / 20 ms) that never arrived
              (not sent, skipped ticks, capture drops; tcpdump's own drops are printed as well).
  jitter p99  99th percentile over all streams of |D|, D = arrival spacing - timestamp spacing (RFC 3550),
              i.e. |delta - 20 ms| for consecutive frames.
  max gap     the longest arrival gap of any stream in the window.
  CPU %       engine user+system time / wall time in the window (100 % = one core); µs/frm: that CPU time
              per frame received. host %: all cores busy (/proc/stat), i.e. engine + kernel + tcpdump + others.
  KB/call     (RSS in the window - RSS of the idle engine) / calls up.
  tick p99, late tk, skip tk   the engine's own view (shim, below): time inside one media-clock callback,
              ticks that began > 5 ms late, ticks skipped (more than 5 behind).

The calls ramp up at N/5 per second (50-200, --rate). Before each step the bench waits (up to --quiet-wait
s) for the host to be idle: on a shared 2-core machine other people's tests show up as lateness. tcpdump
captures only the "in" direction of lo: both directions double the capture cost, which the kernel charges
to the engine's own sendto().

The engine is started through a small shim (this file with --engine-shim, then `callcenter serve`) that
counts the media clock's own figures without changing the engine: ticks that ran > 5 ms late, skipped
ticks, time inside ticks (p99/max per tick) and garbage-collector pauses; --plain-engine runs
`python -m callcenter.cli serve` untouched instead (those columns then show "-").

    .venv/bin/python tools/bench_media.py                         # 100 250 500 1000 calls, 15 s each, recording
    .venv/bin/python tools/bench_media.py --calls 1000 --no-record
    .venv/bin/python tools/bench_media.py --calls 1000 --profile /tmp/media-1000   # + py-spy, 10 s after the window
    .venv/bin/python tools/bench_media.py --calls 1000 --engine-root /tmp/proto   # a prototype copy of the repo

Needs sipp and tcpdump (root or CAP_NET_RAW); --profile needs py-spy in the venv (`pip install py-spy`).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "tools" / "sipp" / "uac_media_hold.xml"
ENGINE_HOST = "127.0.0.1"
CARRIER = "127.0.0.2"  # the trunk's host: SIPp's SIP and media address
MEDIA_BASE = 46000  # SIPp -mp (SIPp binds it and +2 itself): call n offers MEDIA_BASE + 4 n (bench_sip uses 40000)
MEDIA_STEP = 4
MAX_CALLS = 2500  # [auto_media_port] wraps after 10000 / 4 calls
ENGINE_RTP_MIN, ENGINE_RTP_MAX = 20000, 30000
FRAME = 0.020
LATE = 0.005
CLOCK_RATE = 8000
SNAPLEN = 96  # Ethernet + IPv4 + UDP + RTP header fit; the payload is not needed


# --------------------------------------------------------------------------------------------------
# The engine, optionally through a shim that exposes the media clock's counters
# --------------------------------------------------------------------------------------------------


def engine_shim(stats_path: str, root: str, argv: list[str]) -> int:
    """Run `callcenter serve` in this process, recording media-clock and GC figures; SIGUSR1 writes them
    (as JSON, atomically) to ``stats_path`` and starts a new interval for the per-tick figures."""
    sys.path.insert(0, root)
    from callcenter.media import clock as clock_module

    if not clock_module.__file__ or not clock_module.__file__.startswith(root):
        raise SystemExit(f"bench_media shim: callcenter was imported from {clock_module.__file__}, not {root}")

    if "twisted.internet.reactor" in sys.modules:  # the CLI must install the asyncio reactor itself
        raise SystemExit("bench_media shim: a reactor was installed before callcenter.cli")
    clocks: list[Any] = []
    durations: list[float] = []  # seconds inside each _tick call since the last dump
    lateness: list[float] = []  # seconds each _tick call began after its due time
    gc_pauses: list[float] = []
    gc_started = [0.0]
    original_init = clock_module.MediaClock.__init__
    original_tick = clock_module.MediaClock._tick

    def init(self: Any, reactor: Any, now: Any = None) -> None:
        original_init(self, reactor, now)
        clocks.append(self)

    def tick(self: Any) -> None:
        began = time.monotonic()
        lateness.append(self.now() - self._due)  # the clock schedules each tick at its due time
        original_tick(self)
        durations.append(time.monotonic() - began)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    def dump(signum: int, frame: Any) -> None:
        stats: dict[str, Any] = {"t": time.time(), "gc_pauses": list(gc_pauses), "durations": list(durations),
                                 "lateness": list(lateness)}
        durations.clear()
        lateness.clear()
        gc_pauses.clear()
        if clocks:
            c = clocks[0]
            stats.update(ticks=c.ticks, late_ticks=c.late_ticks, skipped_ticks=c.skipped_ticks,
                         busy_seconds=c.busy_seconds, sessions=len(c.sessions), recorders=len(c.after_tick))
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, stats_path)

    clock_module.MediaClock.__init__ = init  # type: ignore[method-assign]
    clock_module.MediaClock._tick = tick  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR1, dump)
    from callcenter.cli import main as cli_main

    return cli_main(argv)


def free_port(host: str = ENGINE_HOST, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def carrier_sip_port() -> int:
    """A free UDP port for SIPp on the carrier address, below the media ports the sinks take (trunks match
    on the source host only, so any port will do)."""
    for port in range(5080, 5280):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((CARRIER, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free UDP port in 5080-5279 on {CARRIER}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat; busy includes irq and softirq (the loopback's
    receive path), idle and iowait are not busy."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = float(sum(values[:8]))
    return total - values[3] - values[4], total


QUIET_HOST_PCT = 10.0


def wait_for_quiet_host(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) for a second in which the whole host is < QUIET_HOST_PCT % busy: other
    people's builds and tests on a shared 2-core machine would be measured as engine lateness. Returns the
    busy % of the last second."""
    deadline = time.monotonic() + max_wait
    while True:
        m0 = machine_cpu()
        time.sleep(1.0)
        m1 = machine_cpu()
        busy = 100 * (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1])
        if busy <= QUIET_HOST_PCT or time.monotonic() >= deadline:
            return busy


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Engine:
    """One `callcenter serve` for one step, with its own temp data dir and recordings root."""

    def __init__(self, work: Path, *, record: bool, shim: bool, root: Path = REPO) -> None:
        self.work = work
        self.sip_port = free_port()
        self.carrier_port = carrier_sip_port()
        self.http_port = free_port(kind=socket.SOCK_STREAM)
        self.stats_path = work / "media-stats.json"
        config = {
            "engine": {"data_dir": str(work / "data"), "max_calls": 5000, "shutdown_grace": 5},
            "sip": {
                "listen": [f"udp:{ENGINE_HOST}:{self.sip_port}"],
                "flood": {"rate": 100000, "burst": 100000},
            },
            "http": {"listen": f"{ENGINE_HOST}:{self.http_port}"},
            "media": {"address": ENGINE_HOST, "rtp_port_min": ENGINE_RTP_MIN, "rtp_port_max": ENGINE_RTP_MAX},
            "recordings": {"root": str(work / "recordings"), "record_calls": record},
            "logging": {"level": "warning", "format": "json"},
            "trunks": [{"name": "carrier", "host": CARRIER, "port": self.carrier_port, "channels": 5000,
                        "emergency_reserve": 10}],
            "routing": {"numbers": [{"number": "1000", "name": "Hotline", "action": "hold"}]},
        }
        path = work / "bench.yaml"
        path.write_text(yaml.safe_dump(config))
        if shim:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--engine-shim", str(self.stats_path), str(root)]
        else:
            cmd = [sys.executable, "-m", "callcenter.cli"]
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.shim = shim
        self.log_path = work / "engine.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*cmd, "serve", "--config", str(path)], cwd=root, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid
        self._wait_ready()

    def _wait_ready(self) -> None:
        """The HTTP listener is the last thing the engine starts (the log is at level warning: no
        "engine.started" line to wait for)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((ENGINE_HOST, self.http_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"engine did not start:\n{self.log_path.read_text()[-3000:]}")

    def media_stats(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Ask the shim for the media clock's figures (None without the shim)."""
        if not self.shim or self.proc.poll() is not None:
            return None
        before = self.stats_path.stat().st_mtime_ns if self.stats_path.exists() else 0
        sent = time.time()
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats_path.exists() and self.stats_path.stat().st_mtime_ns != before:
                try:
                    stats: dict[str, Any] = json.loads(self.stats_path.read_text())
                except ValueError:
                    time.sleep(0.005)
                    continue
                if stats.get("t", 0) >= sent - 1:
                    return stats
            time.sleep(0.005)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --------------------------------------------------------------------------------------------------
# Receiving end: sockets that take the packets (no ICMP unreachable back), tcpdump, pcap parsing
# --------------------------------------------------------------------------------------------------


def media_port(call_number: int) -> int:
    """SIPp's [auto_media_port+4] for call ``call_number`` (1-based)."""
    return MEDIA_BASE + (MEDIA_STEP * (call_number - 1)) % 10000 + MEDIA_STEP


def open_sinks(calls: int) -> list[socket.socket]:
    """Bind the RTP and RTCP port of every call on the carrier address and never read them: the kernel
    drops what overflows the small buffers, and the engine gets no ICMP port-unreachable (which Linux
    reports on the next send of an unconnected UDP socket). A port SIPp already holds is left to SIPp."""
    sinks = []
    for n in range(1, calls + 1):
        for port in (media_port(n), media_port(n) + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            try:
                s.bind((CARRIER, port))
            except OSError:
                s.close()
                continue
            sinks.append(s)
    return sinks


class Capture:
    def __init__(self, path: Path, calls: int) -> None:
        self.path = path
        self.err_path = path.with_suffix(".err")
        last = media_port(calls) + 1
        bpf = (f"udp and src host {ENGINE_HOST} and dst host {CARRIER} "
               f"and dst portrange {MEDIA_BASE}-{last}")
        # -Q in: on lo every packet passes the capture tap twice (out, then in), and the copies are made inside
        # the engine's own sendto(). Measured on the 2-core test VM, 1000 sends per tick: 13 ms with both
        # directions captured, 8 ms with -Q in, 8 ms without tcpdump.
        cmd = ["tcpdump", "-i", "lo", "-Q", "in", "-n", "-p", "-s", str(SNAPLEN), "-B", "32768", "-w", str(path), bpf]
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if b"listening on" in self.err_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise SystemExit(f"tcpdump did not start: {self.err_path.read_text()[-2000:]}")

    def stop(self) -> dict[str, int]:
        """Stop tcpdump (SIGINT: it flushes the file) and return its packet counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        counts: dict[str, int] = {}
        for line in self.err_path.read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) >= 3 and words[0].isdigit() and words[1] == "packets":
                counts[" ".join(words[2:])] = int(words[0])
        return counts


_LINK_HEADER = {0: 4, 1: 14, 101: 0, 113: 16, 228: 0, 276: 20}  # null, Ethernet, raw, Linux SLL, IPv4, SLL2


def read_pcap(path: Path, t0: float, t1: float) -> dict[int, np.ndarray]:
    """RTP packets (PT 0/8) that arrived in [t0, t1]: per SSRC an array of (arrival, sequence, timestamp)."""
    data = path.read_bytes()
    if len(data) < 24:
        return {}
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian, magic = ">", struct.unpack_from(">I", data)[0]
    else:
        raise SystemExit(f"{path}: not a pcap file")
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in _LINK_HEADER:
        raise SystemExit(f"{path}: unsupported link type {linktype}")
    link = _LINK_HEADER[linktype]
    record = struct.Struct(endian + "IIII").unpack_from
    udp_rtp = struct.Struct("!HHHHBBHII").unpack_from  # UDP header, then the RTP fixed header
    rows: dict[int, list[tuple[float, int, int]]] = {}
    off, end = 24, len(data)
    while off + 16 <= end:
        sec, frac, incl, _ = record(data, off)
        p = off + 16 + link
        off += 16 + incl
        if off > end:
            break
        t = sec + frac * scale
        if t < t0 or t > t1 or data[p] >> 4 != 4 or data[p + 9] != 17:
            continue
        q = p + (data[p] & 0x0F) * 4
        if q + 20 > off:
            continue
        _, _, _, _, first, second, seq, ts, ssrc = udp_rtp(data, q)
        if first >> 6 != 2 or (second & 0x7F) not in (0, 8):  # RTCP, telephone-event: not audio frames
            continue
        rows.setdefault(ssrc, []).append((t, seq, ts))
    return {ssrc: np.array(r, dtype=np.float64) for ssrc, r in rows.items()}


def _unwrap(values: np.ndarray, modulus: int) -> np.ndarray:
    steps = np.diff(values.astype(np.int64)) % modulus
    steps = np.where(steps >= modulus // 2, steps - modulus, steps)
    return np.concatenate(([0], np.cumsum(steps)))


@dataclass
class Reception:
    streams: int = 0
    full_streams: int = 0  # delivered >= 99 % of the frames their span called for
    packets: int = 0
    expected: int = 0
    late: int = 0  # > 5 ms behind the stream's least-squares line
    late_best: int = 0  # > 5 ms behind the stream's best arrival
    jitter_p99_ms: float = math.nan
    jitter_max_ms: float = math.nan
    max_gap_ms: float = math.nan
    late_streams: int = 0  # streams with at least one late frame (least-squares reading)
    worst_late_ms: float = math.nan
    lateness_hist: dict[str, int] = field(default_factory=dict)

    @property
    def late_pct(self) -> float:
        return 100.0 * self.late / self.packets if self.packets else math.nan

    @property
    def late_best_pct(self) -> float:
        return 100.0 * self.late_best / self.packets if self.packets else math.nan

    @property
    def missing_pct(self) -> float:
        return 100.0 * max(0, self.expected - self.packets) / self.expected if self.expected else math.nan


def analyse(streams: dict[int, np.ndarray], t0: float, t1: float) -> Reception:
    out = Reception()
    deviations: list[np.ndarray] = []
    lateness_all: list[np.ndarray] = []
    gaps: list[float] = []
    window_frames = int(round((t1 - t0) / FRAME))
    for rows in streams.values():
        if len(rows) < 3:
            continue
        arrival = rows[:, 0]
        seq = _unwrap(rows[:, 1], 1 << 16)
        media = _unwrap(rows[:, 2], 1 << 32) / CLOCK_RATE
        out.streams += 1
        out.packets += len(rows)
        span_frames = int(round((media[-1] - media[0]) / FRAME)) + 1
        by_seq = int(seq.max() - seq.min()) + 1
        expected = max(span_frames, by_seq, int(round((arrival[-1] - arrival[0]) / FRAME)) + 1)
        whole = arrival[0] <= t0 + 0.1 and arrival[-1] >= t1 - 0.1  # up for the whole window
        if whole:
            expected = max(expected, window_frames)
        out.expected += expected
        if whole and len(rows) >= 0.99 * expected:
            out.full_streams += 1
        slope, intercept = np.polyfit(media - media[0], arrival - arrival[0], 1)
        behind_line = (arrival - arrival[0]) - (intercept + slope * (media - media[0]))
        late = int(np.count_nonzero(behind_line > LATE))
        out.late += late
        out.late_streams += late > 0
        offset = arrival - media
        lateness = offset - offset.min()
        out.late_best += int(np.count_nonzero(lateness > LATE))
        lateness_all.append(lateness)
        deviations.append(np.abs(np.diff(arrival) - np.diff(media)))
        gaps.append(float(np.diff(arrival).max()))
    if deviations:
        dev = np.concatenate(deviations)
        out.jitter_p99_ms = float(np.percentile(dev, 99) * 1000)
        out.jitter_max_ms = float(dev.max() * 1000)
        out.max_gap_ms = max(gaps) * 1000
        lat = np.concatenate(lateness_all) * 1000
        out.worst_late_ms = float(lat.max())
        edges = [0, 1, 2, 5, 10, 20, 50, 100, math.inf]
        counts, _ = np.histogram(lat, bins=edges)
        out.lateness_hist = {f"{lo:g}-{hi:g}ms": int(c) for lo, hi, c in zip(edges, edges[1:], counts, strict=False)}
    return out


# --------------------------------------------------------------------------------------------------
# py-spy (optional): where the engine's time goes
# --------------------------------------------------------------------------------------------------


def profile(pid: int, seconds: int, out: Path) -> str:
    """Record the engine with py-spy (raw collapsed stacks + speedscope) and summarise the top functions."""
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        return "py-spy is not installed in the venv (pip install py-spy)"
    raw = out.with_suffix(".txt")
    cmd = [str(pyspy), "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "--nonblocking",
           "--format", "raw", "-o", str(raw)]
    result = subprocess.run(cmd, capture_output=True, timeout=seconds + 60)
    if result.returncode != 0 or not raw.exists():
        return f"py-spy failed: {result.stderr.decode(errors='replace')[-1000:]}"
    return summarise_collapsed(raw, seconds * 200)


def summarise_collapsed(raw: Path, possible: int) -> str:
    """Self and inclusive time per function from py-spy's raw (collapsed) output, as % of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "py-spy: no samples"
    lines = [f"py-spy: {total} samples of {possible} possible (busy ≈ {100 * total / possible:.0f} % of one core)",
             "  self %  function"]
    lines += [f"  {100 * c / total:6.1f}  {name}" for name, c in own.most_common(20)]
    lines += ["  incl %  function"]
    lines += [f"  {100 * c / total:6.1f}  {name}" for name, c in inclusive.most_common(25)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """'tick (callcenter/media/session.py:250)' -> 'tick (media/session.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    tail = "/".join(parts[-2:]) if parts else path
    return f"{name} ({tail})"


# --------------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------------


@dataclass
class Step:
    calls: int
    rate: int
    ok: float = math.nan
    failed: float = math.nan
    engine_legs: int | None = None
    reception: Reception = field(default_factory=Reception)
    cpu_pct: float = math.nan
    machine_pct: float = math.nan  # all cores busy, % of the whole machine
    host_before_pct: float = math.nan  # the same, in the second before the step (other people's load)
    tcpdump_pct: float = math.nan
    rss_idle_mb: float = math.nan
    rss_mb: float = math.nan
    kb_per_call: float = math.nan
    cpu_us_per_frame: float = math.nan
    tcpdump: dict[str, int] = field(default_factory=dict)
    clock: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profile: str = ""


def _clock_window(a: dict[str, Any] | None, b: dict[str, Any] | None, wall: float) -> dict[str, Any]:
    if not a or not b or "ticks" not in b:
        return {}
    durations = np.array(b["durations"] or [0.0]) * 1000
    lateness = np.array(b["lateness"] or [0.0]) * 1000
    pauses = np.array(b["gc_pauses"] or [0.0]) * 1000
    return {
        "ticks": b["ticks"] - a["ticks"],
        "late_ticks": b["late_ticks"] - a["late_ticks"],
        "skipped_ticks": b["skipped_ticks"] - a["skipped_ticks"],
        "busy_pct": 100 * (b["busy_seconds"] - a["busy_seconds"]) / wall,
        "tick_p50_ms": float(np.percentile(durations, 50)),
        "tick_p99_ms": float(np.percentile(durations, 99)),
        "tick_max_ms": float(durations.max()),
        "start_late_p99_ms": float(np.percentile(lateness, 99)),
        "start_late_max_ms": float(lateness.max()),
        "gc_runs": len(b["gc_pauses"]),
        "gc_max_ms": float(pauses.max()),
        "gc_total_ms": float(pauses.sum()),
        "legs": b["sessions"],
        "recorders": b["recorders"],
    }


def _sipp_error(work: Path) -> str:
    path = work / "sipp.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    errors = [line.strip() for line in lines if "Unable" in line or "rror" in line]
    return errors[0] if errors else "see sipp.log (--keep)"


def run_step(root: Path, calls: int, rate: int, seconds: float, *, record: bool, shim: bool,
             keep: bool, profile_seconds: int, profile_out: Path | None, engine_root: Path = REPO,
             quiet_wait: float = 0.0) -> Step:
    step = Step(calls=calls, rate=rate)
    work = Path(tempfile.mkdtemp(prefix=f"step-{calls}-", dir=root))
    ramp = calls / rate
    settle = 1.0
    # every call is held long enough to cover a slow ramp, the window and the profile; first BYE after that
    hold = ramp * 1.5 + 4 + settle + seconds + (profile_seconds + 2 if profile_seconds else 0) + 2
    step.host_before_pct = wait_for_quiet_host(quiet_wait)
    if step.host_before_pct > QUIET_HOST_PCT:
        step.notes.append(f"the host was {step.host_before_pct:.0f} % busy before the step (other processes): "
                          "figures are pessimistic")
    engine = Engine(work, record=record, shim=shim, root=engine_root)
    sinks: list[socket.socket] = []
    sipp: subprocess.Popen[bytes] | None = None
    capture: Capture | None = None
    try:
        time.sleep(1.0)
        step.rss_idle_mb = rss_kb(engine.pid) / 1024
        sinks = open_sinks(calls)
        stat = work / "sipp_stat.csv"
        cmd = [
            "sipp", "-sf", str(SCENARIO), "-s", "1000", f"{ENGINE_HOST}:{engine.sip_port}",
            "-i", CARRIER, "-mi", CARRIER, "-p", str(engine.carrier_port), "-mp", str(MEDIA_BASE),
            "-d", str(int(hold * 1000)), "-r", str(rate), "-l", str(calls), "-m", str(calls),
            "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1",
            "-timeout", str(int(hold + ramp * 3 + 30)), "-timeout_error", "-max_socket", "1000",
        ]
        sipp_log = open(work / "sipp.log", "wb")
        sipp_started = time.time()
        sipp = subprocess.Popen(cmd, cwd=work, stdout=sipp_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sipp_log.close()
        # wait until every call is up (the engine's count with the shim, else the expected ramp time)
        deadline = time.monotonic() + ramp * 1.5 + 4
        stats: dict[str, Any] | None = None
        if shim:
            while time.monotonic() < deadline:
                stats = engine.media_stats()
                if stats and stats.get("sessions", 0) >= calls:
                    break
                if sipp.poll() is not None:
                    break
                time.sleep(0.25)
            else:
                step.notes.append(f"only {stats.get('sessions') if stats else '?'} legs up after the ramp")
        else:
            time.sleep(ramp + 2)
        if sipp.poll() is not None:  # SIPp gave up before the window (a port in use, the engine refusing)
            step.notes.append(f"sipp exit {sipp.returncode} before the window: {_sipp_error(work)}")
            return step
        time.sleep(settle)
        capture = Capture(work / "rtp.pcap", calls)
        time.sleep(0.3)
        a = engine.media_stats()
        t0, cpu0 = time.time(), cpu_seconds(engine.pid)
        machine0, dump0 = machine_cpu(), cpu_seconds(capture.proc.pid)
        time.sleep(seconds)
        t1, cpu1 = time.time(), cpu_seconds(engine.pid)
        machine1, dump1 = machine_cpu(), cpu_seconds(capture.proc.pid)
        rss = rss_kb(engine.pid)
        b = engine.media_stats()
        time.sleep(1.5)  # tcpdump hands packets over in blocks (up to 1 s): let the window's last block out
        step.tcpdump = capture.stop()
        wall = t1 - t0
        if t1 > sipp_started + hold:
            step.notes.append("window overlapped the first BYEs (ramp too slow?)")
        step.cpu_pct = 100 * (cpu1 - cpu0) / wall
        step.machine_pct = 100 * (machine1[0] - machine0[0]) / max(1.0, machine1[1] - machine0[1])
        step.tcpdump_pct = 100 * (dump1 - dump0) / wall
        step.rss_mb = rss / 1024
        step.clock = _clock_window(a, b, wall)
        step.engine_legs = step.clock.get("legs")
        if profile_seconds and profile_out is not None:
            step.profile = profile(engine.pid, profile_seconds, profile_out)
        sipp.wait(timeout=hold + ramp * 3 + 60)
        rows = list(csv.DictReader(stat.open(), delimiter=";")) if stat.exists() else []
        if rows:
            step.ok = float(rows[-1].get("SuccessfulCall(C)") or 0)
            step.failed = float(rows[-1].get("FailedCall(C)") or 0)
        if sipp.returncode not in (0, None):
            step.notes.append(f"sipp exit {sipp.returncode}: {_sipp_error(work)}")
        step.reception = analyse(read_pcap(capture.path, t0, t1), t0, t1)
        up = step.engine_legs or step.reception.streams
        if up:
            step.kb_per_call = (rss / 1024 - step.rss_idle_mb) * 1024 / up
        if step.reception.packets:
            step.cpu_us_per_frame = (cpu1 - cpu0) * 1e6 / step.reception.packets
    finally:
        if capture is not None:
            capture.stop()
        if sipp is not None and sipp.poll() is None:
            sipp.terminate()
            try:
                sipp.wait(10)
            except subprocess.TimeoutExpired:
                sipp.kill()
        engine.stop()
        for s in sinks:
            s.close()
        warnings = [line for line in engine.log_path.read_text(errors="replace").splitlines() if '"level"' in line]
        if warnings:
            levels = Counter(json.loads(w).get("event", "?") for w in warnings if w.startswith("{"))
            levels.pop("http.no_users", None)  # the bench config has no web users, on purpose
            if levels:
                step.notes.append("engine log: " + ", ".join(f"{e} ×{n}" for e, n in levels.most_common(5)))
        if keep:
            print(f"  kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return step


# --------------------------------------------------------------------------------------------------


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


HEADER = ("calls", "ok", "up", "streams", "full", "packets", "miss %", "late %", "vs best", "jit p99", "max gap",
          "CPU %", "host %", "µs/frm", "RSS MB", "KB/call", "tick p99", "late tk", "skip tk")
WIDTHS = (5, 5, 5, 7, 5, 7, 7, 7, 7, 7, 7, 5, 6, 6, 6, 7, 8, 7, 7)
ROW = " ".join(f"{{:>{w}}}" for w in WIDTHS)


def format_row(s: Step) -> str:
    r, c = s.reception, s.clock
    return ROW.format(
        s.calls, _f(s.ok, ".0f"), _f(s.engine_legs, "d") if s.engine_legs is not None else "-", r.streams,
        r.full_streams, r.packets, _f(r.missing_pct, ".3f"), _f(r.late_pct, ".3f"), _f(r.late_best_pct, ".3f"),
        _f(r.jitter_p99_ms, ".2f"), _f(r.max_gap_ms, ".1f"), _f(s.cpu_pct, ".0f"),
        _f(s.machine_pct, ".0f"), _f(s.cpu_us_per_frame, ".1f"),
        _f(s.rss_mb, ".0f"), _f(s.kb_per_call, ".0f"), _f(c.get("tick_p99_ms"), ".1f"),
        _f(c.get("late_ticks"), "d") if c else "-", _f(c.get("skipped_ticks"), "d") if c else "-",
    )


def step_json(s: Step) -> dict[str, Any]:
    r = s.reception
    return {
        "calls": s.calls, "rate": s.rate, "ok": s.ok, "failed": s.failed, "cpu_pct": s.cpu_pct,
        "machine_pct": s.machine_pct, "host_before_pct": s.host_before_pct,
        "tcpdump_pct": s.tcpdump_pct, "rss_idle_mb": s.rss_idle_mb,
        "rss_mb": s.rss_mb, "kb_per_call": s.kb_per_call, "cpu_us_per_frame": s.cpu_us_per_frame,
        "late_pct": r.late_pct, "late_best_pct": r.late_best_pct, "missing_pct": r.missing_pct, **r.__dict__,
        "tcpdump": s.tcpdump, "clock": s.clock, "notes": s.notes,
    }


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--engine-shim":
        return engine_shim(sys.argv[2], sys.argv[3], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 250, 500, 1000])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured steady window per step")
    parser.add_argument("--rate", type=int, default=0, help="calls/s during the ramp (default: N/5, 50-200)")
    parser.add_argument("--no-record", action="store_true", help="recordings.record_calls: false")
    parser.add_argument("--plain-engine", action="store_true",
                        help="run `python -m callcenter.cli serve` without the media-clock shim")
    parser.add_argument("--profile", type=Path, metavar="PREFIX",
                        help="py-spy the largest step for --profile-seconds after its window (PREFIX.txt)")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--engine-root", type=Path, default=REPO, metavar="DIR",
                        help="run the engine from another source tree (a prototype copy); default: this checkout")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="SECONDS",
                        help="before each step, wait up to this long for the host to be idle (shared machines)")
    parser.add_argument("--keep", action="store_true", help="keep each step's temp dir (pcap, logs)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per step")
    args = parser.parse_args()
    for tool in ("sipp", "tcpdump"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (apt-get install -y {tool})")
    if any(not 1 <= n <= MAX_CALLS for n in args.calls):
        parser.error(f"--calls must be between 1 and {MAX_CALLS}")
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds must be between 1 and 120")
    largest = max(args.calls)
    print(f"{os.cpu_count()} cores; {args.seconds:g} s window per step; recording "
          f"{'off' if args.no_record else 'on'}; {'plain engine' if args.plain_engine else 'engine via shim'}; "
          f"late = > {LATE * 1000:g} ms behind the stream's least-squares schedule (vs best: behind its best)")
    print(ROW.format(*HEADER))
    steps = []
    tmp = tempfile.mkdtemp(prefix="bench-media-")
    try:
        for n in args.calls:
            rate = args.rate or min(200, max(50, n // 5))
            profiling = args.profile is not None and n == largest
            step = run_step(Path(tmp), n, rate, args.seconds, record=not args.no_record,
                            shim=not args.plain_engine, keep=args.keep,
                            profile_seconds=args.profile_seconds if profiling else 0,
                            profile_out=args.profile if profiling else None,
                            engine_root=args.engine_root.resolve(), quiet_wait=args.quiet_wait)
            steps.append(step)
            print(format_row(step), flush=True)
            for note in step.notes:
                print(f"       note: {note}")
            if args.json:
                print(json.dumps(step_json(step)))
            time.sleep(1)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for step in steps:
        if step.profile:
            print(f"\n{step.calls} calls, {args.profile_seconds} s after the window:\n{step.profile}")
    goal = [s for s in steps if s.calls >= 1000]
    if goal:
        s = goal[-1]
        verdict = "meets" if s.reception.late_pct < 0.1 and s.reception.full_streams >= s.calls else "misses"
        print(f"\ngoal (1000 calls, < 0.1 % late frames, every stream whole): {verdict} "
              f"({_f(s.reception.late_pct, '.3f')} % late, {s.reception.full_streams}/{s.calls} whole streams)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
