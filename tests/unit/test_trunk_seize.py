"""Line seize on a trunk (抢线): an emergency that finds every channel taken ends the newest outbound
non-emergency call and takes its channel (UserAgentCore.seize_trunk_channel, used by inbound INVITEs and by
outbound.originate). Sans-I/O: the UA core on a Twisted Clock with the fake network of tests/unit/uahelpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callcenter.calls.model import Call, CallState, EndReason
from callcenter.calls.outbound import OutboundError
from callcenter.sip.message import Request, response_for
from tests.unit.test_ua import Carrier
from tests.unit.uahelpers import TRUNK_ADDR, Harness, Peer, feed_response, make_harness


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = make_harness(channels=2, reserve=1)  # one ordinary channel, one kept for emergencies
    yield harness
    harness.ua.close()


def invite_of(h: Harness, call: Call) -> Request:
    return [r for r in h.net.requests("INVITE") if r.call_id == call.call_id][-1]


def place(h: Harness, number: str, *, answer: bool = True, ended: list[Call] | None = None) -> Call:
    """An outbound call through the trunk, answered by the carrier (or left ringing)."""
    call = h.ua.outbound.originate(number, trunk_name="carrier", on_end=None if ended is None else ended.append)
    carrier = Carrier(h)
    invite = invite_of(h, call)
    if answer:
        carrier.reply(invite, 200, body=carrier.answer_sdp(invite), extra=[("Contact", f"<sip:{number}@127.0.0.2>")])
        assert call.state is CallState.CONFIRMED
    else:
        carrier.reply(invite, 180)
        assert call.state is CallState.RINGING
    return call


def inbound(h: Harness, number: str) -> tuple[Peer, int]:
    peer = Peer(h)
    peer.send_invite(number)
    response = peer.final_response()
    assert response is not None
    return peer, response.status


def requests_for(h: Harness, method: str, call: Call) -> list[Request]:
    return [r for r in h.net.requests(method) if r.call_id == call.call_id]


def test_an_inbound_emergency_takes_the_channel_of_an_outbound_call(h: Harness) -> None:
    ended: list[Call] = []
    callback = place(h, "13800000001", ended=ended)  # a callback to an elder: the ordinary channel
    _, status = inbound(h, "112")  # the emergency reserve
    assert status == 200 and len(h.trunk.active_calls) == 2
    h.net.take()
    peer, status = inbound(h, "112")  # every channel taken: the callback gives its channel up
    assert status == 200
    assert h.ua.counters["trunk_seized"] == 1
    (bye,) = requests_for(h, "BYE", callback)
    assert [a for m, a in h.net.sent if m is bye] == [TRUNK_ADDR]
    assert callback.call_id not in h.trunk.active_calls and peer.call_id in h.trunk.active_calls
    assert len(h.trunk.active_calls) == 2
    feed_response(h, response_for(bye, 200))
    assert ended == [callback] and callback.end_reason is EndReason.LOCAL_BYE
    assert len(h.trunk.active_calls) == 2  # the BYE's end does not free the emergency's channel


def test_a_non_emergency_inbound_call_seizes_nothing(h: Harness) -> None:
    callback = place(h, "13800000001")
    _, status = inbound(h, "100")
    assert status == 486  # only the emergency reserve is left
    inbound(h, "112")
    _, status = inbound(h, "100")
    assert status == 503  # full
    assert h.ua.counters["trunk_seized"] == 0 and requests_for(h, "BYE", callback) == []
    assert callback.state is CallState.CONFIRMED and callback.call_id in h.trunk.active_calls


def test_an_outbound_emergency_call_seizes_a_ringing_outbound_call(h: Harness) -> None:
    ended: list[Call] = []
    callback = place(h, "13800000001", answer=False, ended=ended)
    inbound(h, "112")
    ambulance = h.ua.outbound.originate("120", trunk_name="carrier")
    assert ambulance.emergency and h.ua.counters["trunk_seized"] == 1
    (cancel,) = requests_for(h, "CANCEL", callback)  # not answered yet: cancelled
    assert invite_of(h, ambulance).uri.user == "120"
    assert callback.call_id not in h.trunk.active_calls and callback.active  # until the 487
    assert ambulance.call_id in h.trunk.active_calls and len(h.trunk.active_calls) == 2
    feed_response(h, response_for(cancel, 200, to_tag="carrier1"))
    Carrier(h).reply(invite_of(h, callback), 487)
    assert ended == [callback] and callback.end_reason is EndReason.CANCELLED


def test_the_newest_outbound_call_is_the_one_seized() -> None:
    h = make_harness(channels=3, reserve=1)
    try:
        older = place(h, "13800000001")
        h.advance(5)
        newer = place(h, "13800000002")
        inbound(h, "112")
        _, status = inbound(h, "112")
        assert status == 200
        assert requests_for(h, "BYE", newer) and not requests_for(h, "BYE", older)
        assert older.call_id in h.trunk.active_calls and newer.call_id not in h.trunk.active_calls
    finally:
        h.ua.close()


def test_emergency_calls_are_never_seized(h: Harness) -> None:
    ambulance = place(h, "120")  # an emergency outbound call (on the ordinary channel)
    first, status = inbound(h, "112")
    assert status == 200
    _, status = inbound(h, "112")
    assert status == 503
    with pytest.raises(OutboundError):
        h.ua.outbound.originate("110", trunk_name="carrier")
    assert h.ua.counters["trunk_seized"] == 0
    assert requests_for(h, "BYE", ambulance) == [] and ambulance.state is CallState.CONFIRMED
    assert h.net.requests("BYE") == []


def test_inbound_calls_are_never_seized(h: Harness) -> None:
    inbound(h, "100")  # an ordinary inbound call on the ordinary channel
    inbound(h, "112")
    _, status = inbound(h, "112")
    assert status == 503 and h.ua.counters["trunk_seized"] == 0 and h.net.requests("BYE") == []


def test_a_call_serving_an_emergency_caller_is_never_seized() -> None:
    """A family member called for an elder in an emergency (a transfer or a three-way call) is an ordinary
    outbound call, but ending it would end help for the elder."""
    h = make_harness(channels=3, reserve=1)
    try:
        elder, status = inbound(h, "112")
        assert status == 200
        family = place(h, "13900000009")
        family.linked = h.ua.calls[elder.call_id]  # as an IVR transfer links the two
        inbound(h, "112")  # the last channel
        _, status = inbound(h, "112")
        assert status == 503 and requests_for(h, "BYE", family) == [] and h.ua.counters["trunk_seized"] == 0
        family.linked = None
        h.ua.calls[elder.call_id].parties.append(family)  # as a three-way call keeps it
        with pytest.raises(OutboundError):
            h.ua.outbound.originate("120", trunk_name="carrier")
        assert requests_for(h, "BYE", family) == [] and family.state is CallState.CONFIRMED
        h.ua.calls[elder.call_id].parties.remove(family)  # an ordinary callback again: it gives way
        _, status = inbound(h, "112")
        assert status == 200 and requests_for(h, "BYE", family) and h.ua.counters["trunk_seized"] == 1
    finally:
        h.ua.close()
