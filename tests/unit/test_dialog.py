"""RFC 3261 §12 dialogs: identifiers, route sets, loose/strict routing, CSeq ordering, state machine."""

from __future__ import annotations

import pytest

from callcenter.sip.dialog import Dialog, DialogError, DialogState
from callcenter.sip.headers import Via
from callcenter.sip.message import Request, Response, parse_message, response_for
from callcenter.sip.uri import SipUri

RR1 = "<sip:p1.example.com;lr>"
RR2 = "<sip:p2.example.com;lr>"
VIA = Via(transport="UDP", host="127.0.0.1", port=5060, params={"branch": "z9hG4bKlocal1"})


def invite(*, record_route: list[str] | None = None, cseq: int = 7, contact: bool = True) -> Request:
    lines = [
        "INVITE sip:100@cc.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc",
        "Max-Forwards: 70",
        "From: Alice <sip:alice@example.com>;tag=alice1",
        "To: <sip:100@cc.example.com>",
        "Call-ID: dlg-1@192.0.2.10",
        f"CSeq: {cseq} INVITE",
    ]
    if contact:
        lines.append("Contact: <sip:alice@192.0.2.10:5070>")
    for rr in record_route or []:
        lines.append(f"Record-Route: {rr}")
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def answer(request: Request, status: int = 200, *, contact: str | None = "<sip:bob@192.0.2.99:5080>") -> Response:
    resp = response_for(request, status, to_tag="bob1")
    if contact:
        resp.headers.add("Contact", contact)
    wire = parse_message(bytes(resp))
    assert isinstance(wire, Response)
    return wire


def uas_dialog(record_route: list[str] | None = None) -> Dialog:
    req = invite(record_route=record_route)
    return Dialog.from_uas(req, answer(req), "<sip:100@127.0.0.1:5060>")


def roundtrip(req: Request) -> Request:
    msg = parse_message(bytes(req))
    assert isinstance(msg, Request)
    return msg


# -- creation --------------------------------------------------------------------------------------


def test_from_uas_takes_ids_target_and_record_route_in_order() -> None:
    req = invite(record_route=[RR1, RR2])
    resp = answer(req)
    d = Dialog.from_uas(req, resp, "<sip:100@127.0.0.1:5060>")
    assert d.key == ("dlg-1@192.0.2.10", "bob1", "alice1")
    assert d.local_tag == "bob1" and d.remote_tag == "alice1"
    assert str(d.remote_target) == "sip:alice@192.0.2.10:5070"
    assert d.route_set == [RR1, RR2]  # UAS: same order as in the request
    assert d.remote_cseq == 7
    assert d.local_cseq == 0
    assert d.state is DialogState.CONFIRMED
    assert not d.is_uac
    assert d.local_party.tag == "bob1"
    assert d.remote_party.tag == "alice1"


def test_from_uas_with_provisional_is_early() -> None:
    req = invite()
    d = Dialog.from_uas(req, answer(req, 180), "<sip:100@127.0.0.1>")
    assert d.state is DialogState.EARLY
    d.transition(DialogState.CONFIRMED)
    assert d.state is DialogState.CONFIRMED


def test_from_uas_without_contact_targets_from_uri() -> None:
    req = invite(contact=False)
    d = Dialog.from_uas(req, answer(req), "<sip:100@127.0.0.1>")
    assert str(d.remote_target) == "sip:alice@example.com"


def test_from_uac_reverses_record_route_and_targets_contact() -> None:
    req = invite()
    resp = response_for(req, 200, to_tag="bob1")
    resp.headers.add("Record-Route", RR1)
    resp.headers.add("Record-Route", RR2)
    resp.headers.add("Contact", "<sip:bob@192.0.2.99:5080>")
    wire = parse_message(bytes(resp))
    assert isinstance(wire, Response)
    d = Dialog.from_uac(req, wire)
    assert d.route_set == [RR2, RR1]  # UAC: reversed
    assert d.is_uac
    assert d.local_tag == "alice1" and d.remote_tag == "bob1"
    assert str(d.remote_target) == "sip:bob@192.0.2.99:5080"
    assert d.local_cseq == 7
    assert d.remote_cseq is None
    assert d.local_contact == "<sip:alice@192.0.2.10:5070>"
    assert d.state is DialogState.CONFIRMED


def test_from_uac_comma_separated_record_route_reversed() -> None:
    req = invite()
    resp = response_for(req, 200, to_tag="bob1")
    resp.headers.add("Record-Route", f"{RR1}, {RR2}")
    d = Dialog.from_uac(req, resp)
    assert d.route_set == [RR2, RR1]


def test_from_uac_without_contact_targets_request_uri() -> None:
    req = invite()
    d = Dialog.from_uac(req, answer(req, 180, contact=None))
    assert str(d.remote_target) == "sip:100@cc.example.com"
    assert d.state is DialogState.EARLY


# -- in-dialog requests ----------------------------------------------------------------------------


def test_create_request_without_routes_goes_to_remote_target() -> None:
    d = uas_dialog()
    bye = roundtrip(d.create_request("BYE", VIA))
    assert str(bye.uri) == "sip:alice@192.0.2.10:5070"
    assert bye.headers.get_all("Route") == []
    assert bye.from_.tag == "bob1" and bye.to.tag == "alice1"
    assert bye.call_id == "dlg-1@192.0.2.10"
    assert bye.cseq.number == 1 and bye.cseq.method == "BYE"
    assert bye.headers.get("Max-Forwards") == "70"
    assert bye.top_via.branch == "z9hG4bKlocal1"
    assert "Contact" not in bye.headers
    assert str(d.next_hop()) == "sip:alice@192.0.2.10:5070"


def test_create_request_loose_routing_keeps_target_and_routes() -> None:
    d = uas_dialog([RR1, RR2])
    bye = roundtrip(d.create_request("BYE", VIA))
    assert str(bye.uri) == "sip:alice@192.0.2.10:5070"
    assert bye.headers.get_all("Route") == [RR1, RR2]
    hop = d.next_hop()
    assert isinstance(hop, SipUri) and hop.host == "p1.example.com"


def test_create_request_strict_routing_puts_first_route_in_request_uri() -> None:
    strict = "<sip:strict.example.com>"
    d = uas_dialog([strict, RR2])
    bye = roundtrip(d.create_request("BYE", VIA))
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == [RR2, "<sip:alice@192.0.2.10:5070>"]
    hop = d.next_hop()
    assert isinstance(hop, SipUri) and hop.host == "strict.example.com"


def test_cseq_increments_and_ack_reuses_invite_cseq() -> None:
    req = invite()
    d = Dialog.from_uac(req, answer(req))
    ack = d.create_request("ACK", VIA, cseq=req.cseq.number)
    assert ack.cseq.number == 7 and ack.cseq.method == "ACK"
    assert d.local_cseq == 7  # unchanged by the ACK
    info = d.create_request("INFO", VIA)
    bye = d.create_request("BYE", VIA)
    assert (info.cseq.number, bye.cseq.number) == (8, 9)


def test_reinvite_carries_contact_body_and_extra_headers() -> None:
    d = uas_dialog()
    body = b"v=0\r\n"
    reinv = roundtrip(
        d.create_request("INVITE", VIA, body=body, content_type="application/sdp", extra=[("Subject", "hold")])
    )
    assert reinv.headers.get("Contact") == "<sip:100@127.0.0.1:5060>"
    assert reinv.headers.get("Content-Type") == "application/sdp"
    assert reinv.headers.get("Subject") == "hold"
    assert reinv.body == body


def test_update_target_from_contact() -> None:
    d = uas_dialog()
    req = invite()
    req.headers.set("Contact", "<sip:alice@192.0.2.11:6000>")
    req.invalidate()
    d.update_target(req)
    assert str(d.remote_target) == "sip:alice@192.0.2.11:6000"
    req.headers.remove("Contact")
    req.invalidate()
    d.update_target(req)  # no Contact: unchanged
    assert str(d.remote_target) == "sip:alice@192.0.2.11:6000"


# -- CSeq ordering ---------------------------------------------------------------------------------


def in_dialog(method: str, cseq: int) -> Request:
    text = (
        f"{method} sip:100@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx" + str(cseq) + method + "\r\n"
        "From: <sip:alice@example.com>;tag=alice1\r\n"
        "To: <sip:100@cc.example.com>;tag=bob1\r\n"
        "Call-ID: dlg-1@192.0.2.10\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_accept_remote_cseq_orders_requests() -> None:
    d = uas_dialog()  # remote CSeq 7 from the INVITE
    assert d.accept_remote_cseq(in_dialog("INFO", 8))
    assert d.remote_cseq == 8
    assert not d.accept_remote_cseq(in_dialog("BYE", 5))  # lower: out of order (500)
    assert d.remote_cseq == 8
    assert d.accept_remote_cseq(in_dialog("BYE", 20))
    assert d.remote_cseq == 20


def test_ack_and_cancel_are_not_ordered() -> None:
    d = uas_dialog()
    assert d.accept_remote_cseq(in_dialog("ACK", 7))
    assert d.accept_remote_cseq(in_dialog("CANCEL", 1))
    assert d.remote_cseq == 7


def test_uac_dialog_accepts_first_remote_request_with_any_cseq() -> None:
    req = invite()
    d = Dialog.from_uac(req, answer(req))
    assert d.remote_cseq is None
    assert d.accept_remote_cseq(in_dialog("BYE", 1))
    assert d.remote_cseq == 1
    assert not d.accept_remote_cseq(in_dialog("INFO", 0))


# -- state machine ---------------------------------------------------------------------------------


def test_dialog_state_transitions() -> None:
    req = invite()
    d = Dialog.from_uas(req, answer(req, 180), "<sip:x@127.0.0.1>")
    d.transition(DialogState.EARLY)  # same state: no-op
    d.transition(DialogState.CONFIRMED)
    with pytest.raises(DialogError):
        d.transition(DialogState.EARLY)
    d.transition(DialogState.TERMINATED)
    for new in (DialogState.EARLY, DialogState.CONFIRMED):
        with pytest.raises(DialogError):
            d.transition(new)
    assert d.state is DialogState.TERMINATED


def test_early_dialog_can_terminate() -> None:
    req = invite()
    d = Dialog.from_uas(req, answer(req, 183), "<sip:x@127.0.0.1>")
    d.transition(DialogState.TERMINATED)
    assert d.state is DialogState.TERMINATED
