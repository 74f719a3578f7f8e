#!/usr/bin/env python3
"""ACD benchmark: SIPp callers through a queue flow to SIPp operator phones, on 127.0.0.1 only.

**Throughput.** `callcenter serve` with a flow that answers and queues (hotline), OPERATORS operators whose
desk phones are one SIPp UAS (tools/sipp/acd_phone.xml; every account has the static contact
sip:<account>@127.0.0.1:<port>), wrap-up 0, keepalive 0, every call recorded as in service. For each RATE a
SIPp UAC (tools/sipp/acd_caller.xml from the "carrier" 127.0.0.2) places RATE calls/s for SECONDS seconds;
each call is answered by the flow, queued, connected to an operator, held 1 s and hung up. Printed per rate:
calls, successful, failed, SIPp retransmissions (callers and phones), the engine's CPU (user+system seconds
per wall second, /proc), the CPU other processes took meanwhile (the machine may be shared: figures taken
while "others" is high are not the engine's), how many calls reached acd.call.connected, and p50/p99 of
acd.call.queued → acd.call.connected from the engine's JSON log. "clean" = no failure, no retransmission,
every call connected. ``--profile FILE`` samples the engine with py-spy during the first rate.

**Pre-emption.** A second engine with BUSY operators, all talking to long normal calls; then EMERGENCIES
emergency calls 200 ms apart, each held 1 s (so the operator is freed and the pre-empted call reconnects).
Printed: p50/p99/max over the emergencies of the time from the engine's receipt of the INVITE (call.offered)
to acd.phone.ringing, and to the INVITE's arrival at the phone (the phone's SIPp log, same clock), how many
emergencies pre-empted, how many victims were reconnected, and whether every normal caller stayed up.

    .venv/bin/python tools/bench_acd.py                       # rates 150 200, 10 s each; 50 emergencies
    .venv/bin/python tools/bench_acd.py --rate 150 --seconds 20 --operators 300 --emergencies 50
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from bench_sip import cpu_seconds, free_port  # noqa: E402

CALLER = REPO / "tools" / "sipp" / "acd_caller.xml"
PHONE = REPO / "tools" / "sipp" / "acd_phone.xml"
CARRIER = "127.0.0.2"
NORMAL_NUMBER = "13800138001"
EMERGENCY_NUMBER = "13900139009"
FIRST_ACCOUNT = 7000  # operator phone accounts 7000, 7001, …

QUEUE_FLOW = """\
flow: {name}
description: straight into a queue
start: answer
nodes:
  answer: {{type: answer, next: wait}}
  wait: {{type: queue, queue: {queue}, priority: {priority}}}
"""


# -- the engine -------------------------------------------------------------------------------------------
class Engine:
    """`callcenter serve` with queues, operators and phones at a fixed SIPp port; JSON log in a file."""

    def __init__(self, work: Path, operators: int, phone_port: int) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port()
        self.phone_port = phone_port
        flows = work / "flows"
        flows.mkdir(exist_ok=True)
        (flows / "normal.yaml").write_text(QUEUE_FLOW.format(name="normal", queue="hotline", priority="normal"))
        (flows / "urgent.yaml").write_text(QUEUE_FLOW.format(name="urgent", queue="emergency",
                                                             priority="emergency"))
        accounts = [str(FIRST_ACCOUNT + i) for i in range(operators)]
        config = {
            "engine": {"data_dir": str(work / "data"), "max_calls": 10000, "shutdown_grace": 5,
                       "max_call_duration": 600},
            "sip": {"listen": [f"udp:127.0.0.1:{self.sip_port}"], "flood": {"rate": 100000, "burst": 100000}},
            "http": {"listen": f"127.0.0.1:{free_port()}"},
            "media": {"address": "127.0.0.1", "rtp_port_min": 30000, "rtp_port_max": 44000},
            "recordings": {"root": str(work / "recordings")},  # every call is recorded, as in service
            "logging": {"level": "info", "format": "json"},
            "flows": {"directory": str(flows),
                      "tts_cache": str(Path(tempfile.gettempdir()) / "callcenter-tests-tts")},
            "directory": {"file": None},
            "trunks": [{"name": "carrier", "host": CARRIER, "port": 5080, "channels": 10000,
                        "emergency_reserve": 10, "dids": ["1000", "12349"]}],
            "routing": {"numbers": [
                {"number": "1000", "name": "Hotline", "action": "flow", "flow": "normal"},
                {"number": "12349", "name": "Emergency button", "action": "flow", "flow": "urgent",
                 "emergency": True}]},
            "queues": [{"name": "hotline"}, {"name": "emergency"}],
            "accounts": [{"username": a, "password": f"secret{a}", "kind": "phone",
                          "contact": f"sip:{a}@127.0.0.1:{phone_port}"} for a in accounts],
            "operators": [{"name": f"op{a}", "phone": a, "skills": {"cmn": 9},
                           "queues": {"hotline": 5, "emergency": 10}, "wrap_up": 0, "start": "available"}
                          for a in accounts],
            "acd": {"ring_timeout": 15, "keepalive": 0},
        }
        self.config_path = work / "bench.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = work / "engine.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Engine:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callcenter.cli", "serve", "--config", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b'"ivr.started"' in self.log_path.read_bytes():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"engine did not start:\n{self.log_path.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def events(self, since: int = 0) -> Iterator[dict[str, Any]]:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def at(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"]).timestamp()


# -- SIPp -------------------------------------------------------------------------------------------------
def sipp(work: Path, name: str, scenario: Path, args: list[str]) -> subprocess.Popen[bytes]:
    cmd = ["sipp", "-sf", str(scenario), *args, "-nostdin", "-trace_stat", "-stf", str(work / f"{name}.csv"),
           "-fd", "1", "-trace_err", "-error_file", str(work / f"{name}.err")]
    return subprocess.Popen(cmd, cwd=work, stdout=open(work / f"{name}.out", "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def stats(work: Path, name: str) -> dict[str, float]:
    path = work / f"{name}.csv"
    rows = list(csv.DictReader(path.open(), delimiter=";")) if path.exists() else []
    if not rows:
        out = (work / f"{name}.out").read_text(errors="replace")[-2000:] if (work / f"{name}.out").exists() else ""
        raise SystemExit(f"sipp {name} produced no statistics:\n{out}")
    last = rows[-1]

    def col(column: str) -> float:
        try:
            return float(last.get(column, "0") or 0)
        except ValueError:
            return 0.0

    return {"ok": col("SuccessfulCall(C)"), "failed": col("FailedCall(C)"), "retrans": col("Retransmissions(C)")}


def start_phones(work: Path, name: str, port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    args = ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port), "-mp", str(free_port()), "-max_socket", "1000"]
    if log is not None:
        args += ["-trace_logs", "-log_file", str(log)]
    proc = sipp(work, name, PHONE, args)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit(f"the phones' sipp exited: {(work / f'{name}.out').read_text()[-2000:]}")
    return proc


def stop_sipp(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)  # finish the calls in progress, then exit
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def callers(work: Path, name: str, engine: Engine, *, service: str, number: str, rate: float, calls: int,
            hold_ms: int, port: int) -> subprocess.Popen[bytes]:
    args = ["-key", "caller", number, "-s", service, "-i", CARRIER, "-mi", CARRIER, "-p", str(port),
            "-mp", str(free_port(CARRIER)), "-r", f"{rate:g}", "-m", str(calls), "-l", str(max(calls, 10)),
            "-d", str(hold_ms), "-recv_timeout", "20000", "-max_socket", "1000",
            "-timeout", str(int(calls / rate + hold_ms / 1000 + 40)), "-timeout_error",
            f"127.0.0.1:{engine.sip_port}"]
    return sipp(work, name, CALLER, args)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the throughput step ----------------------------------------------------------------------------------
def throughput(work: Path, engine: Engine, phones: subprocess.Popen[bytes], rate: int, seconds: int,
               profile: Path | None = None) -> dict[str, float]:
    calls = rate * seconds
    name = f"callers_{rate}"
    since = engine.log_size()
    cpu0, busy0, t0 = cpu_seconds(engine.pid), machine_busy(), time.monotonic()
    phones0 = process_cpu(phones.pid)
    proc = callers(work, name, engine, service="1000", number=NORMAL_NUMBER, rate=rate, calls=calls,
                   hold_ms=1000, port=5080)
    spy = None
    if profile is not None:  # py-spy samples the engine while the calls come in
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(engine.pid),
                                "-d", str(seconds), "-r", "200", "-f", "raw", "-o", str(profile), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    sipp_cpu = 0.0
    while proc.poll() is None and time.monotonic() - t0 < seconds + 120:
        sipp_cpu = process_cpu(proc.pid)  # its last reading before it exits
        time.sleep(0.2)
    proc.wait(5)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(engine.pid) - cpu0
    others = machine_busy() - busy0 - cpu - sipp_cpu - (process_cpu(phones.pid) - phones0)
    if spy is not None:
        spy.wait(60)
    result = stats(work, name)
    time.sleep(1.0)  # the last log lines
    queued: dict[str, float] = {}
    waits: list[float] = []
    connected = 0
    for event in engine.events(since):
        name_ = event.get("event")
        if name_ == "acd.call.queued":
            queued.setdefault(event["call_id"], at(event))
        elif name_ == "acd.call.connected":
            connected += 1
            if event["call_id"] in queued:
                waits.append(at(event) - queued[event["call_id"]])
    return {"rate": rate, "calls": calls, **result, "cpu": cpu / wall if wall else 0.0, "connected": connected,
            "others": max(0.0, others / wall) if wall else 0.0,
            "p50": percentile(waits, 50) * 1000, "p99": percentile(waits, 99) * 1000,
            "max": max(waits, default=float("nan")) * 1000}


# -- the pre-emption step ---------------------------------------------------------------------------------
def preemption(work: Path, busy: int, emergencies: int) -> dict[str, Any]:
    phone_port = free_port()
    engine = Engine(work / "engine-preempt", busy, phone_port).start()
    phone_log = work / "phones-preempt.log"
    phones = start_phones(work, "phones_preempt", phone_port, log=phone_log)
    try:
        spacing = 0.2
        hold_normal = int((emergencies * spacing + 15) * 1000)
        normal = callers(work, "normal_preempt", engine, service="1000", number=NORMAL_NUMBER, rate=busy,
                         calls=busy, hold_ms=hold_normal, port=5080)
        deadline = time.monotonic() + 20
        while sum(1 for e in engine.events() if e.get("event") == "acd.call.connected") < busy:
            if time.monotonic() > deadline:
                raise SystemExit("the normal calls did not all reach an operator")
            time.sleep(0.1)
        urgent = callers(work, "emergency_preempt", engine, service="12349", number=EMERGENCY_NUMBER,
                         rate=1 / spacing, calls=emergencies, hold_ms=1000, port=5082)
        urgent.wait(emergencies * spacing + 60)
        normal.wait(hold_normal / 1000 + 60)
        time.sleep(1.0)
        stop_sipp(phones)
        events = list(engine.events())
    finally:
        stop_sipp(phones)
        engine.stop()
    offered = {e["call_id"]: at(e) for e in events if e.get("event") == "call.offered"
               and e.get("caller") == EMERGENCY_NUMBER}
    ringing = {e["call_id"]: (at(e), e["phone_call_id"]) for e in events if e.get("event") == "acd.phone.ringing"
               and e["call_id"] in offered}
    arrived: dict[str, float] = {}
    for line in phone_log.read_text().splitlines() if phone_log.exists() else []:
        parts = line.split()
        if len(parts) >= 5 and parts[3] == "INVITE":
            arrived.setdefault(parts[4], float(parts[2]))
    to_ringing = [(ringing[c][0] - offered[c]) * 1000 for c in offered if c in ringing]
    to_phone = [(arrived[ringing[c][1]] - offered[c]) * 1000 for c in offered
                if c in ringing and ringing[c][1] in arrived]
    preempts = sum(1 for e in events if e.get("event") == "acd.preempt")
    reconnected = sum(1 for e in events if e.get("event") == "acd.call.connected" and e.get("first") is False)
    return {"emergencies": emergencies, "rang": len(to_ringing), "preempted": preempts, "reconnected": reconnected,
            "ringing": to_ringing, "phone": to_phone, "normal": stats(work, "normal_preempt"),
            "urgent": stats(work, "emergency_preempt"), "phones": stats(work, "phones_preempt")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, nargs="+", default=[150, 200], help="calls/s, one step per rate")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per rate step")
    parser.add_argument("--operators", type=int, default=300, help="operators (phones) for the throughput steps")
    parser.add_argument("--emergencies", type=int, default=50, help="emergency calls of the pre-emption step")
    parser.add_argument("--busy", type=int, default=20, help="operators, all talking, of the pre-emption step")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON lines")
    parser.add_argument("--keep", type=Path, help="keep the logs and SIPp files in this folder")
    parser.add_argument("--profile", type=Path, help="py-spy the engine during the first rate (raw stacks file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-acd-") as tmp:
        work = Path(tmp)
        if args.keep is not None:
            work = args.keep.resolve()
            work.mkdir(parents=True, exist_ok=True)
        print(f"{os.cpu_count()} cores; throughput: {args.operators} operators, {args.seconds} s per rate, "
              f"hold 1 s per call")
        if args.rate and args.seconds > 0:
            phone_port = free_port()
            engine = Engine(work / "engine", args.operators, phone_port).start()
            phones = start_phones(work, "phones", phone_port)
            try:
                header = ("rate/s", "calls", "ok", "failed", "retrans", "connected", "CPU", "others", "q→c p50",
                          "q→c p99", "clean")
                print("{:>6} {:>6} {:>6} {:>6} {:>7} {:>9} {:>5} {:>6} {:>9} {:>9} {:>5}".format(*header))
                for index, rate in enumerate(args.rate):
                    row = throughput(work, engine, phones, rate, args.seconds, args.profile if index == 0 else None)
                    clean = row["failed"] == 0 and row["retrans"] == 0 and row["ok"] == row["calls"] \
                        and row["connected"] == row["calls"]
                    print(f"{rate:>6} {row['calls']:>6} {row['ok']:>6.0f} {row['failed']:>6.0f} "
                          f"{row['retrans']:>7.0f} {row['connected']:>9} {row['cpu'] * 100:>4.0f}% "
                          f"{row['others'] * 100:>5.0f}% "
                          f"{row['p50']:>6.1f} ms {row['p99']:>6.1f} ms {'yes' if clean else 'NO':>5}")
                    if args.json:
                        print(json.dumps({"step": "throughput", **row, "clean": clean}))
                    time.sleep(3)  # let the last calls end before the next step
            finally:
                stop_sipp(phones)
                engine.stop()
            phone_stats = stats(work, "phones")
            print(f"phones (one SIPp UAS): {phone_stats['ok']:.0f} calls ok, {phone_stats['failed']:.0f} failed, "
                  f"{phone_stats['retrans']:.0f} retransmissions")
        if args.emergencies > 0:
            result = preemption(work, args.busy, args.emergencies)
            print(f"\npre-emption: {args.busy} operators talking to {args.busy} normal calls, "
                  f"{args.emergencies} emergencies 200 ms apart, 1 s each")
            print("{:<44} {:>8} {:>8} {:>8}".format("latency from the emergency's INVITE to", "p50", "p99", "max"))
            for label, values in (("acd.phone.ringing (engine log)", result["ringing"]),
                                  ("INVITE at the phone (phone's SIPp log)", result["phone"])):
                print(f"{label:<44} {statistics.median(values) if values else float('nan'):>5.1f} ms "
                      f"{percentile(values, 99):>5.1f} ms {max(values, default=float('nan')):>5.1f} ms")
            normal, urgent, phones_ = result["normal"], result["urgent"], result["phones"]
            print(f"emergencies rang an operator: {result['rang']}/{args.emergencies}; pre-emptions: "
                  f"{result['preempted']}; victims reconnected: {result['reconnected']}")
            print(f"normal callers: {normal['ok']:.0f} ok, {normal['failed']:.0f} failed (a BYE from the engine "
                  f"fails one); emergencies: {urgent['ok']:.0f} ok, {urgent['failed']:.0f} failed; "
                  f"phones: {phones_['failed']:.0f} failed; retransmissions: "
                  f"{normal['retrans'] + urgent['retrans'] + phones_['retrans']:.0f}")
            if args.json:
                print(json.dumps({"step": "preemption", **{k: v for k, v in result.items()
                                                           if k not in ("ringing", "phone")},
                                  "ringing_p50": statistics.median(result["ringing"]) if result["ringing"] else None,
                                  "ringing_p99": percentile(result["ringing"], 99),
                                  "phone_p99": percentile(result["phone"], 99)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
