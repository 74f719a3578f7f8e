#!/usr/bin/env python3
"""IVR figures to compare run to run: flow runner throughput (simulated calls through the shipped flows, no
audio), lint time per flow, and TTS render time (cold: espeak-ng; warm: memory cache; disk: a new process's
first use). Medians of several rounds; the machine is noisy, so compare ratios.

    .venv/bin/python tools/bench_ivr.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callcenter.config import load_config  # noqa: E402
from callcenter.ivr.commands import load_flows  # noqa: E402
from callcenter.ivr.context import CallerProfile, CallFacts  # noqa: E402
from callcenter.ivr.lint import LintEnvironment, lint_text  # noqa: E402
from callcenter.ivr.service import fixed_texts  # noqa: E402
from callcenter.ivr.simulator import simulate  # noqa: E402
from callcenter.ivr.tts import SpeechSynthesizer  # noqa: E402
from callcenter.logs import configure_logging  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_logging("error", "console", sys.stderr)
    config = load_config(REPO / "config" / "callcenter.yaml", overrides={"flows.directory": str(REPO / "ivr_flows")})
    flows, errors = load_flows(config)
    assert not errors
    zone = ZoneInfo("Asia/Shanghai")
    elder = CallerProfile(known=True, elder_id=1, title="王奶奶", language="cmn", family_numbers=("13900139001",))
    cases = [("terminal", CallFacts("1", "12349", "emergency", True), []),
             ("hotline", CallFacts("1", "1000", "hotline"), ["5", "2"]),
             ("hotline", CallFacts("1", "1000", "hotline"), ["2", "1"])]
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for i in range(args.calls):
            flow, facts, digits = cases[i % len(cases)]
            at = dt.datetime(2026, 11, 23, 10 if i % 2 else 23, 0, tzinfo=zone)
            simulate(flows, flow, caller=elder, facts=facts, at=at, digits=digits)
        rates.append(args.calls / (time.perf_counter() - start))
    print(f"runner: {statistics.median(rates):,.0f} simulated calls/s (median of {args.rounds}; "
          f"min {min(rates):,.0f}, max {max(rates):,.0f})")

    env = LintEnvironment(flows_dir=REPO / "ivr_flows", queues=frozenset(q.name for q in config.queues))
    texts = {p.stem: p.read_text(encoding="utf-8") for p in (REPO / "ivr_flows").glob("*.yaml")}
    lint_ms = []
    for _ in range(args.rounds * 10):
        start = time.perf_counter()
        for name, text in texts.items():
            lint_text(text, name, env, name=name)
        lint_ms.append((time.perf_counter() - start) * 1000 / len(texts))
    print(f"lint: {statistics.median(lint_ms):.2f} ms per flow file (median)")

    items = sorted({t for f in flows.values() for t in fixed_texts(f)})
    with tempfile.TemporaryDirectory() as tmp:
        tts = SpeechSynthesizer(Path(tmp))
        start = time.perf_counter()
        prompts = tts.render_many(items)
        cold = (time.perf_counter() - start) * 1000
        audio = sum(p.duration for p in prompts)
        start = time.perf_counter()
        for _ in range(100):
            tts.render_many(items)
        warm = (time.perf_counter() - start) * 1000 / 100
        tts.close()
        disk = SpeechSynthesizer(Path(tmp))
        start = time.perf_counter()
        disk.render_many(items)
        from_disk = (time.perf_counter() - start) * 1000
        disk.close()
    print(f"tts: {len(items)} prompts ({audio:.1f} s of audio): cold {cold:.0f} ms ({cold / len(items):.1f} ms each, "
          f"{audio * 1000 / cold:.0f}× real time), warm {warm:.3f} ms for all, from disk {from_disk:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
