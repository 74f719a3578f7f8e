"""A caller on the carrier trunk whose ears a test can read.

SIPp can send audio but cannot say whether what it received was silence; this caller, written with the project's
own SIP (callcenter/sip) and RTP/G.711 (callcenter/media) code over plain UDP sockets, can:

  INVITE (From: the elder's number, To: the button's DID, SDP offer PCMU + telephone-event)
  <- 1xx, 200 -> ACK          (a retransmitted 200 is ACKed again)
  RTP: a steady tone every 20 ms (paced on the monotonic clock); every frame received is decoded and kept with its
       arrival time; RFC 4733 events are kept as digits
  in-dialog requests from the engine (OPTIONS keepalive, INFO, re-INVITE, BYE) get 200 OK
  hang_up(): BYE and its 200
"""

from __future__ import annotations

import contextlib
import math
import queue
import socket
import threading
import time

import numpy as np

from callcenter.media.g711 import alaw_decode, ulaw_decode, ulaw_encode
from callcenter.media.rtp import RtpError, RtpPacket
from callcenter.sip.errors import SipParseError
from callcenter.sip.message import Request, Response, parse_message, response_for
from callcenter.sip.sdp import SessionDescription
from tests.integration.rawsip import RawSip, ack_for, bye_for, sdp_offer

CALLER_TONE_HZ = 600.0
DIGITS = "0123456789*#ABCD"


class RtpCaller:
    """One call from ``number`` to ``did`` on the engine at 127.0.0.1:``engine_port``, from ``host``."""

    def __init__(self, engine_port: int, *, number: str, did: str, host: str,
                 tone_hz: float = CALLER_TONE_HZ) -> None:
        self.number = number
        self.did = did
        self.sip = RawSip(engine_port, local_ip=host)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((host, 0))
        self.rtp.settimeout(0.2)
        self.host = host
        self.engine_port = engine_port
        self.tone = self._tone(tone_hz)
        self.responses: queue.Queue[Response] = queue.Queue()
        self.requests: list[str] = []  # methods the engine sent us
        self.frames: list[tuple[float, np.ndarray]] = []  # (arrival, decoded 8 kHz samples)
        self.digits: list[str] = []  # RFC 4733 events received, one per event
        self.ended = threading.Event()  # the engine hung up (BYE)
        self.invite: bytes | None = None
        self.call_id = ""
        self.answer: Response | None = None
        self.remote_rtp: tuple[str, int] | None = None
        self._ack: bytes | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sip_loop, daemon=True),
                         threading.Thread(target=self._rtp_receive, daemon=True)]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _tone(hz: float) -> list[bytes]:
        """One second of µ-law frames (a whole number of cycles: the loop is seamless)."""
        t = np.arange(8000) / 8000
        pcm = (8000 * np.sin(2 * math.pi * hz * t)).astype(np.int16)
        return [ulaw_encode(pcm[i:i + 160]) for i in range(0, 8000, 160)]

    # signalling --------------------------------------------------------------------------------------------
    def dial(self, timeout: float = 30.0) -> Response:
        """INVITE and wait for the 200 (the IVR answers at once); ACK it and start sending audio."""
        uri = f"sip:{self.did}@127.0.0.1:{self.engine_port}"
        local_rtp = self.rtp.getsockname()[1]
        self.invite, self.call_id = self.sip.request("INVITE", uri, body=sdp_offer(self.host, local_rtp, "0 101"),
                                          from_user=self.number)
        self.sip.send(self.invite)
        deadline = time.monotonic() + timeout
        while True:
            response = self._response(deadline, "INVITE")
            if response.status < 200:
                continue
            if response.status >= 300:
                raise AssertionError(f"the call from {self.number} to {self.did} was refused: {response.status}")
            break
        self.answer = response
        self._ack = ack_for(self.invite, response)
        self.sip.send(self._ack)
        sdp = SessionDescription.parse(response.body)
        audio = sdp.media[0]
        connection = sdp.connection_for(audio)
        assert connection is not None, "the answer has no c= line"
        self.remote_rtp = (connection.address, audio.port)
        threading.Thread(target=self._rtp_send, daemon=True).start()
        return response

    def hang_up(self, timeout: float = 10.0) -> None:
        assert self.invite is not None and self.answer is not None, "not connected"
        self.sip.send(bye_for(self.invite, self.answer))
        self._response(time.monotonic() + timeout, "BYE")
        self._stop.set()

    def wait_ended(self, timeout: float = 30.0) -> None:
        """Wait for the engine's BYE."""
        assert self.ended.wait(timeout), f"the engine did not hang up on {self.number} within {timeout:g} s"

    def _response(self, deadline: float, method: str) -> Response:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no response to {method} from the engine")
            try:
                response = self.responses.get(timeout=remaining)
            except queue.Empty:
                continue
            if response.cseq.method == method:
                return response

    def _sip_loop(self) -> None:
        self.sip.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, source = self.sip.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            try:
                message = parse_message(data)
            except SipParseError:
                continue
            if isinstance(message, Response):
                if message.cseq.method == "INVITE" and message.status == 200 and self._ack is not None:
                    self.sip.send(self._ack)  # our ACK was lost: the engine retransmits its 200
                self.responses.put(message)
            elif isinstance(message, Request):
                self._answer_request(message, source)

    def _answer_request(self, request: Request, source: tuple[str, int]) -> None:
        self.requests.append(request.method)
        if request.method == "ACK":
            return
        response = response_for(request, 200)
        if request.method == "INVITE":  # a re-INVITE: keep our media as it is
            response.headers.set("Content-Type", "application/sdp")
            response.headers.set("Contact", f"<sip:{self.number}@{self.host}:{self.sip.local_port}>")
            response.body = sdp_offer(self.host, self.rtp.getsockname()[1], "0 101")
        self.sip.sock.sendto(bytes(response), source)
        if request.method == "BYE":
            self.ended.set()
            self._stop.set()

    # media ---------------------------------------------------------------------------------------------------
    def _rtp_send(self) -> None:
        assert self.remote_rtp is not None
        seq, ts, ssrc = 1000, 0, 0x5EED1234
        next_send = time.monotonic()
        frame = 0
        while not self._stop.is_set():
            packet = RtpPacket(payload_type=0, sequence=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF, ssrc=ssrc,
                               payload=self.tone[frame % len(self.tone)])
            with contextlib.suppress(OSError):
                self.rtp.sendto(bytes(packet), self.remote_rtp)
            seq, ts, frame = seq + 1, ts + 160, frame + 1
            next_send += 0.02
            delay = next_send - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.2:  # the machine stalled: do not burst to catch up
                next_send = time.monotonic()

    def _rtp_receive(self) -> None:
        last_event: tuple[int, int] | None = None
        while not self._stop.is_set():
            try:
                data, _ = self.rtp.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            try:
                packet = RtpPacket.parse(data)
            except RtpError:
                continue
            now = time.monotonic()
            if packet.payload_type == 0:
                pcm = ulaw_decode(packet.payload)
            elif packet.payload_type == 8:
                pcm = alaw_decode(packet.payload)
            else:
                if len(packet.payload) >= 4 and packet.payload[0] < len(DIGITS):
                    key = (packet.timestamp, packet.payload[0])
                    if key != last_event:  # an event is sent several times; keep it once
                        last_event = key
                        with self._lock:
                            self.digits.append(DIGITS[packet.payload[0]])
                continue
            with self._lock:
                self.frames.append((now, pcm))

    def heard_since(self, since: float) -> np.ndarray:
        """Every sample received after ``since`` (time.monotonic()), in arrival order."""
        with self._lock:
            chunks = [pcm for at, pcm in self.frames if at >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.rtp.close()
        self.sip.close()
