"""RFC 3261 §17 transaction layer, driven by twisted.internet.task.Clock (no sockets, no wall clock)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs
from twisted.internet.task import Clock

from callcenter.sip.message import Request, Response, parse_message, response_for
from callcenter.sip.transaction import (
    Address,
    ClientTransaction,
    InviteOkRetransmitter,
    ServerInviteTransaction,
    ServerTransaction,
    TransactionLayer,
    new_branch,
)

PEER: Address = ("UDP", "192.0.2.10", 5060)
PEER_TCP: Address = ("TCP", "192.0.2.10", 40000)
TIMER_G_TIMES = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # T1 doubling, capped at T2=4


def make_request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKinv1",
    transport: str = "UDP",
    cseq: int = 1,
    to_tag: str | None = None,
    call_id: str = "call-1@192.0.2.10",
    uri: str = "sip:100@cc.example.com",
    via_port: int = 5060,
    extra: str = "",
) -> Request:
    branch_param = f";branch={branch}" if branch else ""
    to = "<sip:100@cc.example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 192.0.2.10:{via_port}{branch_param}\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@example.com>;tag=from1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.10>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def wire(msg: Request | Response) -> Request | Response:
    """What the peer would receive: a fresh parse of the serialised message."""
    return parse_message(bytes(msg))


class Harness:
    def __init__(self, *, fail_send: bool = False) -> None:
        self.clock = Clock()
        self.sent: list[tuple[float, bytes, Address]] = []
        self.requests: list[tuple[Request, ServerTransaction | None, Address]] = []
        self.strays: list[tuple[Response, Address]] = []
        self.fail_send = fail_send
        self.layer = TransactionLayer(
            self.clock, self.send, on_request=self.on_request, on_stray_response=self.on_stray
        )

    def send(self, data: bytes, dest: Address) -> None:
        if self.fail_send:
            raise OSError("network unreachable")
        self.sent.append((self.clock.seconds(), data, dest))

    def on_request(self, request: Request, tx: ServerTransaction | None, source: Address) -> None:
        self.requests.append((request, tx, source))

    def on_stray(self, response: Response, source: Address) -> None:
        self.strays.append((response, source))

    def messages(self) -> list[Request | Response]:
        return [parse_message(data) for _, data, _ in self.sent]

    def statuses(self) -> list[int]:
        return [m.status for m in self.messages() if isinstance(m, Response)]

    def times(self) -> list[float]:
        return [t for t, _, _ in self.sent]

    def run_until(self, t: float) -> None:
        """Advance to ``t`` stopping at every scheduled call, so sends are stamped with exact times."""
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= t]
            if not due:
                self.clock.advance(t - self.clock.seconds())
                return
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))

    def assert_idle(self) -> None:
        stats = self.layer.stats()
        assert stats["server_transactions"] == 0
        assert stats["client_transactions"] == 0
        assert stats["accepted_invites"] == 0
        assert stats["ok_retransmitters"] == 0
        assert self.clock.getDelayedCalls() == []


@pytest.fixture
def h() -> Harness:
    return Harness()


def start_client(h: Harness, request: Request, dest: Address = PEER) -> tuple[ClientTransaction, list, list]:
    responses: list[Response] = []
    timeouts: list[bool] = []
    tx = h.layer.send_request(request, dest, on_response=responses.append, on_timeout=lambda: timeouts.append(True))
    return tx, responses, timeouts


# -- server INVITE ---------------------------------------------------------------------------------


def test_100_trying_sent_immediately_before_tu(h: Harness) -> None:
    seen_before_tu: list[list[int]] = []
    h.layer.on_request = lambda req, tx, src: seen_before_tu.append(h.statuses())
    h.layer.receive(make_request(extra="Timestamp: 54\r\n"), PEER)
    assert seen_before_tu == [[100]]
    trying = h.messages()[0]
    assert isinstance(trying, Response)
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54"
    assert h.sent[0][0] == 0.0
    assert h.sent[0][2] == ("UDP", "192.0.2.10", 5060)


def test_response_destination_uses_rport(h: Harness) -> None:
    req = make_request()
    req.top_via.params.update({"rport": "40123", "received": "198.51.100.7"})
    h.layer.receive(req, ("UDP", "198.51.100.7", 40123))
    assert h.sent[0][2] == ("UDP", "198.51.100.7", 40123)


def test_retransmitted_invite_absorbed_and_latest_response_resent(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert isinstance(tx, ServerInviteTransaction) and tx.state == "proceeding"
    h.layer.receive(make_request(), PEER)
    assert h.statuses() == [100, 100]
    tx.respond(response_for(tx.request, 180, to_tag="t1"))
    h.layer.receive(make_request(), PEER)
    assert h.statuses() == [100, 100, 180, 180]
    assert len(h.requests) == 1
    assert h.layer.stats()["retransmissions_absorbed"] == 2


def test_timer_g_schedule_and_timer_h_ack_timeout(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert isinstance(tx, ServerInviteTransaction)
    notices: list[bool] = []
    tx.on_ack_timeout = lambda: notices.append(True)
    tx.respond(response_for(tx.request, 486, to_tag="t1"))
    assert tx.state == "completed"
    h.run_until(31.99)
    assert h.times() == [0.0, 0.0, *TIMER_G_TIMES]
    assert h.statuses() == [100] + [486] * 11
    assert notices == []
    h.run_until(32.0)  # Timer H = 64*T1
    assert notices == [True]
    assert tx.state == "terminated"
    stats = h.layer.stats()
    assert stats["ack_timeouts"] == 1
    assert stats["retransmissions_sent"] == 10
    h.assert_idle()


def test_ack_for_non_2xx_absorbed_then_timer_i(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 404, to_tag="t1"))
    h.run_until(0.6)  # one Timer G retransmission
    ack = make_request("ACK", to_tag="t1")
    h.layer.receive(ack, PEER)
    assert tx.state == "confirmed"
    assert len(h.requests) == 1  # the ACK did not reach the TU
    assert "G" not in tx.timers and "H" not in tx.timers
    h.layer.receive(make_request("ACK", to_tag="t1"), PEER)  # retransmitted ACK
    sent = len(h.sent)
    h.run_until(5.59)
    assert tx.state == "confirmed"
    h.run_until(5.6)  # Timer I = T4 = 5 s from the ACK at 0.6
    assert tx.state == "terminated"
    assert len(h.sent) == sent
    assert h.layer.stats()["retransmissions_absorbed"] == 1
    h.assert_idle()


def test_2xx_terminates_and_ack_goes_to_tu(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 200, to_tag="t1"))
    assert tx.state == "terminated"
    assert h.layer.stats()["server_transactions"] == 0
    # A retransmitted INVITE after the 2xx is absorbed (RFC 6026), not a second call.
    h.layer.receive(make_request(), PEER)
    assert len(h.requests) == 1
    ack = make_request("ACK", branch="z9hG4bKack2", to_tag="t1")
    h.layer.receive(ack, PEER)
    assert h.requests[-1] == (ack, None, PEER)
    h.run_until(40)
    h.assert_idle()


def test_invalid_transition_is_logged_not_raised(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 486, to_tag="t1"))
    sent = len(h.sent)
    with capture_logs() as logs:
        tx.respond(response_for(tx.request, 200, to_tag="t1"))
    assert len(h.sent) == sent
    assert logs[0]["event"] == "sip.transaction.invalid_transition"
    assert logs[0]["call_id"] == "call-1@192.0.2.10"
    assert h.layer.stats()["invalid_transitions"] == 1


def test_ack_in_proceeding_is_invalid(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    with capture_logs() as logs:
        h.layer.receive(make_request("ACK"), PEER)
    assert [e["event"] for e in logs] == ["sip.transaction.invalid_transition"]
    assert len(h.requests) == 1


# -- CANCEL (server side) --------------------------------------------------------------------------


def test_cancel_answered_200_and_layer_sends_487(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 180, to_tag="ring1"))
    h.layer.receive(make_request("CANCEL"), PEER)
    msgs = h.messages()
    ok, terminated = msgs[-2], msgs[-1]
    assert isinstance(ok, Response) and ok.status == 200 and ok.cseq.method == "CANCEL"
    assert isinstance(terminated, Response) and terminated.status == 487 and terminated.cseq.method == "INVITE"
    assert ok.to.tag == terminated.to.tag == "ring1"
    assert len(h.requests) == 1  # CANCEL never reaches on_request
    assert tx.state == "completed"
    h.layer.receive(make_request("ACK", to_tag="ring1"), PEER)
    assert tx.state == "confirmed"
    h.layer.receive(make_request("CANCEL"), PEER)  # retransmitted CANCEL: 200 again
    assert h.statuses()[-1] == 200
    assert h.layer.stats()["cancels_matched"] == 1
    h.run_until(40)
    h.assert_idle()


def test_cancel_calls_on_cancel_and_tu_sends_487(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert isinstance(tx, ServerInviteTransaction)
    cancels: list[Request] = []

    def on_cancel(cancel: Request) -> None:
        cancels.append(cancel)
        tx.respond(response_for(tx.request, 487, to_tag=tx.to_tag()))

    tx.on_cancel = on_cancel
    h.layer.receive(make_request("CANCEL"), PEER)
    assert [c.method for c in cancels] == ["CANCEL"]
    assert h.statuses() == [100, 200, 487]
    ok, terminated = h.messages()[1:]
    assert isinstance(ok, Response) and isinstance(terminated, Response)
    assert ok.to.tag == terminated.to.tag is not None


def test_cancel_without_match_gets_481(h: Harness) -> None:
    h.layer.receive(make_request("CANCEL", branch="z9hG4bKnothing"), PEER)
    assert h.statuses() == [481]
    assert h.requests == []
    assert h.layer.stats()["cancels_unmatched"] == 1
    h.run_until(40)
    h.assert_idle()


def test_cancel_after_final_gets_200_without_effect(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 486, to_tag="t1"))
    h.layer.receive(make_request("CANCEL"), PEER)
    assert h.statuses() == [100, 486, 200]


# -- RFC 2543 matching -----------------------------------------------------------------------------


def test_rfc2543_matching_without_magic_cookie(h: Harness) -> None:
    h.layer.receive(make_request(branch=None), PEER)
    tx = h.requests[0][1]
    assert isinstance(tx, ServerInviteTransaction)
    h.layer.receive(make_request(branch=None), PEER)  # retransmission
    assert len(h.requests) == 1 and h.statuses() == [100, 100]
    # Same fields but another CSeq: a new transaction.
    h.layer.receive(make_request(branch=None, cseq=2), PEER)
    assert len(h.requests) == 2
    h.requests[1][1].respond(response_for(h.requests[1][0], 500, to_tag="x"))  # type: ignore[union-attr]
    # CANCEL matches by the RFC 2543 fields too.
    h.layer.receive(make_request("CANCEL", branch=None), PEER)
    assert h.statuses()[-2:] == [200, 487]
    final = h.messages()[-1]
    assert isinstance(final, Response)
    # An ACK with the wrong To tag does not match; with the response's To tag it is absorbed.
    h.layer.receive(make_request("ACK", branch=None, to_tag="other"), PEER)
    assert h.requests[-1][1] is None and h.requests[-1][0].method == "ACK"
    h.layer.receive(make_request("ACK", branch=None, to_tag=final.to.tag), PEER)
    assert tx.state == "confirmed"
    assert len(h.requests) == 3
    h.run_until(40)
    h.assert_idle()


def test_branch_without_cookie_uses_rfc2543_rules(h: Harness) -> None:
    h.layer.receive(make_request(branch="oldstyle1"), PEER)
    h.layer.receive(make_request(branch="oldstyle1"), PEER)
    assert len(h.requests) == 1


# -- TCP (reliable) --------------------------------------------------------------------------------


def test_tcp_server_invite_no_retransmissions_timer_i_zero(h: Harness) -> None:
    h.layer.receive(make_request(transport="TCP"), PEER_TCP)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 486, to_tag="t1"))
    assert tx.timers == ("H",)
    h.run_until(10)
    assert h.statuses() == [100, 486]
    assert all(dest == PEER_TCP for _, _, dest in h.sent)
    h.layer.receive(make_request("ACK", transport="TCP", to_tag="t1"), PEER_TCP)
    assert tx.state == "terminated"
    h.assert_idle()


def test_tcp_server_non_invite_timer_j_zero(h: Harness) -> None:
    h.layer.receive(make_request("OPTIONS", transport="TCP"), PEER_TCP)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 200, to_tag="t1"))
    assert tx.state == "terminated"
    h.assert_idle()


def test_tcp_client_invite_no_timer_a_and_timer_d_zero(h: Harness) -> None:
    req = make_request(branch=new_branch(), transport="TCP")
    tx, responses, timeouts = start_client(h, req, PEER_TCP)
    assert tx.timers == ("B",)
    h.layer.receive(wire(response_for(req, 503, to_tag="t9")), PEER_TCP)
    assert tx.state == "terminated"
    assert [m.method for m in h.messages() if isinstance(m, Request)] == ["INVITE", "ACK"]
    h.assert_idle()


def test_tcp_client_non_invite_no_timer_e_and_timer_k_zero(h: Harness) -> None:
    req = make_request("OPTIONS", branch=new_branch(), transport="TCP")
    tx, responses, timeouts = start_client(h, req, PEER_TCP)
    h.run_until(31.9)
    assert len(h.sent) == 1
    h.run_until(32)
    assert timeouts == [True] and tx.state == "terminated"
    req2 = make_request("OPTIONS", branch=new_branch(), transport="TCP")
    tx2, responses2, _ = start_client(h, req2, PEER_TCP)
    h.layer.receive(wire(response_for(req2, 200, to_tag="t")), PEER_TCP)
    assert tx2.state == "terminated" and [r.status for r in responses2] == [200]
    h.assert_idle()


# -- server non-INVITE -----------------------------------------------------------------------------


def test_server_non_invite_absorbs_retransmissions_and_timer_j(h: Harness) -> None:
    h.layer.receive(make_request("OPTIONS"), PEER)
    tx = h.requests[0][1]
    assert tx is not None and tx.state == "trying"
    h.layer.receive(make_request("OPTIONS"), PEER)  # trying: discarded
    assert h.sent == []
    tx.respond(response_for(tx.request, 183, to_tag="t1"))
    assert tx.state == "proceeding"
    h.layer.receive(make_request("OPTIONS"), PEER)
    assert h.statuses() == [183, 183]
    tx.respond(response_for(tx.request, 200, to_tag="t1"))
    assert tx.state == "completed"
    h.run_until(31.9)
    h.layer.receive(make_request("OPTIONS"), PEER)
    assert h.statuses() == [183, 183, 200, 200]
    assert len(h.requests) == 1
    with capture_logs() as logs:
        tx.respond(response_for(tx.request, 500))
    assert logs[0]["event"] == "sip.transaction.invalid_transition"
    h.run_until(32)  # Timer J = 64*T1
    assert tx.state == "terminated"
    assert h.layer.stats()["retransmissions_absorbed"] == 3
    h.assert_idle()


# -- client INVITE ---------------------------------------------------------------------------------


def test_timer_a_doubles_without_cap_until_timer_b(h: Harness) -> None:
    req = make_request(branch=new_branch())
    tx, responses, timeouts = start_client(h, req)
    assert tx.is_invite and tx.state == "calling"
    h.run_until(31.99)
    assert h.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert timeouts == []
    h.run_until(32.0)
    assert timeouts == [True]
    assert tx.state == "terminated"
    stats = h.layer.stats()
    assert stats["timeouts"] == 1 and stats["retransmissions_sent"] == 6
    h.assert_idle()


def test_provisional_stops_timer_a_and_duplicates_are_filtered(h: Harness) -> None:
    req = make_request(branch=new_branch())
    tx, responses, timeouts = start_client(h, req)
    h.run_until(0.7)
    ringing = response_for(req, 180, to_tag="a")
    h.layer.receive(wire(ringing), PEER)
    h.layer.receive(wire(ringing), PEER)
    h.layer.receive(wire(response_for(req, 183, to_tag="a")), PEER)
    h.layer.receive(wire(response_for(req, 180, to_tag="b")), PEER)  # another fork
    assert [(r.status, r.to.tag) for r in responses] == [(180, "a"), (183, "a"), (180, "b")]
    assert tx.state == "proceeding" and tx.timers == ()
    h.run_until(100)
    assert len(h.sent) == 2  # no retransmission, no Timer B in proceeding
    assert timeouts == []


def test_non_2xx_final_generates_ack_and_timer_d(h: Harness) -> None:
    routes = "Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com;lr>\r\n"
    req = make_request(branch=new_branch(), uri="sip:bob@example.org", extra=routes)
    tx, responses, timeouts = start_client(h, req)
    h.layer.receive(wire(response_for(req, 180, to_tag="bob1")), PEER)
    busy = response_for(req, 486, to_tag="bob1")
    h.layer.receive(wire(busy), PEER)
    assert [r.status for r in responses] == [180, 486]
    assert tx.state == "completed"
    ack = h.messages()[-1]
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert h.sent[-1][2] == PEER
    assert str(ack.uri) == "sip:bob@example.org"
    assert ack.top_via.branch == tx.branch == req.top_via.branch
    assert len(ack.vias) == 1
    assert ack.to.tag == "bob1"
    assert ack.from_.tag == "from1"
    assert ack.call_id == req.call_id
    assert (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    assert ack.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    # A retransmitted 486 is ACKed again and not given to the TU.
    h.layer.receive(wire(busy), PEER)
    assert [m.method for m in h.messages() if isinstance(m, Request)] == ["INVITE", "ACK", "ACK"]
    assert len(responses) == 2
    h.run_until(31.9)
    assert tx.state == "completed"
    h.run_until(32.0)  # Timer D
    assert tx.state == "terminated"
    h.assert_idle()


def test_2xx_terminates_client_and_retransmissions_are_stray(h: Harness) -> None:
    req = make_request(branch=new_branch())
    tx, responses, timeouts = start_client(h, req)
    ok = response_for(req, 200, to_tag="b")
    h.layer.receive(wire(ok), PEER)
    assert tx.state == "terminated" and [r.status for r in responses] == [200]
    assert [m.method for m in h.messages() if isinstance(m, Request)] == ["INVITE"]  # the TU ACKs 2xx
    h.layer.receive(wire(ok), PEER)
    assert len(h.strays) == 1 and h.strays[0][0].status == 200
    assert h.layer.stats()["stray_responses"] == 1
    h.assert_idle()


def test_response_matching_by_branch_and_cseq_method(h: Harness) -> None:
    req = make_request("OPTIONS", branch=new_branch())
    tx, responses, _ = start_client(h, req)
    other = make_request("OPTIONS", branch="z9hG4bKsomeoneelse")
    h.layer.receive(wire(response_for(other, 200)), PEER)
    wrong_method = response_for(req, 200)
    wrong_method.headers.set("CSeq", "1 INFO")
    h.layer.receive(wire(wrong_method), PEER)
    assert responses == [] and len(h.strays) == 2


# -- client non-INVITE -----------------------------------------------------------------------------


def test_timer_e_schedule_and_timer_f(h: Harness) -> None:
    req = make_request("OPTIONS", branch=new_branch())
    tx, responses, timeouts = start_client(h, req)
    assert tx.state == "trying" and not tx.is_invite
    h.run_until(31.99)
    assert h.times() == [0.0, *TIMER_G_TIMES]
    h.run_until(32.0)
    assert timeouts == [True] and tx.state == "terminated"
    h.assert_idle()


def test_timer_e_uses_t2_after_provisional(h: Harness) -> None:
    req = make_request("BYE", branch=new_branch(), to_tag="t")
    tx, responses, timeouts = start_client(h, req)
    h.run_until(1.0)  # sent at 0 and 0.5; next due at 1.5 (interval 1)
    h.layer.receive(wire(response_for(req, 100)), PEER)
    assert tx.state == "proceeding"
    h.run_until(14.0)
    assert h.times() == [0.0, 0.5, 1.5, 5.5, 9.5, 13.5]
    h.layer.receive(wire(response_for(req, 200)), PEER)
    assert tx.state == "completed" and [r.status for r in responses] == [100, 200]
    h.layer.receive(wire(response_for(req, 200)), PEER)  # absorbed in completed
    assert len(responses) == 2
    h.run_until(18.99)
    assert tx.state == "completed"
    h.run_until(19.0)  # Timer K = T4 = 5 s
    assert tx.state == "terminated"
    assert timeouts == []
    h.assert_idle()


# -- CANCEL (client side) --------------------------------------------------------------------------


def test_cancel_deferred_until_provisional_then_487_flow(h: Harness) -> None:
    routes = "Route: <sip:p1.example.com;lr>\r\n"
    req = make_request(branch=new_branch(), extra=routes)
    tx, responses, timeouts = start_client(h, req)
    ctx = h.layer.cancel(tx)
    assert ctx is not None and ctx.state == "pending"
    assert h.layer.cancel(tx) is ctx
    h.run_until(1.0)
    assert [m.method for m in h.messages() if isinstance(m, Request)] == ["INVITE", "INVITE"]
    h.layer.receive(wire(response_for(req, 180, to_tag="b")), PEER)
    cancel = h.messages()[-1]
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == tx.branch
    assert (cancel.cseq.number, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.to.tag is None and str(cancel.uri) == str(req.uri)
    assert cancel.headers.get_all("Route") == ["<sip:p1.example.com;lr>"]
    assert ctx.state == "trying"
    h.layer.receive(wire(response_for(cancel, 200, to_tag="b")), PEER)
    assert ctx.state == "completed"
    h.layer.receive(wire(response_for(req, 487, to_tag="b")), PEER)
    assert [r.status for r in responses] == [180, 487]
    assert h.messages()[-1].method == "ACK"  # type: ignore[union-attr]
    h.run_until(40)
    assert timeouts == []
    h.assert_idle()


def test_cancel_after_final_returns_none_and_pending_cancel_is_dropped(h: Harness) -> None:
    req = make_request(branch=new_branch())
    tx, _, _ = start_client(h, req)
    ctx = h.layer.cancel(tx)
    assert ctx is not None
    h.layer.receive(wire(response_for(req, 603, to_tag="b")), PEER)
    assert ctx.state == "terminated"
    assert "CANCEL" not in [m.method for m in h.messages() if isinstance(m, Request)]
    req2 = make_request(branch=new_branch(), call_id="call-2")
    tx2, _, _ = start_client(h, req2)
    h.layer.receive(wire(response_for(req2, 486, to_tag="b")), PEER)
    assert h.layer.cancel(tx2) is None
    h.run_until(40)
    h.assert_idle()


def test_invite_given_up_64_t1_after_cancel_without_final(h: Harness) -> None:
    req = make_request(branch=new_branch())
    tx, responses, timeouts = start_client(h, req)
    h.layer.receive(wire(response_for(req, 180, to_tag="b")), PEER)
    h.run_until(10)
    ctx = h.layer.cancel(tx)
    assert ctx is not None and ctx.state == "trying"
    h.layer.receive(wire(response_for(ctx.request, 200, to_tag="b")), PEER)
    h.run_until(41.9)
    assert timeouts == []
    h.run_until(42.0)
    assert timeouts == [True] and tx.state == "terminated"
    h.run_until(60)
    h.assert_idle()


# -- 2xx retransmission by the TU ------------------------------------------------------------------


def test_invite_ok_retransmitter_schedule_and_give_up() -> None:
    clock = Clock()
    sent: list[float] = []
    gave_up: list[bool] = []
    retx = InviteOkRetransmitter(
        clock,
        lambda data, dest: sent.append(clock.seconds()),
        b"SIP/2.0 200 OK\r\n\r\n",
        PEER,
        0.5,
        4.0,
        on_give_up=lambda: gave_up.append(True),
    )
    h = Harness()
    h.clock = clock
    h.run_until(31.99)
    assert sent == TIMER_G_TIMES
    assert gave_up == [] and retx.active()
    h.run_until(32.0)
    assert gave_up == [True] and not retx.active()
    assert retx.retransmissions == 10
    assert clock.getDelayedCalls() == []


def test_invite_ok_retransmitter_stops_on_ack() -> None:
    clock = Clock()
    sent: list[float] = []
    gave_up: list[bool] = []
    retx = InviteOkRetransmitter(
        clock, lambda data, dest: sent.append(clock.seconds()), b"x", PEER, on_give_up=lambda: gave_up.append(True)
    )
    clock.advance(0.5)
    clock.advance(1.0)
    retx.ack_received()
    clock.advance(100)
    assert sent == [0.5, 1.5] and gave_up == []
    assert clock.getDelayedCalls() == []


def test_layer_ok_retransmitter_counts_and_is_tracked(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 200, to_tag="t1"))
    gave_up: list[bool] = []
    retx = h.layer.start_ok_retransmitter(tx, on_give_up=lambda: gave_up.append(True))
    h.run_until(2.0)
    assert h.statuses() == [100, 200, 200, 200]
    assert h.layer.stats()["ok_retransmitters"] == 1
    retx.ack_received()
    h.run_until(40)
    assert gave_up == []
    assert h.layer.stats()["retransmissions_sent"] == 2
    h.assert_idle()


# -- robustness, stats, memory ---------------------------------------------------------------------


def test_transport_error_reported_to_client_tu() -> None:
    h = Harness(fail_send=True)
    errors: list[bool] = []
    req = make_request(branch=new_branch())
    tx = h.layer.send_request(
        req, PEER, on_response=lambda r: None, on_timeout=lambda: None, on_transport_error=lambda: errors.append(True)
    )
    assert tx.state == "terminated" and errors == []  # reported from a zero-delay timer
    h.clock.advance(0)
    assert errors == [True]
    assert h.layer.stats()["transport_errors"] == 1
    h.assert_idle()


def test_tu_callback_exception_is_contained(h: Harness) -> None:
    def boom(request: Request, tx: ServerTransaction | None, source: Address) -> None:
        raise RuntimeError("TU bug")

    h.layer.on_request = boom
    with capture_logs() as logs:
        h.layer.receive(make_request("OPTIONS"), PEER)
    assert logs[0]["event"] == "sip.transaction.callback_failed"
    assert h.layer.stats()["callback_errors"] == 1


def test_request_without_via_is_logged(h: Harness) -> None:
    req = make_request("OPTIONS")
    req.headers.remove("Via")
    req.invalidate()
    with capture_logs() as logs:
        h.layer.receive(req, PEER)
    assert logs[0]["event"] == "sip.transaction.bad_message"


def test_client_request_requires_branch(h: Harness) -> None:
    with pytest.raises(ValueError):
        h.layer.send_request(make_request(branch=None), PEER, on_response=lambda r: None, on_timeout=lambda: None)


def test_new_branch_is_unique_with_magic_cookie() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") for b in branches)


def test_tables_empty_after_mixed_traffic_and_stats(h: Harness) -> None:
    for i in range(20):
        call_id = f"mix-{i}"
        branch = f"z9hG4bKmix{i}"
        h.layer.receive(make_request(branch=branch, call_id=call_id), PEER)
        stx = h.requests[-1][1]
        assert isinstance(stx, ServerInviteTransaction)
        if i % 3 == 0:
            stx.respond(response_for(stx.request, 200, to_tag="t"))
            h.layer.receive(make_request("ACK", branch=branch + "a", call_id=call_id, to_tag="t"), PEER)
        elif i % 3 == 1:
            stx.respond(response_for(stx.request, 486, to_tag="t"))
            h.layer.receive(make_request("ACK", branch=branch, call_id=call_id, to_tag="t"), PEER)
        else:
            h.layer.receive(make_request("CANCEL", branch=branch, call_id=call_id), PEER)
            h.layer.receive(make_request("ACK", branch=branch, call_id=call_id, to_tag=stx.to_tag()), PEER)
        h.layer.receive(make_request("BYE", branch=branch + "b", call_id=call_id, to_tag="t", cseq=2), PEER)
        bye_tx = h.requests[-1][1]
        assert bye_tx is not None
        bye_tx.respond(response_for(bye_tx.request, 200))
        out = make_request("OPTIONS", branch=new_branch(), call_id=call_id)
        start_client(h, out)
        h.layer.receive(wire(response_for(out, 200, to_tag="o")), PEER)
    stats = h.layer.stats()
    assert stats["server_created"] == 20 + 6 + 20  # INVITEs, CANCELs, BYEs
    assert stats["client_created"] == 20
    assert stats["cancels_matched"] == 6
    assert stats["server_transactions"] > 0 and stats["client_transactions"] == 20
    h.run_until(100)
    h.assert_idle()
    assert h.layer.stats()["ack_timeouts"] == 0


def test_close_cancels_all_timers(h: Harness) -> None:
    h.layer.receive(make_request(), PEER)
    tx = h.requests[0][1]
    assert tx is not None
    tx.respond(response_for(tx.request, 486, to_tag="t"))
    start_client(h, make_request("OPTIONS", branch=new_branch()))
    start_client(h, make_request(branch=new_branch(), call_id="c2"))
    h.layer.receive(make_request(branch="z9hG4bKok", call_id="c3"), PEER)
    ok_tx = h.requests[-1][1]
    assert ok_tx is not None
    ok_tx.respond(response_for(ok_tx.request, 200, to_tag="t"))
    h.layer.start_ok_retransmitter(ok_tx)
    assert h.clock.getDelayedCalls()
    h.layer.close()
    h.assert_idle()
