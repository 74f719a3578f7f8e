"""A bare UDP SIP client for tests that need exact bytes on the wire (malformed messages, 404, 488...)."""

from __future__ import annotations

import secrets
import socket
import time

from callcenter.sip.errors import SipParseError
from callcenter.sip.message import Request, Response, parse_message


class RawSip:
    def __init__(self, engine_port: int, *, local_ip: str = "127.0.0.1") -> None:
        self.engine = ("127.0.0.1", engine_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, 0))
        self.local_ip = local_ip
        self.local_port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.engine)

    def receive(self, timeout: float = 3.0) -> Response | Request | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        try:
            return parse_message(data)
        except SipParseError as exc:  # pragma: no cover - shows what the engine sent
            raise AssertionError(f"engine sent an unparseable message: {exc}\n{data!r}") from None

    def final_response(self, timeout: float = 5.0) -> Response:
        """Skip provisional responses; return the first final one."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.05, deadline - time.monotonic()))
            if msg is None:
                raise AssertionError("no final response")
            if isinstance(msg, Response) and msg.status >= 200:
                return msg

    def request(
        self,
        method: str,
        uri: str,
        *,
        body: bytes = b"",
        content_type: str = "application/sdp",
        extra: str = "",
        call_id: str | None = None,
        cseq: int = 1,
        from_user: str = "13800000000",
        to_tag: str | None = None,
        branch: str | None = None,
    ) -> tuple[bytes, str]:
        call_id = call_id or f"{secrets.token_hex(8)}@test"
        branch = branch or f"z9hG4bK{secrets.token_hex(8)}"
        to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
        head = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.local_ip}:{self.local_port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{from_user}@{self.local_ip}>;tag={secrets.token_hex(4)}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{from_user}@{self.local_ip}:{self.local_port}>\r\n"
            f"{extra}"
        )
        if body:
            head += f"Content-Type: {content_type}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        return head.encode() + body, call_id


def sdp_offer(ip: str = "127.0.0.1", port: int = 40000, codecs: str = "0 8 101") -> bytes:
    lines = [
        "v=0",
        f"o=test 1 1 IN IP4 {ip}",
        "s=-",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}",
    ]
    names = {"0": "PCMU/8000", "8": "PCMA/8000", "18": "G729/8000", "101": "telephone-event/8000"}
    lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in codecs.split() if pt in names]
    return ("\r\n".join(lines) + "\r\n").encode()


def ack_for(invite: bytes, response: Response) -> bytes:
    """An ACK for a 2xx, to the same URI (our tests have no route sets)."""
    req = parse_message(invite)
    assert isinstance(req, Request)
    via = req.headers.get("Via") or ""
    branch = f"z9hG4bK{secrets.token_hex(8)}"
    via = via.split(";branch=")[0] + f";branch={branch};rport"
    return (
        f"ACK {req.uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {req.headers.get('From')}\r\n"
        f"To: {response.headers.get('To')}\r\nCall-ID: {req.call_id}\r\nCSeq: {req.cseq.number} ACK\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def bye_for(invite: bytes, response: Response, cseq: int = 2) -> bytes:
    req = parse_message(invite)
    assert isinstance(req, Request)
    via = (req.headers.get("Via") or "").split(";branch=")[0] + f";branch=z9hG4bK{secrets.token_hex(8)};rport"
    return (
        f"BYE {req.uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {req.headers.get('From')}\r\n"
        f"To: {response.headers.get('To')}\r\nCall-ID: {req.call_id}\r\nCSeq: {cseq} BYE\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
