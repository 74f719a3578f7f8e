"""Benchmark the sans-I/O SIP parser: messages/s parsed and serialised for a typical INVITE with SDP.

Usage: ``.venv/bin/python tools/bench_parser.py [--runs 5] [--seconds 1.0]``. Prints the median of the runs.
"Parsed" means ``parse_message`` (which validates Via, From, To, CSeq, Call-ID, Contact and the
scalar headers); "serialised" means ``bytes(message)``; "both" is a parse followed by serialising a
100 Trying built with ``response_for`` — roughly what the engine does per received INVITE.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callcenter.sip.message import parse_message, response_for

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    "INVITE sip:+4930123456@callcenter.example.com;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK4b43c2ff8.1;received=198.51.100.7\r\n"
    "Max-Forwards: 69\r\n"
    'From: "Alice Example" <sip:alice@example.org>;tag=1928301774\r\n'
    "To: <sip:+4930123456@callcenter.example.com;user=phone>\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.org\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    "Record-Route: <sip:proxy.example.org;lr>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: ExamplePhone/1.0\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n"
).encode() + SDP


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over roughly ``seconds``."""
    batch = 200
    count = 0
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        count += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each run")
    args = ap.parse_args(argv)

    msg = parse_message(INVITE)
    trying = response_for(msg, 100)  # type: ignore[arg-type]

    def parse() -> object:
        return parse_message(INVITE)

    def serialise() -> object:
        return bytes(msg)

    def both() -> object:
        req = parse_message(INVITE)
        return bytes(response_for(req, 100))  # type: ignore[arg-type]

    assert bytes(trying)
    print(f"typical INVITE with SDP: {len(INVITE)} bytes, median of {args.runs} runs of {args.seconds:.1f}s")
    for name, fn in (("parse", parse), ("serialise", serialise), ("parse+100", both)):
        rates = [_rate(fn, args.seconds) for _ in range(args.runs)]
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"  {name:<10} {statistics.median(rates):>10,.0f} messages/s  (runs: {runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
