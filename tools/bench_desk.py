#!/usr/bin/env python3
"""Desktop benchmark: screen-pop latency with 100,000 elders, and the desktop's API under 50 operators. 127.0.0.1 only.

**Pop latency.** `callcenter serve` with COUNT generated elders (`callcenter elders generate`, cached between runs
in the temp folder), OPERATORS operators available on desk phones (one SIPp UAS answering at once, as in
tools/bench_acd.py), each logged in to the desktop with an SSE stream (`GET /api/desk/events`, aiohttp in this
process: the browser's side). A SIPp caller from the "carrier" 127.0.0.2 places CALLS calls at RATE/s to the
emergency button's DID 12349, each From a random elder's phone number, and logs the moment it sends each INVITE.
Measured per call: INVITE sent (SIPp) → the ``offer`` event with the complete pop read off the operator's stream,
and the engine's part of it (INVITE received → offer on the stream; ACD offer → pop sent, from the engine log).
The flow of 12349 here answers and queues at once: the shipped terminal flow first says a short sentence
(under 2 s, on purpose) which is not the pop's latency (``--shipped-flow`` measures with it anyway).

**50 operators.** OPERATORS operator logins, each with an SSE stream and a loop of what a desk does
(``GET /api/desk/current``, an elder search, a profile view, ``POST /api/records``, the elder's work orders; every
fifth round a state change), back to back (a saturation test) or one round per PACE seconds, plus SUPERVISORS
wallboard streams. Printed: requests/s, p50/p99 per route, and the
push delay of state changes (request sent → the ``operator`` event at the operator's own stream and at every
supervisor's), for SECONDS seconds.

    .venv/bin/python tools/bench_desk.py                      # 100k elders, 300 calls at 5/s, then 50 operators 20 s
    .venv/bin/python tools/bench_desk.py --elders 100000 --calls 500 --rate 8 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from argon2 import PasswordHasher

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from bench_acd import CALLER, PHONE, Engine, at, machine_busy, percentile, sipp, stats, stop_sipp  # noqa: E402
from bench_sip import cpu_seconds, free_port  # noqa: E402

CARRIER = "127.0.0.2"
PASSWORD = "bench-desk"
FIRST_ACCOUNT = 7000
DIRECT_FLOW = """\
flow: urgent
description: the emergency button straight into the emergency queue
start: answer
nodes:
  answer: {type: answer, next: wait}
  wait: {type: queue, queue: emergency, priority: emergency, level: 9}
"""


# -- the engine -------------------------------------------------------------------------------------------
class DeskEngine(Engine):
    """bench_acd's engine with the desktop: operators with logins, the directory, one emergency route."""

    def __init__(self, work: Path, *, phones: int, operators: int, supervisors: int, phone_port: int,
                 shipped_flow: bool) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port()
        self.http_port = free_port()
        self.phone_port = phone_port
        flows = work / "flows"
        flows.mkdir(exist_ok=True)
        if shipped_flow:
            shutil.copy(REPO / "ivr_flows" / "terminal.yaml", flows / "terminal.yaml")
        else:
            (flows / "urgent.yaml").write_text(DIRECT_FLOW)
        secret = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
        accounts = [str(FIRST_ACCOUNT + i) for i in range(phones)]
        self.operators = [f"op{i}" for i in range(operators)]
        self.users = [f"u{i}" for i in range(operators)]
        self.supervisors = [f"s{i}" for i in range(supervisors)]
        config = {
            "engine": {"data_dir": str(work / "data"), "max_calls": 2000, "shutdown_grace": 3},
            "sip": {"listen": [f"udp:127.0.0.1:{self.sip_port}"], "flood": {"rate": 100000, "burst": 100000}},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "media": {"address": "127.0.0.1", "rtp_port_min": 30000, "rtp_port_max": 44000},
            "recordings": {"root": str(work / "recordings")},
            "logging": {"level": "info", "format": "json"},
            "flows": {"directory": str(flows), "watch": False,
                      "tts_cache": str(Path(tempfile.gettempdir()) / "callcenter-tests-tts")},
            "directory": {"seed": "", "generate": 0},
            "trunks": [{"name": "carrier", "host": CARRIER, "port": 5080, "channels": 1000, "emergency_reserve": 10,
                        "dids": ["12349"]}],
            "routing": {"numbers": [{"number": "12349", "name": "Emergency button", "action": "flow",
                                     "flow": "terminal" if shipped_flow else "urgent", "button": "emergency",
                                     "emergency": True}]},
            "queues": [{"name": "emergency", "strategy": "longest_idle"}],
            "accounts": [{"username": a, "password": f"secret{a}", "kind": "phone",
                          "contact": f"sip:{a}@127.0.0.1:{phone_port}"} for a in accounts],
            "operators": [{"name": name, "phone": accounts[i] if i < phones else None, "user": self.users[i],
                           "queues": {"emergency": 10}, "skills": {"cmn": 9}, "wrap_up": 0,
                           "start": "available" if i < phones else "logged_out"}
                          for i, name in enumerate(self.operators)],
            "users": [{"username": u, "password_hash": secret, "role": "operator"} for u in self.users]
            + [{"username": s, "password_hash": secret, "role": "supervisor"} for s in self.supervisors],
            "acd": {"ring_timeout": 15, "keepalive": 0},
        }
        self.config_path = work / "bench.yaml"
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.log_path = work / "engine.log"
        self.proc = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def database(self) -> Path:
        return self.work / "data" / "callcenter.db"

    def start(self) -> DeskEngine:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callcenter.cli", "serve", "--config", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if b'"engine.started"' in self.log_path.read_bytes():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"engine did not start:\n{self.log_path.read_text()[-3000:]}")


def prepare_elders(engine: DeskEngine, count: int, seed: int) -> float:
    """The bench's database with ``count`` generated elders (copied from a cache made by the first run); the
    seconds generation took (0 from the cache)."""
    cache = Path(tempfile.gettempdir()) / f"callcenter-bench-desk-{count}-{seed}.db"
    engine.database.parent.mkdir(parents=True, exist_ok=True)
    if cache.exists():
        shutil.copy(cache, engine.database)
        return 0.0
    started = time.monotonic()
    command = [sys.executable, "-m", "callcenter.cli", "elders", "generate", "--count", str(count), "--seed",
               str(seed), "--config", str(engine.config_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command[2:])}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    seconds = time.monotonic() - started
    shutil.copy(engine.database, cache)
    return seconds


def sample_elders(database: Path, n: int, seed: int) -> list[tuple[int, str, str]]:
    """(elder id, name, a phone number) of ``n`` random elders, read straight from the database file."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        total = db.execute("select count(*) from elders").fetchone()[0]
        rows = db.execute("select e.id, e.name, min(p.number) from elders e join elder_phones p on p.elder_id = e.id "
                          "where p.kind != 'terminal' group by e.id").fetchall()
    random.Random(seed).shuffle(rows)
    if total == 0 or not rows:
        raise SystemExit("the directory is empty")
    return rows[:n]


# -- the desktop's side: logins and streams ----------------------------------------------------------------
class Desk:
    """One logged-in browser: a session with its cookie and CSRF token, and optionally its SSE stream."""

    def __init__(self, base: str, username: str) -> None:
        self.base = base
        self.username = username
        self.session = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True),  # an IP address
                                             timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        self.csrf = ""
        self.events: dict[str, list[tuple[float, Any]]] = defaultdict(list)  # kind → [(arrival, data)]
        self.waiters: list[tuple[Any, asyncio.Future[float]]] = []
        self.reader: asyncio.Task[None] | None = None

    async def login(self) -> None:
        page = await (await self.session.get("/login")).text()
        token = re.search(r'name="login_token" value="([^"]+)"', page)
        assert token, "no login token"
        response = await self.session.post("/login", data={"username": self.username, "password": PASSWORD,
                                                           "login_token": token.group(1)}, allow_redirects=False)
        assert response.status == 303, (self.username, response.status)
        html = await (await self.session.get("/api/docs")).text()
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert csrf, "no CSRF token"
        self.csrf = csrf.group(1)

    async def listen(self) -> None:
        response = await self.session.get("/api/desk/events")
        assert response.status == 200, await response.text()
        ready = asyncio.get_running_loop().create_future()
        self.reader = asyncio.ensure_future(self._read(response, ready))
        await ready

    async def _read(self, response: aiohttp.ClientResponse, ready: asyncio.Future[None]) -> None:
        kind = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                now = time.time()
                data = json.loads(line[6:])
                self.events[kind].append((now, data))
                if kind == "hello" and not ready.done():
                    ready.set_result(None)
                for item in list(self.waiters):
                    match, future = item
                    if not future.done() and match(kind, data):
                        future.set_result(now)
                        self.waiters.remove(item)

    def wait_for(self, match: Any) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((match, future))
        return future

    async def request(self, method: str, path: str, timings: dict[str, list[float]], route: str,
                      **kwargs: Any) -> Any:
        headers = {"X-CSRF-Token": self.csrf} if method != "GET" else {}
        started = time.perf_counter()
        async with self.session.request(method, path, headers=headers, **kwargs) as response:
            body = await response.read()
        timings[route].append(time.perf_counter() - started)
        if response.status >= 400 and response.status != 409:
            timings["errors"].append(response.status)
        return json.loads(body) if body and response.content_type == "application/json" else None

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.session.close()


# -- pop latency -------------------------------------------------------------------------------------------
def start_phones(work: Path, port: int, ring_ms: int) -> subprocess.Popen[bytes]:
    """tools/sipp/acd_phone.xml ringing ``ring_ms`` before it answers (a person reaches for the handset: the
    offer, and its pop, is on the desktop meanwhile)."""
    text = PHONE.read_text()
    ringing = text.index("</send>", text.index("SIP/2.0 180 Ringing")) + len("</send>")
    scenario = work / "phone.xml"
    scenario.write_text(text[:ringing] + f'\n\n  <pause milliseconds="{ring_ms}"/>\n' + text[ringing:])
    proc = sipp(work, "phones", scenario, ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port), "-mp",
                                           str(free_port()), "-max_socket", "1000"])
    time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit(f"the phones' sipp exited: {(work / 'phones.out').read_text()[-2000:]}")
    return proc


def caller_scenario(work: Path) -> Path:
    """tools/sipp/acd_caller.xml calling From the injection file's number, logging the moment each INVITE goes."""
    text = CALLER.read_text().replace("[caller]", "[field0]")
    first_send = text.index("<send")
    text = (text[:first_send] + '<nop><action><log message="SENT [timestamp] INVITE [call_id]"/></action></nop>\n  '
            + text[first_send:])
    path = work / "pop_caller.xml"
    path.write_text(text)
    return path


async def pop_latency(engine: DeskEngine, elders: list[tuple[int, str, str]], *, calls: int, rate: float,
                      hold_ms: int, phones: int) -> dict[str, Any]:
    work = engine.work
    desks = [Desk(engine.base, user) for user in engine.users[:phones]]
    await asyncio.gather(*(d.login() for d in desks))
    await asyncio.gather(*(d.listen() for d in desks))
    numbers = [number for _, _, number in elders]
    own0 = time.process_time()
    inject = work / "callers.csv"
    inject.write_text("SEQUENTIAL\n" + "".join(f"{numbers[i % len(numbers)]};\n" for i in range(calls)))
    since = engine.log_size()
    cpu0, t0, busy0 = cpu_seconds(engine.pid), time.monotonic(), machine_busy()
    log_file = work / "pop_caller.log"
    proc = sipp(work, "pop_callers", caller_scenario(work), [
        "-inf", str(inject), "-s", "12349", "-i", CARRIER, "-mi", CARRIER, "-p", "5080", "-mp", str(free_port(CARRIER)),
        "-r", f"{rate:g}", "-m", str(calls), "-l", str(max(10, calls)), "-d", str(hold_ms), "-recv_timeout", "20000",
        "-timeout", str(int(calls / rate + 60)), "-timeout_error", "-trace_logs", "-log_file", str(log_file),
        f"127.0.0.1:{engine.sip_port}"])
    sipp_cpu = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            sipp_cpu = cpu_seconds(proc.pid)
        await asyncio.sleep(0.2)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(engine.pid) - cpu0
    others = max(0.0, machine_busy() - busy0 - cpu - sipp_cpu - time.process_time() + own0)
    await asyncio.sleep(1.0)
    sent: dict[str, float] = {}
    for line in log_file.read_text().splitlines() if log_file.exists() else []:
        parts = line.split()
        if parts[:1] == ["SENT"] and "INVITE" in parts:
            epoch = next(float(p) for p in parts if re.fullmatch(r"\d{9,}\.\d+", p))
            sent.setdefault(parts[-1], epoch)
    offers: dict[str, tuple[float, dict[str, Any]]] = {}
    for desk in desks:
        for arrival, data in desk.events["offer"]:
            offers.setdefault(data["call_id"], (arrival, data))
    await asyncio.gather(*(d.close() for d in desks))
    received: dict[str, float] = {}
    acd_offer: dict[str, float] = {}
    pop_sent: dict[str, float] = {}
    for event in engine.events(since):
        name, call_id = event.get("event"), event.get("call_id")
        if name == "call.offered":
            received.setdefault(call_id, at(event))
        elif name == "acd.call.offered":
            acd_offer.setdefault(call_id, at(event))
        elif name == "desk.offer.sent":
            pop_sent.setdefault(call_id, at(event))
    total = [(offers[c][0] - sent[c]) * 1000 for c in sent if c in offers]
    engine_part = [(offers[c][0] - received[c]) * 1000 for c in received if c in offers]
    pop_part = [(pop_sent[c] - acd_offer[c]) * 1000 for c in acd_offer if c in pop_sent]
    known = sum(1 for _, data in offers.values() if not data["pop"]["unknown"])
    return {"calls": calls, "sent": len(sent), "offers": len(offers), "known": known, "total": total,
            "engine": engine_part, "pop": pop_part, "sipp": stats(work, "pop_callers"), "cpu": cpu / wall,
            "others": others / wall}


# -- 50 operators -----------------------------------------------------------------------------------------
async def operators_load(engine: DeskEngine, elders: list[tuple[int, str, str]], *, seconds: float,
                         operators: int, pace: float) -> dict[str, Any]:
    desks = [Desk(engine.base, user) for user in engine.users[:operators]]
    watchers = [Desk(engine.base, s) for s in engine.supervisors]
    everybody = desks + watchers
    for start in range(0, len(everybody), 10):  # argon2 logins, ten at a time
        await asyncio.gather(*(d.login() for d in everybody[start:start + 10]))
    await asyncio.gather(*(d.listen() for d in everybody))
    timings: dict[str, list[float]] = defaultdict(list)
    own_delay: list[float] = []
    sent_at: dict[tuple[str, str], float] = {}
    rng = random.Random(7)
    stop = time.monotonic() + seconds
    for desk, name in zip(desks, engine.operators, strict=False):
        await desk.request("POST", f"/api/operators/{name}/state", timings, "setup", json={"state": "available"})

    async def operator(index: int, desk: Desk) -> None:
        name = engine.operators[index]
        rounds = 0
        await asyncio.sleep(pace * index / operators)  # spread the paced rounds
        while time.monotonic() < stop:
            round_started = time.monotonic()
            elder_id, elder_name, number = rng.choice(elders)
            await desk.request("GET", "/api/desk/current", timings, "GET /api/desk/current")
            query = number if rounds % 2 else elder_name[:2]
            await desk.request("GET", "/api/elders", timings, "GET /api/elders?q=", params={"q": query})
            await desk.request("GET", f"/api/elders/{elder_id}", timings, "GET /api/elders/{id}")
            await desk.request("POST", "/api/records", timings, "POST /api/records",
                               json={"elder_id": elder_id, "disposition": "咨询已解答", "notes": "bench"})
            await desk.request("GET", "/api/work-orders", timings, "GET /api/work-orders?elder_id=",
                               params={"elder_id": str(elder_id)})
            if rounds % 5 == 4:  # a state change: how fast does it come back on the push channel?
                reason = f"b{index}x{rounds}"
                arrival = desk.wait_for(lambda kind, data, r=reason: kind == "operator" and data.get("reason") == r)
                sent_at[(name, reason)] = time.time()
                await desk.request("POST", f"/api/operators/{name}/state", timings, "POST /api/operators/{n}/state",
                                   json={"state": "paused", "reason": reason})
                try:
                    own_delay.append((await asyncio.wait_for(arrival, 5.0) - sent_at[(name, reason)]) * 1000)
                except TimeoutError:
                    timings["errors"].append(0)
                await desk.request("POST", f"/api/operators/{name}/state", timings, "POST /api/operators/{n}/state",
                                   json={"state": "available"})
            rounds += 1
            await asyncio.sleep(max(0.0, pace - (time.monotonic() - round_started)))

    cpu0, t0, busy0 = cpu_seconds(engine.pid), time.monotonic(), machine_busy()
    own0 = time.process_time()
    await asyncio.gather(*(operator(i, d) for i, d in enumerate(desks)))
    wall = time.monotonic() - t0
    cpu = cpu_seconds(engine.pid) - cpu0
    bench_cpu = time.process_time() - own0
    others = max(0.0, machine_busy() - busy0 - cpu - bench_cpu)  # the machine may be shared
    await asyncio.sleep(0.5)
    fan_out = []
    for watcher in watchers:
        for arrival, data in watcher.events["operator"]:
            key = (data["name"], data.get("reason") or "")
            if key in sent_at:
                fan_out.append((arrival - sent_at[key]) * 1000)
    await asyncio.gather(*(d.close() for d in everybody))
    requests = sum(len(v) for k, v in timings.items() if k not in ("errors", "setup"))
    return {"wall": wall, "requests": requests, "rps": requests / wall, "errors": timings.pop("errors", []),
            "routes": {k: v for k, v in timings.items() if k != "setup"}, "own": own_delay, "fan_out": fan_out,
            "changes": len(sent_at), "cpu": cpu / wall, "bench_cpu": bench_cpu / wall, "others": others / wall}


# -- main ---------------------------------------------------------------------------------------------------
def line(label: str, values: list[float], unit: str = "ms") -> str:
    if not values:
        return f"{label:<46} {'—':>9}"
    return (f"{label:<46} {statistics.median(values):>7.1f} {unit} {percentile(values, 99):>7.1f} {unit} "
            f"{max(values):>7.1f} {unit} {len(values):>6}")


async def bench(args: argparse.Namespace, work: Path) -> int:
    phone_port = free_port()
    engine = DeskEngine(work / "engine", phones=args.phones, operators=max(args.operators, args.phones),
                        supervisors=args.supervisors, phone_port=phone_port, shipped_flow=args.shipped_flow)
    generated = prepare_elders(engine, args.elders, args.seed)
    made = f"generated in {generated:.1f} s" if generated else "from the cache"
    print(f"{os.cpu_count()} cores; {args.elders} elders ({made}); engine on 127.0.0.1")
    engine.start()
    phones = start_phones(work, phone_port, args.ring)
    failed = False
    try:
        elders = sample_elders(engine.database, max(args.calls, 1000), args.seed)
        header = f"{'':<46} {'p50':>10} {'p99':>10} {'max':>10} {'n':>6}"
        if args.calls > 0:
            result = await pop_latency(engine, elders, calls=args.calls, rate=args.rate, hold_ms=args.hold,
                                       phones=args.phones)
            print(f"\npop latency: {args.calls} emergency calls at {args.rate:g}/s from random elders' numbers, "
                  f"{args.phones} operators on SSE ({'shipped terminal flow' if args.shipped_flow else 'direct flow'})")
            print(header)
            print(line("INVITE sent → offer+pop on the desktop", result["total"]))
            print(line("INVITE at the engine → offer+pop on the desktop", result["engine"]))
            print(line("ACD offer → pop sent (engine log, ms resolution)", result["pop"]))
            sipp_ = result["sipp"]
            print(f"INVITEs sent {result['sent']}, offers on the desktop {result['offers']}, elder known in "
                  f"{result['known']}; SIPp: {sipp_['ok']:.0f} ok, {sipp_['failed']:.0f} failed, "
                  f"{sipp_['retrans']:.0f} retransmissions; engine CPU {result['cpu'] * 100:.0f}%, other "
                  f"processes {result['others'] * 100:.0f}% (of one core)")
            p99 = percentile(result["total"], 99)
            ok = result["offers"] == args.calls and p99 < 100
            failed |= not ok
            print(f"budget p99 < 100 ms: {'met' if ok else 'NOT met'} (p99 {p99:.1f} ms)")
            if args.json:
                print(json.dumps({"step": "pop", **{k: v for k, v in result.items() if not isinstance(v, list)},
                                  "p50": statistics.median(result["total"]) if result["total"] else None,
                                  "p99": p99}))
        if args.seconds > 0:
            result = await operators_load(engine, elders, seconds=args.seconds, operators=args.operators,
                                          pace=args.pace)
            paced = f"one round each per {args.pace:g} s" if args.pace else "as fast as they can"
            print(f"\n{args.operators} operators, {paced}, for {result['wall']:.0f} s "
                  f"(+{args.supervisors} supervisors' wallboard streams): {result['requests']} requests, "
                  f"{result['rps']:.0f} requests/s, {len(result['errors'])} errors; "
                  f"engine CPU {result['cpu'] * 100:.0f}%, this client {result['bench_cpu'] * 100:.0f}%, "
                  f"other processes {result['others'] * 100:.0f}% (of one core)")
            print(header)
            for route, values in sorted(result["routes"].items()):
                print(line(route, [v * 1000 for v in values]))
            print(line("state change → own operator event (SSE)", result["own"]))
            print(line("state change → every supervisor's stream (SSE)", result["fan_out"]))
            failed |= bool(result["errors"])
            if args.json:
                print(json.dumps({"step": "operators", "rps": result["rps"], "errors": len(result["errors"]),
                                  "routes": {r: {"p50": statistics.median(v) * 1000, "p99": percentile(v, 99) * 1000}
                                             for r, v in result["routes"].items() if v}}))
    finally:
        stop_sipp(phones)
        engine.stop()
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elders", type=int, default=100_000, help="generated elders in the directory")
    parser.add_argument("--seed", type=int, default=1, help="generator and sampling seed")
    parser.add_argument("--calls", type=int, default=300, help="emergency calls of the pop step (0: skip)")
    parser.add_argument("--rate", type=float, default=5.0, help="calls/s of the pop step")
    parser.add_argument("--hold", type=int, default=300, help="ms each caller stays after being answered")
    parser.add_argument("--phones", type=int, default=15, help="operators on desk phones for the pop step")
    parser.add_argument("--ring", type=int, default=1000, help="ms an operator's phone rings before it answers")
    parser.add_argument("--shipped-flow", action="store_true", help="use ivr_flows/terminal.yaml (says a sentence)")
    parser.add_argument("--operators", type=int, default=50, help="operators of the API step")
    parser.add_argument("--supervisors", type=int, default=5, help="wallboard streams during the API step")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of the API step (0: skip)")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="seconds per round of an operator's API loop (0: back to back, a saturation test)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON lines")
    parser.add_argument("--keep", type=Path, help="keep the logs and SIPp files in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-desk-") as tmp:
        work = Path(tmp)
        if args.keep is not None:
            work = args.keep.resolve()
            work.mkdir(parents=True, exist_ok=True)
        return asyncio.run(bench(args, work))


if __name__ == "__main__":
    sys.exit(main())
