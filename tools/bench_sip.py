#!/usr/bin/env python3
"""SIP load benchmark: SIPp against `callcenter serve` at rising call rates, on 127.0.0.1 only.

Each step places RATE calls/s for SECONDS seconds (answer, hold 1 s, hang up; scenario
tools/sipp/uac_hold.xml) from a "carrier" on 127.0.0.2, then prints per rate: calls ok / failed,
SIPp retransmissions, the engine's CPU use (user+system seconds per wall second, from /proc) and
the mean INVITE-to-200 time SIPp measured. Bounded: at most RATE×SECONDS calls per step, every step stops
by itself.

    .venv/bin/python tools/bench_sip.py                  # rates 50 100 200 300 400, 10 s each
    .venv/bin/python tools/bench_sip.py --rates 300 --seconds 20 --repeat 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "tools" / "sipp" / "uac_hold.xml"
CARRIER = "127.0.0.2"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_engine(work: Path, sip_port: int, log_level: str) -> subprocess.Popen[bytes]:
    config = {
        "engine": {"data_dir": str(work / "data"), "max_calls": 5000, "shutdown_grace": 5},
        "sip": {
            "listen": [f"udp:127.0.0.1:{sip_port}"],
            "flood": {"rate": 100000, "burst": 100000},
        },
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "media": {"rtp_port_min": 30000, "rtp_port_max": 40000},
        "recordings": {"root": str(work / "recordings")},  # every call is recorded, as in service
        "logging": {"level": log_level, "format": "json"},
        "trunks": [{"name": "carrier", "host": CARRIER, "port": 5080, "channels": 5000, "emergency_reserve": 10}],
        "routing": {"numbers": [{"number": "1000", "name": "Hotline"}]},
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(work / "engine.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "callcenter.cli", "serve", "--config", str(path)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if b"engine.started" in (work / "engine.log").read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"engine did not start:\n{(work / 'engine.log').read_text()[-3000:]}")


def _ms(sipp_time: str) -> float:
    """SIPp's ``HH:MM:SS:micros`` as milliseconds (NaN when missing)."""
    try:
        h, m, sec, micros = (int(part) for part in sipp_time.split(":"))
    except ValueError:
        return float("nan")
    return ((h * 60 + m) * 60 + sec) * 1000 + micros / 1000


def run_step(work: Path, sip_port: int, rate: int, seconds: int, pid: int) -> dict[str, float]:
    calls = rate * seconds
    stat = work / f"stat_{rate}.csv"
    stat.unlink(missing_ok=True)
    cmd = [
        "sipp", "-sf", str(SCENARIO), "-s", "1000", f"127.0.0.1:{sip_port}",
        "-i", CARRIER, "-mi", CARRIER, "-p", "5080", "-mp", "40000",
        "-r", str(rate), "-m", str(calls), "-l", str(rate * 4),
        "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1",
        "-timeout", str(seconds + 30), "-timeout_error", "-max_socket", "1000",
    ]
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, timeout=seconds + 60)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    rows = list(csv.DictReader(stat.open(), delimiter=";")) if stat.exists() else []
    if not rows:
        raise SystemExit(f"sipp produced no statistics (exit {proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
    last = rows[-1] if rows else {}

    def col(name: str) -> float:
        try:
            return float(last.get(name, "0") or 0)
        except ValueError:
            return 0.0

    rtd = _ms(last.get("ResponseTime1(C)", ""))
    return {
        "rate": rate,
        "calls": calls,
        "ok": col("SuccessfulCall(C)"),
        "failed": col("FailedCall(C)"),
        "retrans": col("Retransmissions(C)"),
        "cpu": cpu / wall if wall else 0.0,
        "rtd": rtd,
        "exit": proc.returncode,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 100, 200, 300, 400])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs per rate; medians are printed")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--json", action="store_true", help="also print one JSON line per rate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sip-") as tmp:
        work = Path(tmp)
        sip_port = free_port()
        engine = start_engine(work, sip_port, args.log_level)
        try:
            print(f"engine pid {engine.pid}, SIP udp:127.0.0.1:{sip_port}, {os.cpu_count()} cores, "
                  f"{args.seconds} s per step, hold 1 s per call")
            header = ("rate/s", "calls", "ok", "failed", "retrans", "engine CPU", "INVITE rtt")
            print("{:>7} {:>7} {:>7} {:>7} {:>8} {:>11} {:>12}".format(*header))
            for rate in args.rates:
                runs = [run_step(work, sip_port, rate, args.seconds, engine.pid) for _ in range(args.repeat)]
                med = {k: statistics.median(float(r[k]) for r in runs) for k in ("ok", "failed", "retrans", "cpu")}
                rtd = statistics.median(float(r["rtd"]) for r in runs)
                print(f"{rate:>7} {runs[0]['calls']:>7} {med['ok']:>7.0f} {med['failed']:>7.0f} "
                      f"{med['retrans']:>8.0f} {med['cpu'] * 100:>10.0f}% {rtd:>9.1f} ms")
                if args.json:
                    print(json.dumps({"rate": rate, **med, "rtd": rtd}))
                time.sleep(2)  # let the last calls' timers drain before the next step
        finally:
            engine.send_signal(signal.SIGTERM)
            try:
                engine.wait(20)
            except subprocess.TimeoutExpired:
                engine.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
