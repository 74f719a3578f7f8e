"""The peer harness proves itself peer-to-peer, without our engine: SIPp against SIPp,
baresip against SIPp, pyVoIP against a few lines of fake registrar/UAS."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .peers import (
    LOOPBACK,
    SIPP_SCENARIO_DIR,
    PyVoipPhone,
    Sipp,
    _locked_nonblocking_socket,
    free_port,
    free_port_range,
    parse_sipp_stats,
    patch_pyvoip,
    pyvoip_patched,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


# --- ports -------------------------------------------------------------------------------------


def test_free_ports_are_bindable_and_distinct() -> None:
    ports = [free_port("udp"), free_port("tcp"), free_port("both")]
    assert len(set(ports)) == 3
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind((LOOPBACK, ports[2]))
        t.bind((LOOPBACK, ports[2]))
    base = free_port_range(4)
    for port in range(base, base + 4):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOOPBACK, port))


# --- SIPp --------------------------------------------------------------------------------------


def test_sipp_command_line_maps_every_option(tmp_path: Path) -> None:
    sipp = Sipp(
        "uac",
        target="127.0.0.1:5060",
        local_port=5999,
        transport="t1",
        service="911",
        rate=2.5,
        max_calls=7,
        limit=3,
        duration_ms=1500,
        lost=10,
        auth_user="1001",
        auth_pass="secret",
        timeout=9.2,
        recv_timeout=4,
        workdir=tmp_path,
    )
    cmd = " ".join(sipp.command())
    for part in (
        "-sn uac",
        "-i 127.0.0.1 -mi 127.0.0.1 -ci 127.0.0.1 -p 5999",
        "-t t1",
        "-nostdin",
        "-s 911",
        "-r 2.5",
        "-m 7",
        "-l 3",
        "-d 1500ms",
        "-lost 10",
        "-au 1001 -ap secret",
        "-timeout 10s",
        "-recv_timeout 4000ms",
        f"-trace_stat -stf {tmp_path / 'stat.csv'} -fd 1",
        "-trace_err",
    ):
        assert part in cmd
    assert "-bg" not in cmd.split()
    assert cmd.endswith(" 127.0.0.1:5060")
    hold = Sipp("uac_hold.xml", target="127.0.0.1:5060", workdir=tmp_path)
    assert hold.command()[1:3] == ["-sf", str(SIPP_SCENARIO_DIR / "uac_hold.xml")]


def test_parse_sipp_stats_reads_the_last_row(tmp_path: Path) -> None:
    csv = tmp_path / "s.csv"
    csv.write_text("StartTime;SuccessfulCall(C);FailedCall(C);Retransmissions(C);\nx;0;0;0;\nx;4;1;2;\n")
    assert parse_sipp_stats(csv) == {
        "StartTime": "x",
        "SuccessfulCall(C)": "4",
        "FailedCall(C)": "1",
        "Retransmissions(C)": "2",
    }


def test_sipp_uac_completes_five_calls_against_sipp_uas(sipp_factory) -> None:
    uas = sipp_factory("uas").start()
    uac = sipp_factory(
        "uac", target=f"{LOOPBACK}:{uas.local_port}", max_calls=5, rate=20, limit=5, recv_timeout=5, timeout=15
    )
    result = uac.run(timeout=15)
    assert result.returncode == 0, str(result)
    assert (result.successful, result.failed) == (5, 0), str(result)
    assert result.retransmissions == 0
    # sipp's uas pauses 4 s after the BYE before it counts a call as done
    served = uas.stop(grace=6)
    assert served.stat("IncomingCall(C)") == 5, str(served)


def test_sipp_over_tcp(sipp_factory) -> None:
    uas = sipp_factory("uas", transport="t1").start()
    uac = sipp_factory("uac", transport="t1", target=f"{LOOPBACK}:{uas.local_port}", max_calls=2, recv_timeout=5)
    result = uac.run(timeout=15)
    assert (result.returncode, result.successful, result.failed) == (0, 2, 0), str(result)


def test_sipp_reports_failed_calls(sipp_factory) -> None:
    nobody = free_port("udp")
    uac = sipp_factory("uac", target=f"{LOOPBACK}:{nobody}", max_calls=1, recv_timeout=1)
    result = uac.run(timeout=15)
    assert result.returncode == 1, str(result)
    assert (result.successful, result.failed) == (0, 1)
    assert "timeout" in result.errors
    assert not result.ok


def test_uac_hold_scenario_against_sipp_uas(sipp_factory) -> None:
    uas = sipp_factory("uas").start()
    uac = sipp_factory(
        "uac_hold.xml",
        service="911",
        target=f"{LOOPBACK}:{uas.local_port}",
        max_calls=1,
        recv_timeout=5,
        trace_msg=True,
    )
    result = uac.run(timeout=15)
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), str(result)
    hours, minutes, seconds, micros = (int(x) for x in result.stats["CallLength(C)"].split(":"))
    assert 1.0 <= hours * 3600 + minutes * 60 + seconds + micros / 1e6 < 5.0
    messages = uac.message_file.read_text()
    assert "INVITE sip:911@127.0.0.1" in messages
    for codec in ("m=audio", "RTP/AVP 0 8 101", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000"):
        assert codec in messages
    assert re.search(r"^BYE sip:", messages, re.M)


RINGING_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="UAS that rings until cancelled">
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <send><![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

  ]]></send>
  <recv request="CANCEL"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <send><![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [cseq] INVITE
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
</scenario>
"""


def test_uac_cancel_scenario_against_ringing_uas(sipp_factory, tmp_path: Path) -> None:
    scenario = tmp_path / "uas_ringing.xml"
    scenario.write_text(RINGING_UAS)
    uas = sipp_factory(scenario, max_calls=1, recv_timeout=5).start()
    uac = sipp_factory(
        "uac_cancel.xml",
        service="911",
        target=f"{LOOPBACK}:{uas.local_port}",
        max_calls=1,
        duration_ms=200,
        recv_timeout=5,
        trace_msg=True,
    )
    result = uac.run(timeout=15)
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), str(result)
    served = uas.run(timeout=10)
    assert (served.successful, served.failed) == (1, 0), str(served)
    sent = uac.message_file.read_text()
    branches = dict(
        re.findall(r"^(INVITE|CANCEL|ACK) .*?\nVia: SIP/2\.0/UDP [^;]+;branch=([^;\s]+)", sent, re.M | re.S)
    )
    assert set(branches) == {"INVITE", "CANCEL", "ACK"}
    assert branches["INVITE"] == branches["CANCEL"] == branches["ACK"]
    assert "CSeq: 1 CANCEL" in sent and "CSeq: 1 ACK" in sent


def test_sipp_stop_ends_a_background_uas(sipp_factory) -> None:
    uas = sipp_factory("uas").start()
    assert uas.running
    result = uas.stop()
    assert not uas.running
    assert result.returncode == 0
    assert (result.successful, result.failed) == (0, 0)


# --- baresip -----------------------------------------------------------------------------------


def test_baresip_dials_sipp_uas_and_hangs_up(sipp_factory, baresip_factory, tmp_path: Path) -> None:
    uas = sipp_factory("uas").start()
    phone = baresip_factory("1001", record_dir=tmp_path / "rec").start()
    target = f"sip:service@{LOOPBACK}:{uas.local_port}"
    response = phone.dial(target)
    assert response["ok"] is True
    established = phone.wait_event("CALL_ESTABLISHED", timeout=5)
    assert established["peeruri"] == target
    assert established["direction"] == "outgoing"
    phone.send_dtmf("1#")
    phone.hangup()
    closed = phone.wait_event("CALL_CLOSED", timeout=5)
    assert closed["id"] == established["id"]
    assert phone.stop() == 0
    assert sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "rec").glob("dump-*.wav")) == [
        "dec.wav",
        "enc.wav",
    ]
    served = uas.stop(grace=6)
    assert served.stat("IncomingCall(C)") == 1, str(served)


def test_baresip_answers_a_sipp_call(sipp_factory, baresip_factory) -> None:
    phone = baresip_factory("1002").start()
    uac = sipp_factory(
        "uac", service="1002", target=f"{LOOPBACK}:{phone.sip_port}", max_calls=1, duration_ms=500, recv_timeout=5
    ).start()
    incoming = phone.wait_event("CALL_INCOMING", timeout=5)
    assert incoming["direction"] == "incoming"
    phone.accept()
    phone.wait_event("CALL_ESTABLISHED", timeout=5)
    phone.wait_event("CALL_CLOSED", timeout=5)  # sipp sends BYE after -d
    result = uac.run(timeout=10)
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), str(result)


REGISTRAR = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="registrar: REGISTER then un-REGISTER, both 200">
  <recv request="REGISTER"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Contact:]
      Expires: 60
      Content-Length: 0

  ]]></send>
  <recv request="REGISTER"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
</scenario>
"""


def test_baresip_registers_and_unregisters(sipp_factory, baresip_factory, tmp_path: Path) -> None:
    scenario = tmp_path / "registrar.xml"
    scenario.write_text(REGISTRAR)
    registrar = sipp_factory(scenario, max_calls=1, trace_msg=True).start()
    phone = baresip_factory("1003", domain=f"{LOOPBACK}:{registrar.local_port}", password="secret", regint=60)
    phone.start()  # returns after REGISTER_OK
    assert [e["type"] for e in phone.events if e["class"] == "register"][-1] == "REGISTER_OK"
    phone.stop()
    result = registrar.run(timeout=5)
    assert (result.successful, result.failed) == (1, 0), str(result)
    assert "Expires: 0" in registrar.message_file.read_text() or ";expires=0" in registrar.message_file.read_text()


# --- pyVoIP ------------------------------------------------------------------------------------


class _RecordingLock:
    """A lock that notes whether the socket was blocking when it was released."""

    def __init__(self, sock: socket.socket) -> None:
        self._lock = threading.Lock()
        self.sock = sock
        self.blocking_at_release: list[bool] = []

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.blocking_at_release.append(self.sock.getblocking())
        self._lock.release()


def test_pyvoip_patch_is_applied_by_the_wrapper() -> None:
    PyVoipPhone(LOOPBACK, 5060, "1001", "secret")._make_phone()  # builds the VoIPPhone, opens nothing
    assert pyvoip_patched()
    import pyVoIP.SIP

    assert pyVoIP.SIP.acquired_lock_and_unblocked_socket is _locked_nonblocking_socket
    assert getattr(pyVoIP.SIP.SIPClient._SIPClient__register, "_callcenter_patched", False)
    assert getattr(pyVoIP.SIP.SIPClient._SIPClient__deregister, "_callcenter_patched", False)
    before = pyVoIP.SIP.SIPClient._SIPClient__register
    patch_pyvoip()  # idempotent: no double wrapping
    assert pyVoIP.SIP.SIPClient._SIPClient__register is before

    import pyVoIP.util

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # pyVoIP's own context manager releases the lock with the socket still non-blocking ...
        lock = _RecordingLock(sock)
        with pyVoIP.util.acquired_lock_and_unblocked_socket(lock, sock):
            assert sock.getblocking() is False
        assert lock.blocking_at_release == [False]
        # ... the patched one restores blocking mode before it lets go of the lock
        lock = _RecordingLock(sock)
        with pyVoIP.SIP.acquired_lock_and_unblocked_socket(lock, sock):
            assert sock.getblocking() is False
        assert lock.blocking_at_release == [True]
        with pytest.raises(BlockingIOError), pyVoIP.SIP.acquired_lock_and_unblocked_socket(lock, sock):
            sock.recv(10)
        assert lock.blocking_at_release == [True, True]


def test_pyvoip_register_failure_leaves_socket_blocking() -> None:
    """__register raising (here: nobody answers) must not leave the socket non-blocking."""
    import pyVoIP.SIP

    phone = PyVoipPhone(LOOPBACK, free_port("udp"), "1001", "secret", sip_timeout=0.2)._make_phone()
    client = phone.sip
    client.s = client.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.s.bind((LOOPBACK, 0))
        with pytest.raises(TimeoutError):
            pyVoIP.SIP.SIPClient._SIPClient__register(client)
        assert client.s.getblocking() is True
    finally:
        client.s.close()


class FakeServer:
    """Just enough registrar and UAS for pyVoIP: 200 to REGISTER, 100 + 200 (with SDP) to INVITE,
    200 to BYE; remembers the request lines it got."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((LOOPBACK, 0))
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _reply(self, request: str, status: str, addr: tuple[str, int], extra: str = "", body: str = "") -> None:
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
        to = next(h for h in head[1:] if h.lower().startswith("to:"))
        if ";tag=" not in to:
            to += ";tag=fake1"
        lines = [f"SIP/2.0 {status}", *keep, to, f"Contact: <sip:fake@{LOOPBACK}:{self.port}>", *extra.split("\r\n")]
        lines = [ln for ln in lines if ln]
        msg = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n" + body
        self.sock.sendto(msg.encode(), addr)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            request = data.decode()
            method = request.split(" ", 1)[0]
            self.requests.append(request.split("\r\n", 1)[0])
            if method in ("REGISTER", "BYE"):
                self._reply(request, "200 OK", addr)
            elif method == "INVITE":
                self._reply(request, "100 Trying", addr)
                sdp = (
                    f"v=0\r\no=fake 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
                    f"m=audio {self.rtp.getsockname()[1]} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
                )
                self._reply(request, "200 OK", addr, "Content-Type: application/sdp", sdp)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.rtp.close()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def test_pyvoip_phone_registers_and_calls_right_away(pyvoip_factory, fake_server: FakeServer) -> None:
    phone = pyvoip_factory(LOOPBACK, fake_server.port, "1004", "secret").start()
    assert phone.status == "REGISTERED"
    assert phone.phone.sip.s.getblocking() is True
    call = phone.call("911")
    phone.wait_answered(call, timeout=5)
    phone.hangup(call)
    phone.stop()
    # pyVoIP takes any 200 (even a late one for the BYE) as the answer to its un-REGISTER, so
    # stop() may return before the server has read that REGISTER: give it a moment.
    deadline = time.monotonic() + 3
    while fake_server.requests[-1].split(" ", 1)[0] != "REGISTER" and time.monotonic() < deadline:
        time.sleep(0.05)
    methods = [line.split(" ", 1)[0] for line in fake_server.requests]
    assert methods[:2] == ["REGISTER", "INVITE"]
    assert "BYE" in methods
    assert methods[-1] == "REGISTER"  # de-registration on stop
