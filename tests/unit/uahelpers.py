"""Test helpers: a UserAgentCore on a Twisted Clock with a fake network, and scripted SIP peers.

Nothing here opens a socket: the engine's ``send(data, addr)`` is captured by :class:`FakeNet`, which
parses every datagram back with :func:`parse_message`; peers build raw requests and feed them through
``ua.receive(parse_message(raw), source)`` exactly as the transport would.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.task import Clock

from callcenter.calls.inbound import Route
from callcenter.calls.model import Call
from callcenter.calls.trunks import Trunk, TrunkSet
from callcenter.calls.ua import Account, RegistrationPolicy, UserAgentCore
from callcenter.net.flood import FloodGuard
from callcenter.sip.digest import Challenge, answer_challenge, parse_challenge, pick_challenge
from callcenter.sip.digest_server import AccountSecret
from callcenter.sip.message import Request, Response, parse_message, response_for

Address = tuple[str, str, int]

DOMAIN = "cc.example.com"
REALM = "cc.example.com"
LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5060
TRUNK_ADDR: Address = ("UDP", "127.0.0.2", 5060)
PHONE_ADDR: Address = ("UDP", "192.0.2.20", 5062)
STRANGER_ADDR: Address = ("UDP", "198.51.100.7", 5070)
START = 1000.0  # the Clock starts here, not at 0 (a falsy timestamp hides bugs)

PASSWORDS = {"1001": "secret1001", "1002": "secret1002"}

ROUTES = [
    Route(number="100", name="hotline"),
    Route(number="112", name="emergency", emergency=True),
    Route(number="200", name="ringing", answer_after=5.0),
    Route(number="300", name="short", max_duration=60.0),
    Route(number="9196", name="echo", action="echo"),
]

PCMU_PCMA_SDP = (
    "v=0\r\n"
    "o=- 4242 1 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
)
PCMA_SDP = PCMU_PCMA_SDP.replace("RTP/AVP 0 8 101", "RTP/AVP 8 101").replace("a=rtpmap:0 PCMU/8000\r\n", "")
G729_SDP = PCMU_PCMA_SDP.replace("RTP/AVP 0 8 101", "RTP/AVP 18").split("a=rtpmap")[0] + "a=rtpmap:18 G729/8000\r\n"


def sdp_bytes(text: str) -> bytes:
    return text.encode()


class FakeNet:
    """The engine's ``send``: every datagram parsed back and kept with its destination."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request | Response, Address]] = []

    def send(self, data: bytes, addr: Address) -> None:
        self.sent.append((parse_message(data), addr))

    def take(self) -> list[tuple[Request | Response, Address]]:
        out, self.sent = self.sent, []
        return out

    def responses(self, status: int | None = None, method: str | None = None) -> list[Response]:
        return [
            m
            for m, _ in self.sent
            if isinstance(m, Response)
            and (status is None or m.status == status)
            and (method is None or m.cseq.method == method)
        ]

    def requests(self, method: str | None = None) -> list[Request]:
        return [m for m, _ in self.sent if isinstance(m, Request) and (method is None or m.method == method)]

    def sent_to(self, method: str) -> list[tuple[Request, Address]]:
        return [(m, a) for m, a in self.sent if isinstance(m, Request) and m.method == method]

    def statuses(self, method: str | None = None) -> list[int]:
        return [r.status for r in self.responses(method=method)]


@dataclass
class FakeMedia:
    port: int
    role: str
    call_id: str
    closed: int = 0
    negotiated: list[Any] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def configure(self, negotiated: Any) -> None:
        self.negotiated.append(negotiated)


class FakeMediaFactory:
    """Stands in for the MediaService: legs with ports, and a log of what was asked of them."""

    def __init__(self, first_port: int = 20000) -> None:
        self.next_port = first_port
        self.created: list[FakeMedia] = []
        self.digits: list[tuple[str, str]] = []

    def open_leg(self, call_id: str, role: str) -> FakeMedia:
        media = FakeMedia(self.next_port, role, call_id)
        self.next_port += 2
        self.created.append(media)
        return media

    def close_leg(self, session: FakeMedia) -> None:
        session.closed += 1

    def music_on_hold(self, session: FakeMedia) -> None:
        session.actions.append("hold_music")

    def echo(self, session: FakeMedia) -> None:
        session.actions.append("echo")

    def bridge(self, caller: FakeMedia, other: FakeMedia) -> None:
        caller.actions.append("bridge")
        other.actions.append("bridge")

    def start_recording(self, caller: FakeMedia) -> None:
        caller.actions.append("record")

    def remote_hold(self, session: FakeMedia, held: bool) -> None:
        session.actions.append("held" if held else "resumed")

    def inject_digit(self, session: FakeMedia, digit: Any) -> None:
        self.digits.append((session.call_id, digit.digit))


@dataclass
class RecordingObserver:
    """A CallObserver that keeps every notice (like the CallRecorder, without a database)."""

    events: list[tuple[str, str]] = field(default_factory=list)
    ended: list[Call] = field(default_factory=list)
    registrations: list[tuple[str, str, int]] = field(default_factory=list)

    def call_started(self, call: Call) -> None:
        self.events.append(("started", call.call_id))

    def call_answered(self, call: Call) -> None:
        self.events.append(("answered", call.call_id))

    def call_ended(self, call: Call) -> None:
        self.events.append(("ended", call.call_id))
        self.ended.append(call)

    def registration_changed(self, aor: str, contact: str, expires: int) -> None:
        self.registrations.append((aor, contact, expires))

    def of(self, call_id: str) -> list[str]:
        return [event for event, cid in self.events if cid == call_id]


@dataclass
class Harness:
    clock: Clock
    net: FakeNet
    ua: UserAgentCore
    trunk: Trunk
    observer: RecordingObserver
    media: FakeMediaFactory

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Advance the clock in small steps so chained timers fire in order."""
        remaining = seconds
        while remaining > 1e-9:
            delta = min(step, remaining)
            self.clock.advance(delta)
            remaining -= delta


def make_harness(
    *,
    trust_registered_source: bool = True,
    authenticate_unknown: bool = True,
    channels: int = 3,
    reserve: int = 1,
    routes: Iterable[Route] = ROUTES,
    nonce_lifetime: float = 300.0,
    trunk_username: str | None = "cc-trunk",
    trunk_password: str | None = "trunk-secret",
    registration: RegistrationPolicy | None = None,
) -> Harness:
    clock = Clock()
    clock.advance(START)
    net = FakeNet()
    trunk = Trunk(
        name="carrier",
        host=TRUNK_ADDR[1],
        port=TRUNK_ADDR[2],
        transport="UDP",
        channels=channels,
        emergency_reserve=reserve,
        dids=frozenset({"100", "112"}),
        username=trunk_username,
        password=trunk_password,
    )
    accounts = [
        Account(username=u, secret=AccountSecret.from_password(p), kind="phone", display_name=None, max_bindings=3)
        for u, p in PASSWORDS.items()
    ]
    ua = UserAgentCore(
        clock,
        net.send,
        domain=DOMAIN,
        realm=REALM,
        accounts=accounts,
        trunks=TrunkSet([trunk]),
        flood=FloodGuard(rate=50, burst=100, ban_seconds=60),
        local_addresses={"UDP": (LOCAL_HOST, LOCAL_PORT)},
        authenticate_unknown=authenticate_unknown,
        trust_registered_source=trust_registered_source,
        registration=registration,
        nonce_lifetime=nonce_lifetime,
        secret=b"k" * 32,
        digest_algorithms=("SHA-256", "MD5"),  # both, to exercise RFC 8760; the engine's default is MD5 only
    )
    media = FakeMediaFactory()
    for handler in (ua.inbound, ua.outbound):
        handler.media = media
        handler.media_address = LOCAL_HOST
    ua.inbound.routes = {r.number: r for r in routes}
    observer = RecordingObserver()
    ua.observers.append(observer)
    return Harness(clock, net, ua, trunk, observer, media)


def authorization_for(
    response: Response,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    header: str = "WWW-Authenticate",
    rfc2069: bool = False,
    nc: int = 1,
) -> str:
    """The Authorization value answering the challenges of ``response`` (SHA-256 preferred)."""
    challenge: Challenge = pick_challenge(parse_challenge(v) for v in response.headers.get_all(header))
    if rfc2069:
        challenge = dataclasses.replace(challenge, qop=(), algorithm="MD5")
    creds = answer_challenge(
        challenge, method=method, uri=uri, username=username, password=password, cnonce=secrets.token_hex(4), nc=nc
    )
    return creds.to_header()


class Peer:
    """One remote SIP endpoint in one call (or registration): builds its requests and feeds them in."""

    def __init__(
        self,
        h: Harness,
        source: Address = TRUNK_ADDR,
        *,
        user: str = "caller",
        call_id: str | None = None,
    ) -> None:
        self.h = h
        self.source = source
        self.user = user
        self.call_id = call_id or f"{secrets.token_hex(6)}@{source[1]}"
        self.from_tag = secrets.token_hex(4)
        self.to_tag: str | None = None
        self.cseq = 0
        self.invite: Request | None = None
        self.invite_raw: bytes = b""

    # -- raw message construction ---------------------------------------------------------------
    def via(self, branch: str | None = None) -> str:
        return f"SIP/2.0/{self.source[0]} {self.source[1]}:{self.source[2]};branch={branch or new_peer_branch()};rport"

    def build(
        self,
        method: str,
        uri: str,
        *,
        to: str,
        cseq: int | None = None,
        branch: str | None = None,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: str = "70",
        contact: bool = True,
    ) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: {self.via(branch)}",
            f"Max-Forwards: {max_forwards}",
            f'From: "Caller" <sip:{self.user}@{self.source[1]}>;tag={self.from_tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if contact:
            lines.append(f"Contact: <sip:{self.user}@{self.source[1]}:{self.source[2]}>")
        lines += [f"{k}: {v}" for k, v in headers]
        if body and not any(k.lower() == "content-type" for k, _ in headers):
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def feed(self, raw: bytes) -> None:
        self.h.ua.receive(parse_message(raw), self.source)

    # -- dialogs ----------------------------------------------------------------------------------
    @property
    def to_header(self) -> str:
        assert self.invite is not None
        to = self.invite.headers.get("To") or ""
        return f"{to};tag={self.to_tag}" if self.to_tag else to

    def send_invite(
        self,
        number: str = "100",
        *,
        sdp: str | None = PCMU_PCMA_SDP,
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: str = "70",
        raw_body: bytes | None = None,
    ) -> Request:
        body = raw_body if raw_body is not None else (sdp.encode() if sdp else b"")
        uri = f"sip:{number}@{DOMAIN}"
        raw = self.build(
            "INVITE", uri, to=f"<sip:{number}@{DOMAIN}>", body=body, headers=headers, max_forwards=max_forwards
        )
        self.invite_raw = raw
        invite = parse_message(raw)
        assert isinstance(invite, Request)
        self.invite = invite
        self.feed(raw)
        return invite

    def final_response(self) -> Response | None:
        """The engine's last final response to our INVITE (and remember its To tag)."""
        finals = [
            r
            for r, _ in self.h.net.sent
            if isinstance(r, Response)
            and r.call_id == self.call_id
            and r.cseq.method == "INVITE"
            and r.status >= 200
            and self.invite is not None
            and r.cseq.number == self.invite.cseq.number
        ]
        if not finals:
            return None
        resp = finals[-1]
        self.to_tag = resp.to.tag
        return resp

    def ack(self, body: bytes = b"") -> None:
        assert self.invite is not None and self.to_tag is not None
        raw = self.build(
            "ACK",
            str(self.invite.uri),
            to=self.to_header,
            cseq=self.invite.cseq.number,
            body=body,
        )
        self.feed(raw)

    def ack_final(self, response: Response) -> None:
        """ACK a non-2xx final response (same branch as the INVITE: part of its transaction)."""
        assert self.invite is not None
        raw = self.build(
            "ACK",
            str(self.invite.uri),
            to=response.headers.get("To") or "",
            cseq=self.invite.cseq.number,
            branch=self.invite.top_via.branch,
            contact=False,
        )
        self.feed(raw)

    def cancel(self) -> None:
        assert self.invite is not None
        branch = self.invite.top_via.branch
        raw = self.build(
            "CANCEL",
            str(self.invite.uri),
            to=self.invite.headers.get("To") or "",
            cseq=self.invite.cseq.number,
            branch=branch,
            contact=False,
        )
        self.feed(raw)

    def in_dialog(
        self,
        method: str,
        *,
        cseq: int | None = None,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        assert self.invite is not None
        raw = self.build(method, str(self.invite.uri), to=self.to_header, cseq=cseq, body=body, headers=headers)
        self.feed(raw)
        msg = parse_message(raw)
        assert isinstance(msg, Request)
        return msg

    def reply(self, request: Request, status: int, *, to_tag: str | None = None, body: bytes = b"") -> Response:
        """Answer a request the engine sent us (e.g. its BYE)."""
        resp = response_for(request, status, to_tag=to_tag)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        wire = parse_message(bytes(resp))
        assert isinstance(wire, Response)
        self.h.ua.receive(wire, self.source)
        return wire


def new_peer_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(6)


def feed_response(h: Harness, resp: Response, source: Address = TRUNK_ADDR) -> Response:
    wire = parse_message(bytes(resp))
    assert isinstance(wire, Response)
    h.ua.receive(wire, source)
    return wire


class Phone:
    """A registering device: REGISTER with a stable Call-ID and increasing CSeq."""

    def __init__(self, h: Harness, username: str = "1001", source: Address = PHONE_ADDR) -> None:
        self.h = h
        self.username = username
        self.source = source
        self.call_id = f"reg-{secrets.token_hex(6)}@{source[1]}"
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.contact = f"<sip:{username}@{source[1]}:{source[2]}>"

    def register(
        self,
        *,
        expires: int | None = 600,
        contact: str | None = None,
        authorization: str | None = None,
        aor_user: str | None = None,
        cseq: int | None = None,
    ) -> Response:
        """Send one REGISTER; return the engine's final response to it."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        aor = f"<sip:{aor_user or self.username}@{DOMAIN}>"
        lines = [
            f"REGISTER sip:{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.source[1]}:{self.source[2]};branch={new_peer_branch()};rport",
            "Max-Forwards: 70",
            f"From: {aor};tag={self.tag}",
            f"To: {aor}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: {contact or self.contact}",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
        before = len(self.h.net.sent)
        self.h.ua.receive(parse_message(raw), self.source)
        answers = [m for m, _ in self.h.net.sent[before:] if isinstance(m, Response) and m.status >= 200]
        assert len(answers) == 1, answers
        return answers[0]

    def register_with_auth(
        self,
        password: str | None = None,
        *,
        rfc2069: bool = False,
        expires: int | None = 600,
        contact: str | None = None,
        aor_user: str | None = None,
    ) -> Response:
        """REGISTER → 401 → REGISTER with credentials; returns the second final response."""
        challenge = self.register(expires=expires, contact=contact, aor_user=aor_user)
        assert challenge.status == 401, challenge
        auth = authorization_for(
            challenge,
            method="REGISTER",
            uri=f"sip:{DOMAIN}",
            username=self.username,
            password=password if password is not None else PASSWORDS.get(self.username, "x"),
            rfc2069=rfc2069,
        )
        return self.register(expires=expires, contact=contact, aor_user=aor_user, authorization=auth)
