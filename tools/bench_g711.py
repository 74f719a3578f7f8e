"""Benchmark G.711: 20 ms frames (160 samples) per second encoded, decoded and transcoded.

Usage: ``.venv/bin/python tools/bench_g711.py [--runs 5] [--seconds 0.5]``. Prints the median of the
runs for PCMU and PCMA encode (int16 → bytes), decode (bytes → int16) and transcode (PCMU↔PCMA), and
how many concurrent calls one core could serve at that rate (50 frames/s per direction per call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callcenter.media.g711 import SAMPLES_PER_FRAME, alaw_decode, alaw_encode, transcode, ulaw_decode, ulaw_encode


def frames_per_second(operation: Callable[[], object], seconds: float) -> float:
    """Run ``operation`` for about ``seconds`` and return calls per second."""
    batch, done = 1000, 0
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            operation()
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    pcm = (np.sin(np.arange(SAMPLES_PER_FRAME) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    pcm = pcm + rng.integers(-300, 300, SAMPLES_PER_FRAME, dtype=np.int16)
    ulaw, alaw = ulaw_encode(pcm), alaw_encode(pcm)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("PCMU encode", lambda: ulaw_encode(pcm)),
        ("PCMU decode", lambda: ulaw_decode(ulaw)),
        ("PCMA encode", lambda: alaw_encode(pcm)),
        ("PCMA decode", lambda: alaw_decode(alaw)),
        ("PCMU→PCMA transcode", lambda: transcode(ulaw, "PCMU", "PCMA")),
        ("PCMA→PCMU transcode", lambda: transcode(alaw, "PCMA", "PCMU")),
    ]
    print(f"G.711, {SAMPLES_PER_FRAME}-sample frames, median of {args.runs} runs of {args.seconds}s")
    for label, operation in cases:
        rates = [frames_per_second(operation, args.seconds) for _ in range(args.runs)]
        rate = statistics.median(rates)
        print(f"  {label:<22} {rate:>12,.0f} frames/s  {1e6 / rate:6.2f} µs/frame  ~{rate / 50:>9,.0f} call-legs")


if __name__ == "__main__":
    main()
