"""Whole SIP flows through the user-agent core: registrar, authentication policy, inbound and outbound calls,
trunk registration. Sans-I/O: a Twisted Clock, a fake ``send`` and raw messages fed through ``ua.receive``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import pytest

from callcenter.bus.events import CallAnswered, CallEnded, CallStarted, Event, RegistrationChanged
from callcenter.bus.inprocess import InProcessBus
from callcenter.calls.model import Call, CallState, EndReason
from callcenter.calls.outbound import OutboundError
from callcenter.calls.records import CallRecorder
from callcenter.calls.trunk_registration import TrunkRegistration
from callcenter.calls.ua import ALLOW, RegistrationPolicy
from callcenter.sip.digest import parse_challenge, parse_credentials
from callcenter.sip.digest_server import AccountSecret, AuthStatus, DigestServer
from callcenter.sip.message import Request, Response, parse_message, response_for
from callcenter.sip.sdp import SessionDescription, negotiate
from callcenter.store.cdr import CallRecordData
from tests.unit.uahelpers import (
    DOMAIN,
    G729_SDP,
    PASSWORDS,
    PCMA_SDP,
    PCMU_PCMA_SDP,
    PHONE_ADDR,
    START,
    STRANGER_ADDR,
    TRUNK_ADDR,
    Harness,
    Peer,
    Phone,
    authorization_for,
    feed_response,
    make_harness,
)

CARRIER_REALM = "carrier.example"
TRUNK_USER, TRUNK_PASSWORD = "cc-trunk", "trunk-secret"


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = make_harness()
    yield harness
    harness.ua.close()


def answered(h: Harness, number: str = "100", source: tuple[str, str, int] = TRUNK_ADDR) -> Peer:
    """An inbound call answered and ACKed."""
    peer = Peer(h, source)
    peer.send_invite(number)
    resp = peer.final_response()
    assert resp is not None and resp.status == 200, resp
    peer.ack()
    return peer


def call_of(h: Harness, peer: Peer) -> Call:
    return h.ua.calls[peer.call_id]


def ended(h: Harness, call_id: str) -> Call:
    (call,) = [c for c in h.observer.ended if c.call_id == call_id]
    return call


def sdp_of(msg: Request | Response) -> SessionDescription:
    assert msg.headers.get("Content-Type") == "application/sdp"
    return SessionDescription.parse(msg.body)


# ==================================================================================================
# Registrar and digest authentication


def test_register_without_credentials_is_challenged_sha256_then_md5(h: Harness) -> None:
    resp = Phone(h).register()
    assert resp.status == 401
    assert resp.to.tag
    challenges = [parse_challenge(v) for v in resp.headers.get_all("WWW-Authenticate")]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert all(c.realm == DOMAIN and c.qop == ("auth",) and not c.stale for c in challenges)
    assert challenges[0].nonce != challenges[1].nonce
    assert h.ua.counters["auth_challenges"] == 1


def test_register_with_credentials_binds_contact(h: Harness) -> None:
    phone = Phone(h)
    resp = phone.register_with_auth(expires=600)
    assert resp.status == 200
    assert resp.headers.get("Server") == "callcenter"
    (contact,) = resp.contacts
    assert str(contact.uri) == "sip:1001@192.0.2.20:5062"
    assert contact.params.get("expires") == "600"
    assert h.ua.lookup_contacts("1001") == [("sip:1001@192.0.2.20:5062", PHONE_ADDR)]
    assert h.observer.registrations == [(f"sip:1001@{DOMAIN}", "sip:1001@192.0.2.20:5062", 600)]
    assert h.ua.flood.is_exempt(PHONE_ADDR[1])
    assert h.ua.counters["registrations"] == 1


def test_register_md5_only_client_is_accepted(h: Harness) -> None:
    phone = Phone(h)
    challenge = phone.register()
    md5 = [v for v in challenge.headers.get_all("WWW-Authenticate") if "MD5" in v]
    challenge.headers.remove("WWW-Authenticate")  # a client that only knows MD5 sees only that one
    challenge.headers.add("WWW-Authenticate", md5[0])
    auth = authorization_for(challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username="1001", password="secret1001")
    assert "algorithm=MD5" in auth
    assert phone.register(authorization=auth).status == 200


def test_register_wrong_password_is_403(h: Harness) -> None:
    resp = Phone(h).register_with_auth(password="wrong")
    assert resp.status == 403
    assert h.ua.lookup_contacts("1001") == []
    assert h.ua.counters["auth_failures"] == 1


def test_register_with_credentials_of_another_account_is_403(h: Harness) -> None:
    phone = Phone(h, "1001")
    challenge = phone.register()
    auth = authorization_for(
        challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username="1002", password=PASSWORDS["1002"]
    )
    resp = phone.register(authorization=auth)
    assert resp.status == 403
    assert h.ua.lookup_contacts("1001") == [] and h.ua.lookup_contacts("1002") == []


def test_register_unknown_user_is_challenged_then_forbidden(h: Harness) -> None:
    phone = Phone(h, "9999")
    first = phone.register()
    assert first.status == 401  # same as for a real account: existence is not revealed
    assert len(first.headers.get_all("WWW-Authenticate")) == 2
    auth = authorization_for(first, method="REGISTER", uri=f"sip:{DOMAIN}", username="9999", password="guess")
    second = phone.register(authorization=auth)
    assert second.status == 403
    # A known account with a wrong password gets exactly the same answer.
    known = Phone(h, "1001").register_with_auth(password="guess")
    assert (known.status, known.reason) == (second.status, second.reason)


def test_stale_nonce_is_rechallenged_with_stale_true(h: Harness) -> None:
    phone = Phone(h)
    challenge = phone.register()
    h.clock.advance(301)  # nonce_lifetime is 300 s
    auth = authorization_for(challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username="1001", password="secret1001")
    resp = phone.register(authorization=auth)
    assert resp.status == 401
    challenges = [parse_challenge(v) for v in resp.headers.get_all("WWW-Authenticate")]
    assert challenges and all(c.stale for c in challenges)
    # Answering the fresh challenge works.
    auth = authorization_for(resp, method="REGISTER", uri=f"sip:{DOMAIN}", username="1001", password="secret1001")
    assert phone.register(authorization=auth).status == 200


def test_rfc2069_answer_without_qop_is_accepted(h: Harness) -> None:
    """pyVoIP answers without qop/nc/cnonce."""
    phone = Phone(h)
    challenge = phone.register()
    auth = authorization_for(
        challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username="1001", password="secret1001", rfc2069=True
    )
    assert "qop" not in auth and "nc=" not in auth
    assert phone.register(authorization=auth).status == 200


def test_register_malformed_authorization_is_400(h: Harness) -> None:
    assert Phone(h).register(authorization="Digest garbage").status == 400


def test_register_too_brief_is_423(h: Harness) -> None:
    resp = Phone(h).register_with_auth(expires=30)
    assert resp.status == 423
    assert resp.headers.get("Min-Expires") == "60"


def test_unregister_with_wildcard(h: Harness) -> None:
    phone = Phone(h)
    assert phone.register_with_auth(expires=600).status == 200
    resp = phone.register_with_auth(expires=0, contact="*")
    assert resp.status == 200
    assert resp.contacts == []
    assert h.ua.lookup_contacts("1001") == []
    assert h.observer.registrations[-1] == (f"sip:1001@{DOMAIN}", "sip:1001@192.0.2.20:5062", 0)
    assert not h.ua.flood.is_exempt(PHONE_ADDR[1])


def test_binding_expires_at_the_sweep(h: Harness) -> None:
    phone = Phone(h)
    assert phone.register_with_auth(expires=60).status == 200  # expires at START + 60
    h.advance(59)  # small steps: the sweep re-arms itself 30 s after it ran
    assert h.ua.lookup_contacts("1001") != []
    assert h.observer.registrations[-1][2] == 60
    assert h.ua.flood.is_exempt(PHONE_ADDR[1])
    h.advance(1)  # the 30 s sweep at START + 60
    assert h.ua.lookup_contacts("1001") == []
    assert h.observer.registrations[-1] == (f"sip:1001@{DOMAIN}", "sip:1001@192.0.2.20:5062", 0)
    assert not h.ua.flood.is_exempt(PHONE_ADDR[1])
    assert len(h.ua.bindings) == 0


# ==================================================================================================
# Inbound calls: the happy path


def test_trunk_invite_gets_trying_then_200_with_sdp_answer(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100")
    sent = h.net.sent
    assert [m.status for m, _ in sent if isinstance(m, Response)] == [100, 200]
    assert all(addr == TRUNK_ADDR for _, addr in sent)
    trying = sent[0][0]
    assert isinstance(trying, Response) and trying.to.tag is None
    ok = peer.final_response()
    assert ok is not None and ok.status == 200
    assert ok.to.tag
    assert ok.headers.get("Contact") == "<sip:100@127.0.0.1:5060>"
    answer = sdp_of(ok)
    assert answer.media[0].codecs[0].encoding == "PCMU"
    assert answer.media[0].port == h.media.created[0].port
    call = call_of(h, peer)
    assert call.trunk == "carrier" and call.route_name == "hotline" and call.caller_number == "caller"
    assert call.caller_leg.codec == "PCMU"
    assert call.caller_leg.remote_media == ("192.0.2.10", 40000)
    assert call.state is CallState.ANSWERED
    assert peer.call_id in h.trunk.active_calls


def test_pcma_chosen_when_only_pcma_offered(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100", sdp=PCMA_SDP)
    ok = peer.final_response()
    assert ok is not None and ok.status == 200
    assert sdp_of(ok).media[0].codecs[0].encoding == "PCMA"
    assert call_of(h, peer).caller_leg.codec == "PCMA"


def test_200_is_retransmitted_until_ack(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100")
    assert len(h.net.responses(200)) == 1
    h.clock.advance(0.5)
    h.clock.advance(1.0)
    h.clock.advance(2.0)  # T1, 2*T1, 4*T1 after the first 200
    oks = h.net.responses(200)
    assert len(oks) == 4
    assert len({bytes(r) for r in oks}) == 1  # the same bytes each time
    peer.final_response()
    peer.ack()
    assert call_of(h, peer).state is CallState.CONFIRMED
    h.advance(40)
    assert len(h.net.responses(200)) == 4
    assert h.net.requests("BYE") == []  # no give-up after the ACK


def test_bye_ends_the_call_once(h: Harness) -> None:
    peer = answered(h)
    h.clock.advance(7)
    h.net.take()
    peer.in_dialog("BYE")
    assert h.net.statuses("BYE") == [200]
    assert h.observer.of(peer.call_id) == ["started", "answered", "ended"]
    call = ended(h, peer.call_id)
    assert call.end_reason is EndReason.CALLER_BYE and call.ended_by == "remote"
    assert call.ended_at is not None and call.answered_at is not None
    assert call.ended_at - call.answered_at == 7
    assert peer.call_id not in h.ua.calls
    assert h.trunk.active_calls == set()
    assert h.media.created[0].closed == 1
    peer.in_dialog("BYE")  # a new BYE for the gone dialog
    assert h.net.statuses("BYE")[-1] == 481
    assert h.observer.of(peer.call_id).count("ended") == 1


def test_call_recorder_turns_life_cycle_into_events_and_records(h: Harness) -> None:
    class FakeCdr:
        def __init__(self) -> None:
            self.rows: list[CallRecordData] = []

        def submit(self, row: CallRecordData) -> None:
            self.rows.append(row)

    bus = InProcessBus()
    events: list[Event] = []
    bus.subscribe(Event, events.append)
    cdr = FakeCdr()
    h.ua.observers.append(CallRecorder(cdr, bus, node="n1"))  # type: ignore[arg-type]
    peer = answered(h)
    h.clock.advance(3)
    peer.in_dialog("BYE")
    rejected = Peer(h)
    rejected.send_invite("555")
    phone = Phone(h)
    phone.register_with_auth()
    kinds = [type(e) for e in events]
    assert kinds == [CallStarted, CallAnswered, CallEnded, CallStarted, CallEnded, RegistrationChanged]
    started, answered_event, first_end, _, second_end, registration = events
    assert isinstance(started, CallStarted) and started.source == "127.0.0.2:5060" and started.to_number == "100"
    assert isinstance(answered_event, CallAnswered) and answered_event.answered_by == "hotline"
    assert isinstance(first_end, CallEnded) and first_end.reason == "caller_bye" and first_end.duration == 3.0
    assert isinstance(second_end, CallEnded) and second_end.reason == "rejected" and second_end.sip_status == 404
    assert second_end.duration is None  # never answered
    assert isinstance(registration, RegistrationChanged) and registration.expires == 600
    first, second = cdr.rows
    assert first.call_id == peer.call_id and first.end_reason == "caller_bye" and first.transport == "udp"
    assert isinstance(first.answered_at, datetime) and first.sip_status == 200 and first.node == "n1"
    assert second.end_reason == "rejected" and second.answered_at is None and second.sip_status == 404


# ==================================================================================================
# Inbound calls: who may call


def test_invite_from_unknown_address_is_challenged_then_accepted(h: Harness) -> None:
    peer = Peer(h, STRANGER_ADDR, user="1001")
    peer.send_invite("100")
    challenge = peer.final_response()
    assert challenge is not None and challenge.status == 401
    assert h.ua.calls == {}
    peer.ack_final(challenge)
    auth = authorization_for(
        challenge, method="INVITE", uri=f"sip:100@{DOMAIN}", username="1001", password=PASSWORDS["1001"]
    )
    peer.send_invite("100", headers=[("Authorization", auth)])
    ok = peer.final_response()
    assert ok is not None and ok.status == 200
    assert call_of(h, peer).trunk is None


def test_invite_with_wrong_credentials_is_403(h: Harness) -> None:
    peer = Peer(h, STRANGER_ADDR, user="1001")
    peer.send_invite("100")
    challenge = peer.final_response()
    assert challenge is not None
    auth = authorization_for(challenge, method="INVITE", uri=f"sip:100@{DOMAIN}", username="1001", password="x")
    peer.send_invite("100", headers=[("Authorization", auth)])
    resp = peer.final_response()
    assert resp is not None and resp.status == 403
    assert h.observer.events == []


@pytest.mark.parametrize("trust", [True, False])
def test_invite_from_registered_source(trust: bool) -> None:
    h = make_harness(trust_registered_source=trust)
    try:
        assert Phone(h).register_with_auth().status == 200
        peer = Peer(h, PHONE_ADDR, user="1001")
        peer.send_invite("100")
        resp = peer.final_response()
        assert resp is not None
        assert resp.status == (200 if trust else 401)
        # Another port on the same host is not the registered source.
        other = Peer(h, (PHONE_ADDR[0], PHONE_ADDR[1], PHONE_ADDR[2] + 1), user="1001")
        other.send_invite("100")
        resp = other.final_response()
        assert resp is not None and resp.status == 401
    finally:
        h.ua.close()


# ==================================================================================================
# Inbound calls: refusals


def test_unknown_number_is_404_with_a_call_record(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("555")
    resp = peer.final_response()
    assert resp is not None and resp.status == 404
    call = ended(h, peer.call_id)
    assert call.end_reason is EndReason.REJECTED and call.sip_status == 404 and call.dialled == "555"
    assert h.observer.of(peer.call_id) == ["started", "ended"]
    assert h.trunk.active_calls == set()


def test_g729_only_is_488_with_warning(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100", sdp=G729_SDP)
    resp = peer.final_response()
    assert resp is not None and resp.status == 488
    warning = resp.headers.get("Warning") or ""
    assert warning.startswith("305 ") and "PCMU" in warning
    assert ended(h, peer.call_id).end_reason is EndReason.REJECTED
    assert h.media.created[0].closed == 1
    assert h.trunk.active_calls == set()


def test_malformed_sdp_is_400(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100", raw_body=b"this is not sdp\r\n")
    resp = peer.final_response()
    assert resp is not None and resp.status == 400
    assert "SDP" in resp.reason
    assert h.media.created[0].closed == 1


def test_max_forwards_zero_is_483(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100", max_forwards="0")
    resp = peer.final_response()
    assert resp is not None and resp.status == 483
    assert h.ua.calls == {}


def test_not_accepting_is_503_with_retry_after(h: Harness) -> None:
    h.ua.stop_accepting()
    peer = Peer(h)
    peer.send_invite("100")
    resp = peer.final_response()
    assert resp is not None and resp.status == 503
    assert resp.headers.get("Retry-After") == "30"
    assert h.ua.counters["rejected_shutdown"] == 1


def test_trunk_channels_keep_an_emergency_reserve(h: Harness) -> None:
    """channels=3, reserve=1: two ordinary calls, the third is busy, an emergency still gets in, then full."""
    statuses = []
    for number in ("100", "100", "100", "112", "112"):
        peer = Peer(h)
        peer.send_invite(number)
        resp = peer.final_response()
        assert resp is not None
        statuses.append(resp.status)
    assert statuses == [200, 200, 486, 200, 503]
    assert len(h.trunk.active_calls) == 3
    reasons = [c.end_reason for c in h.observer.ended]
    assert reasons == [EndReason.REJECTED, EndReason.REJECTED]


def test_channel_is_released_when_a_call_ends(h: Harness) -> None:
    first = answered(h)
    answered(h)
    first.in_dialog("BYE")
    peer = Peer(h)
    peer.send_invite("100")
    resp = peer.final_response()
    assert resp is not None and resp.status == 200


# ==================================================================================================
# Inbound calls: ringing, CANCEL, timers


def test_ringing_then_cancel(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("200")
    assert h.net.statuses("INVITE") == [100, 180]
    ringing = h.net.responses(180)[0]
    assert ringing.to.tag and ringing.headers.get("Contact")
    assert call_of(h, peer).state is CallState.RINGING
    h.clock.advance(2)
    peer.cancel()
    assert h.net.statuses("CANCEL") == [200]
    assert h.net.statuses("INVITE")[-1] == 487
    final = h.net.responses(487)[0]
    assert final.to.tag == ringing.to.tag
    call = ended(h, peer.call_id)
    assert call.end_reason is EndReason.CANCELLED and call.sip_status == 487
    h.advance(10)
    assert h.net.responses(200, "INVITE") == []  # the answer timer was cancelled


def test_ringing_answers_after_answer_after(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("200")
    h.clock.advance(4.9)
    assert h.net.responses(200) == []
    h.clock.advance(0.1)
    ok = peer.final_response()
    assert ok is not None and ok.status == 200
    assert ok.to.tag == h.net.responses(180)[0].to.tag
    call = call_of(h, peer)
    assert call.answered_at == START + 5
    peer.ack()
    assert call.state is CallState.CONFIRMED


def test_cancel_after_answer_has_no_effect(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100")
    peer.final_response()
    peer.cancel()
    assert h.net.statuses("CANCEL") == [481]  # the INVITE transaction is over
    assert call_of(h, peer).state is CallState.ANSWERED


def test_no_ack_sends_bye_after_64_t1(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100")
    h.clock.advance(31.9)
    assert h.net.requests("BYE") == []
    h.clock.advance(0.1)
    ((bye, dest),) = h.net.sent_to("BYE")
    assert dest == TRUNK_ADDR
    ok = peer.final_response()
    assert ok is not None
    assert bye.to.tag == peer.from_tag and bye.from_.tag == ok.to.tag
    assert call_of(h, peer).state is CallState.ENDING
    peer.reply(bye, 200)
    call = ended(h, peer.call_id)
    assert call.end_reason is EndReason.TIMEOUT and call.ended_by == "engine"


def test_max_duration_sends_bye(h: Harness) -> None:
    peer = answered(h, "300")  # max_duration 60 s
    h.clock.advance(59.9)
    assert h.net.requests("BYE") == []
    h.clock.advance(0.1)
    ((bye, dest),) = h.net.sent_to("BYE")
    assert dest == TRUNK_ADDR
    assert str(bye.uri) == f"sip:caller@{TRUNK_ADDR[1]}:{TRUNK_ADDR[2]}"
    assert bye.cseq.number == 1
    assert h.observer.ended == []
    peer.reply(bye, 200)
    call = ended(h, peer.call_id)
    assert call.end_reason is EndReason.MAX_DURATION
    assert h.trunk.active_calls == set()


def test_max_duration_bye_without_answer_still_ends(h: Harness) -> None:
    peer = answered(h, "300")
    h.clock.advance(60)
    assert len(h.net.requests("BYE")) == 1
    h.advance(31.75)
    assert h.observer.ended == []
    assert len(h.net.requests("BYE")) > 1  # retransmitted (Timer E)
    h.advance(0.5)  # Timer F: 64*T1 after the BYE
    call = ended(h, peer.call_id)
    assert call.end_reason is EndReason.MAX_DURATION


def test_default_max_call_duration_applies_without_route_limit(h: Harness) -> None:
    h.ua.inbound.max_call_duration = 10
    answered(h, "100")
    h.clock.advance(10)
    assert len(h.net.requests("BYE")) == 1


# ==================================================================================================
# In-dialog requests


def test_reinvite_gets_200_with_new_sdp_version(h: Harness) -> None:
    peer = answered(h)
    ok_first = peer.final_response()
    assert ok_first is not None
    first_answer = sdp_of(ok_first)
    h.net.take()
    reinvite = peer.in_dialog("INVITE", body=PCMA_SDP.encode())
    ok = [r for r in h.net.responses(200, "INVITE") if r.cseq.number == reinvite.cseq.number]
    assert len(ok) == 1
    new_answer = sdp_of(ok[0])
    assert new_answer.origin.sess_id == first_answer.origin.sess_id
    assert new_answer.origin.sess_version == first_answer.origin.sess_version + 1
    assert new_answer.media[0].codecs[0].encoding == "PCMA"
    assert ok[0].headers.get("Contact") == "<sip:100@127.0.0.1:5060>"
    assert call_of(h, peer).caller_leg.codec == "PCMA"


def test_reinvite_without_common_codec_is_488(h: Harness) -> None:
    peer = answered(h)
    peer.in_dialog("INVITE", body=G729_SDP.encode())
    assert h.net.statuses("INVITE")[-1] == 488
    assert call_of(h, peer).caller_leg.codec == "PCMU"


def test_info_in_dialog_is_200(h: Harness) -> None:
    peer = answered(h)
    h.net.take()
    peer.in_dialog("INFO", body=b"Signal=5\r\nDuration=160\r\n", headers=[("Content-Type", "application/dtmf-relay")])
    assert h.net.statuses("INFO") == [200]
    assert h.media.digits == [(peer.call_id, "5")]
    peer.in_dialog("INFO")  # an empty INFO: a keep-alive
    peer.in_dialog("INFO", body=b"<xml/>", headers=[("Content-Type", "application/xml")])
    assert h.net.statuses("INFO") == [200, 200, 415]


def test_bye_with_lower_cseq_is_500(h: Harness) -> None:
    peer = answered(h)
    peer.in_dialog("INFO", cseq=10)
    peer.in_dialog("BYE", cseq=5)
    assert h.net.statuses("BYE") == [500]
    assert call_of(h, peer).active
    peer.in_dialog("BYE", cseq=11)
    assert h.net.statuses("BYE") == [500, 200]
    assert ended(h, peer.call_id).end_reason is EndReason.CALLER_BYE


def test_bye_for_unknown_dialog_is_481(h: Harness) -> None:
    peer = Peer(h)
    raw = peer.build("BYE", f"sip:100@{DOMAIN}", to=f"<sip:100@{DOMAIN}>;tag=nosuch")
    peer.feed(raw)
    assert h.net.statuses("BYE") == [481]


def test_bye_with_wrong_tags_in_a_known_call_is_481(h: Harness) -> None:
    peer = answered(h)
    peer.to_tag = "not-our-tag"
    peer.in_dialog("BYE")
    assert h.net.statuses("BYE") == [481]
    assert call_of(h, peer).active


def test_options_outside_dialog_is_200_with_allow(h: Harness) -> None:
    peer = Peer(h, STRANGER_ADDR)
    peer.feed(peer.build("OPTIONS", f"sip:{DOMAIN}", to=f"<sip:{DOMAIN}>"))
    (resp,) = h.net.responses(method="OPTIONS")
    assert resp.status == 200
    assert resp.headers.get("Allow") == ALLOW
    assert resp.headers.get("Accept") == "application/sdp"


def test_unsupported_method_outside_dialog(h: Harness) -> None:
    peer = Peer(h)
    peer.feed(peer.build("MESSAGE", f"sip:{DOMAIN}", to=f"<sip:{DOMAIN}>"))
    peer.feed(peer.build("PUBLISH", f"sip:{DOMAIN}", to=f"<sip:{DOMAIN}>"))
    assert [r.status for r in h.net.responses()] == [405, 501]


def test_late_offer_200_carries_offer_and_ack_carries_answer(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100", sdp=None)
    ok = peer.final_response()
    assert ok is not None and ok.status == 200
    offer = sdp_of(ok)
    assert [c.encoding for c in offer.media[0].codecs] == ["PCMU", "PCMA", "telephone-event"]
    call = call_of(h, peer)
    assert call.caller_leg.codec is None
    # The caller answers in the ACK, choosing PCMA.
    answer_sdp = negotiate(offer, local_address="192.0.2.10", local_port=40002, session_id=77, supported=("PCMA",))
    peer.ack(body=bytes(answer_sdp.sdp))
    assert call.state is CallState.CONFIRMED
    assert call.caller_leg.codec == "PCMA"
    assert call.caller_leg.remote_media == ("192.0.2.10", 40002)


def test_late_offer_ack_with_bad_answer_ends_the_call(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100", sdp=None)
    peer.final_response()
    peer.ack(body=G729_SDP.encode())  # a codec we never offered
    ((bye, _),) = h.net.sent_to("BYE")
    peer.reply(bye, 200)
    assert ended(h, peer.call_id).end_reason is EndReason.FAILED


# ==================================================================================================
# Shutdown


def test_hangup_all_on_shutdown(h: Harness) -> None:
    ringing = Peer(h)
    ringing.send_invite("200")
    talking = answered(h)
    h.net.take()
    h.ua.stop_accepting()
    h.ua.hangup_all(EndReason.SHUTDOWN)
    assert [r.status for r in h.net.responses(method="INVITE")] == [503]
    assert h.net.responses(method="INVITE")[0].call_id == ringing.call_id
    ((bye, _),) = h.net.sent_to("BYE")
    assert bye.call_id == talking.call_id
    assert ended(h, ringing.call_id).end_reason is EndReason.SHUTDOWN
    talking.reply(bye, 200)
    assert ended(h, talking.call_id).end_reason is EndReason.SHUTDOWN
    assert h.ua.calls == {}
    h.advance(40)
    assert h.net.responses(200, "INVITE") == []  # the ringing call is never answered later


def test_bye_sent_before_ack_stops_the_200_retransmissions(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100")
    h.ua.hangup_all(EndReason.SHUTDOWN)
    ((bye, _),) = h.net.sent_to("BYE")
    peer.reply(bye, 200)
    h.net.take()
    h.advance(40)
    assert h.net.responses(200) == []


# ==================================================================================================
# Outbound calls through the trunk


class Carrier:
    """The far end of the trunk: answers the engine's requests with digest challenges when asked."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.digest = DigestServer(CARRIER_REALM, b"c" * 32)
        self.to_tag = "carrier1"

    def lookup(self, username: str) -> AccountSecret | None:
        return AccountSecret.from_password(TRUNK_PASSWORD) if username == TRUNK_USER else None

    def challenge(self, request: Request, status: int = 407) -> Response:
        resp = response_for(request, status, to_tag="chal1")
        header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
        for c in self.digest.challenges(self.h.clock.seconds()):
            resp.headers.add(header, c.to_header())
        return feed_response(self.h, resp)

    def verify(self, request: Request, header: str) -> None:
        value = request.headers.get(header)
        assert value is not None
        assert parse_credentials(value).uri == str(request.uri)
        result = self.digest.verify_header(value, request.method, self.h.clock.seconds(), self.lookup)
        assert result.status is AuthStatus.OK, result

    def reply(
        self, request: Request, status: int, *, body: bytes = b"", extra: Sequence[tuple[str, str]] = ()
    ) -> Response:
        resp = response_for(request, status, to_tag=self.to_tag)
        for k, v in extra:
            resp.headers.add(k, v)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return feed_response(self.h, resp)

    def answer_sdp(self, invite: Request) -> bytes:
        offer = SessionDescription.parse(invite.body)
        return bytes(negotiate(offer, local_address="127.0.0.2", local_port=30000, session_id=5).sdp)


def last_invite(h: Harness) -> Request:
    return h.net.requests("INVITE")[-1]


def test_outbound_call_with_proxy_auth_ack_and_remote_bye(h: Harness) -> None:
    carrier = Carrier(h)
    ended_cb: list[Call] = []
    call = h.ua.outbound.originate("120", trunk_name="carrier", on_end=ended_cb.append)
    ((invite, dest),) = h.net.sent_to("INVITE")
    assert dest == TRUNK_ADDR
    assert str(invite.uri) == "sip:120@127.0.0.2:5060"
    assert invite.from_.tag and invite.to.tag is None
    offer = sdp_of(invite)
    assert [c.encoding for c in offer.media[0].codecs] == ["PCMU", "PCMA", "telephone-event"]
    assert call.state is CallState.OFFERED and call.direction == "outbound"
    assert h.observer.of(call.call_id) == ["started"]

    carrier.challenge(invite, 407)
    acks = h.net.requests("ACK")
    assert len(acks) == 1 and acks[0].cseq.number == 1  # the transaction ACKs the 407
    second = last_invite(h)
    assert second is not invite and second.cseq.number == 2 and second.call_id == invite.call_id
    assert second.from_.tag == invite.from_.tag
    carrier.verify(second, "Proxy-Authorization")

    carrier.reply(second, 180)
    assert call.state is CallState.RINGING

    h.net.take()
    contact = "<sip:120@127.0.0.2:5060>"
    ok = carrier.reply(second, 200, body=carrier.answer_sdp(second), extra=[("Contact", contact)])
    ((ack, ack_dest),) = h.net.sent_to("ACK")
    assert ack_dest == TRUNK_ADDR
    assert str(ack.uri) == "sip:120@127.0.0.2:5060"
    assert ack.cseq.number == 2 and ack.cseq.method == "ACK"
    assert ack.to.tag == "carrier1" and ack.from_.tag == invite.from_.tag
    assert ack.top_via.branch != second.top_via.branch
    assert ack.headers.get("Proxy-Authorization") == second.headers.get("Proxy-Authorization")
    assert call.state is CallState.CONFIRMED
    assert call.caller_leg.codec == "PCMU"
    assert call.caller_leg.remote_media == ("127.0.0.2", 30000)
    assert h.observer.of(call.call_id) == ["started", "answered"]

    # The carrier did not see our ACK and retransmits the 200: the same ACK goes out again.
    h.net.take()
    feed_response(h, ok)
    ((again, again_dest),) = h.net.sent_to("ACK")
    assert bytes(again) == bytes(ack) and again_dest == TRUNK_ADDR

    # The carrier hangs up.
    h.net.take()
    bye_raw = (
        f"BYE sip:cc-trunk@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKcarrierbye\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: {ok.headers.get('To')}\r\n"
        f"To: {ok.headers.get('From')}\r\n"
        f"Call-ID: {call.call_id}\r\n"
        f"CSeq: 1 BYE\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
    h.ua.receive(parse_message(bye_raw), TRUNK_ADDR)
    assert h.net.statuses("BYE") == [200]
    assert call.end_reason is EndReason.CALLER_BYE
    assert h.observer.of(call.call_id) == ["started", "answered", "ended"]
    assert ended_cb == [call]
    assert h.trunk.active_calls == set()


def test_outbound_ack_follows_the_route_set(h: Harness) -> None:
    carrier = Carrier(h)
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    invite = last_invite(h)
    h.net.take()
    carrier.reply(
        invite,
        200,
        body=carrier.answer_sdp(invite),
        extra=[("Record-Route", "<sip:127.0.0.3:5070;lr>"), ("Contact", "<sip:120@192.0.2.50:5060>")],
    )
    ((ack, dest),) = h.net.sent_to("ACK")
    assert dest == ("UDP", "127.0.0.3", 5070)
    assert str(ack.uri) == "sip:120@192.0.2.50:5060"
    assert ack.headers.get_all("Route") == ["<sip:127.0.0.3:5070;lr>"]
    # An engine hangup uses the same route.
    h.ua.outbound.hangup(call, EndReason.LOCAL_BYE)
    ((bye, bye_dest),) = h.net.sent_to("BYE")
    assert bye_dest == ("UDP", "127.0.0.3", 5070)
    assert bye.cseq.number == 2
    feed_response(h, response_for(bye, 200))
    assert call.end_reason is EndReason.LOCAL_BYE


def test_outbound_never_takes_the_emergency_reserve(h: Harness) -> None:
    h.ua.outbound.originate("13800000001", trunk_name="carrier")
    h.ua.outbound.originate("13800000002", trunk_name="carrier")
    with pytest.raises(OutboundError):
        h.ua.outbound.originate("13800000003", trunk_name="carrier")
    with pytest.raises(OutboundError):
        h.ua.outbound.originate("13800000003", trunk_name="nosuch")
    assert len(h.trunk.active_calls) == 2
    h.ua.outbound.originate("120", trunk_name="carrier")  # an ambulance call may use the reserved channel
    assert len(h.trunk.active_calls) == 3


def test_outbound_hangup_while_ringing_cancels(h: Harness) -> None:
    carrier = Carrier(h)
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    invite = last_invite(h)
    carrier.reply(invite, 180)
    assert call.state is CallState.RINGING
    h.net.take()
    h.ua.outbound.hangup(call, EndReason.LOCAL_BYE)
    ((cancel, dest),) = h.net.sent_to("CANCEL")
    assert dest == TRUNK_ADDR
    assert cancel.top_via.branch == invite.top_via.branch and cancel.cseq.number == invite.cseq.number
    assert call.active
    feed_response(h, response_for(cancel, 200, to_tag="carrier1"))
    carrier.reply(invite, 487)
    assert h.net.requests("ACK")  # the transaction ACKs the 487
    assert call.end_reason is EndReason.CANCELLED and call.sip_status == 487
    assert h.trunk.active_calls == set()


def test_outbound_rejected_call_fails(h: Harness) -> None:
    carrier = Carrier(h)
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    carrier.reply(last_invite(h), 486)
    assert call.end_reason is EndReason.FAILED and call.sip_status == 486


def test_outbound_second_challenge_is_not_answered(h: Harness) -> None:
    carrier = Carrier(h)
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    carrier.challenge(last_invite(h), 401)
    second = last_invite(h)
    carrier.verify(second, "Authorization")
    carrier.challenge(second, 401)
    assert len(h.net.requests("INVITE")) == 2
    assert call.end_reason is EndReason.FAILED and call.sip_status == 401


def test_outbound_no_answer_times_out(h: Harness) -> None:
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    h.advance(32.25)
    assert call.end_reason is EndReason.TIMEOUT and call.sip_status == 408


# ==================================================================================================
# Trunk registration


def registrations(h: Harness) -> list[Request]:
    return h.net.requests("REGISTER")


def test_trunk_registration_authenticates_and_refreshes_at_80_percent(h: Harness) -> None:
    carrier = Carrier(h)
    states: list[bool] = []
    h.trunk.register_expires = 300
    reg = TrunkRegistration(h.ua, h.trunk, on_state=lambda trunk, up: states.append(up))
    reg.start()
    (first,) = registrations(h)
    assert h.net.sent[-1][1] == TRUNK_ADDR
    assert str(first.uri) == "sip:127.0.0.2:5060"
    assert first.headers.get("Expires") == "300"
    assert first.headers.get("Contact") == "<sip:cc-trunk@127.0.0.1:5060>"
    assert str(first.to.uri) == "sip:cc-trunk@127.0.0.2"
    carrier.challenge(first, 401)
    second = registrations(h)[-1]
    assert second.cseq.number == first.cseq.number + 1 and second.call_id == first.call_id
    carrier.verify(second, "Authorization")
    carrier.reply(second, 200, extra=[("Contact", "<sip:cc-trunk@127.0.0.1:5060>;expires=120")])
    assert h.trunk.registered and states == [True]
    assert reg.granted == 120
    h.net.take()
    h.clock.advance(95)
    assert registrations(h) == []
    h.clock.advance(1)  # 80 % of 120 s
    (refresh,) = registrations(h)
    assert refresh.cseq.number == second.cseq.number + 1 and refresh.call_id == first.call_id
    reg.stop(unregister=False)


def test_trunk_registration_retries_with_backoff(h: Harness) -> None:
    carrier = Carrier(h)
    states: list[bool] = []
    reg = TrunkRegistration(h.ua, h.trunk, on_state=lambda trunk, up: states.append(up))
    h.trunk.registered = True  # pretend it was up: a failure takes it down
    reg.start()

    def refuse() -> None:
        carrier.challenge(registrations(h)[-1], 401)
        carrier.reply(registrations(h)[-1], 403)

    refuse()
    assert not h.trunk.registered and states == [False]
    h.net.take()
    h.clock.advance(4.9)
    assert registrations(h) == []
    h.clock.advance(0.1)  # first retry after 5 s
    assert len(registrations(h)) == 1
    refuse()
    h.net.take()
    h.clock.advance(9.9)
    assert registrations(h) == []
    h.clock.advance(0.1)  # then after 10 s
    assert len(registrations(h)) == 1
    reg.stop(unregister=False)
    h.advance(600, step=5)  # the last REGISTER is retransmitted and times out, but nothing new is sent
    assert {r.cseq.number for r in registrations(h)} == {registrations(h)[0].cseq.number}


def test_trunk_registration_stop_unregisters(h: Harness) -> None:
    carrier = Carrier(h)
    reg = TrunkRegistration(h.ua, h.trunk)
    reg.start()
    carrier.challenge(registrations(h)[-1], 401)
    carrier.reply(registrations(h)[-1], 200, extra=[("Expires", "120")])
    assert h.trunk.registered and reg.granted == 120
    h.net.take()
    reg.stop(unregister=True)
    (bye,) = registrations(h)
    assert bye.headers.get("Expires") == "0"
    carrier.challenge(bye, 401)
    again = registrations(h)[-1]
    assert again.headers.get("Expires") == "0"
    carrier.verify(again, "Authorization")
    carrier.reply(again, 200)
    assert not h.trunk.registered
    h.net.take()
    h.advance(300, step=5)
    assert registrations(h) == []


def test_trunk_registration_follows_min_expires(h: Harness) -> None:
    carrier = Carrier(h)
    h.trunk.register_expires = 30
    reg = TrunkRegistration(h.ua, h.trunk)
    reg.start()
    resp = response_for(registrations(h)[-1], 423, to_tag="x")
    resp.headers.add("Min-Expires", "180")
    feed_response(h, resp)
    assert registrations(h)[-1].headers.get("Expires") == "180"
    carrier.reply(registrations(h)[-1], 200)
    assert h.trunk.registered and reg.granted == 180
    reg.stop(unregister=False)


def test_registration_policy_is_used(h: Harness) -> None:
    h2 = make_harness(registration=RegistrationPolicy(min_expires=10, max_expires=100, default_expires=50))
    try:
        resp = Phone(h2).register_with_auth(expires=None)
        assert resp.contacts[0].params.get("expires") == "50"
        resp = Phone(h2, "1002").register_with_auth(expires=1000)
        assert resp.contacts[0].params.get("expires") == "100"
    finally:
        h2.ua.close()


def test_200_retransmissions_go_where_the_first_200_went(h: Harness) -> None:
    """Without rport the response goes to the Via sent-by port (§18.2.2); retransmissions must follow it."""
    peer = Peer(h)
    raw = peer.build("INVITE", f"sip:100@{DOMAIN}", to=f"<sip:100@{DOMAIN}>", body=PCMU_PCMA_SDP.encode())
    raw = raw.replace(b";rport", b"").replace(b"127.0.0.2:5060;branch", b"127.0.0.2:5099;branch")
    h.ua.receive(parse_message(raw), TRUNK_ADDR)
    h.clock.advance(0.5)
    dests = [addr for msg, addr in h.net.sent if isinstance(msg, Response) and msg.status == 200]
    assert dests == [("UDP", "127.0.0.2", 5099)] * 2


def test_ua_close_stops_200_retransmissions(h: Harness) -> None:
    peer = Peer(h)
    peer.send_invite("100")
    h.ua.close()
    h.net.take()
    h.advance(40)
    assert h.net.sent == []


def test_outbound_200_crossing_cancel_is_acked_and_byed(h: Harness) -> None:
    carrier = Carrier(h)
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    invite = last_invite(h)
    carrier.reply(invite, 180)
    h.ua.outbound.hangup(call, EndReason.LOCAL_BYE)
    assert h.net.requests("CANCEL")
    h.net.take()
    carrier.reply(invite, 200, body=carrier.answer_sdp(invite), extra=[("Contact", "<sip:120@127.0.0.2:5060>")])
    assert len(h.net.requests("ACK")) == 1
    ((bye, _),) = h.net.sent_to("BYE")
    assert call.state is CallState.ENDING
    feed_response(h, response_for(bye, 200))
    assert call.end_reason is EndReason.LOCAL_BYE
    assert h.observer.of(call.call_id) == ["started", "ended"]  # never reported as answered


def test_outbound_hangup_before_any_provisional_sends_cancel_on_the_first_one(h: Harness) -> None:
    carrier = Carrier(h)
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    invite = last_invite(h)
    h.ua.outbound.hangup(call, EndReason.LOCAL_BYE)
    assert h.net.requests("CANCEL") == []  # §9.1: not before a provisional
    carrier.reply(invite, 100)
    assert len(h.net.requests("CANCEL")) == 1
    carrier.reply(invite, 487)
    assert call.end_reason is EndReason.CANCELLED


def test_outbound_hangup_before_challenge_does_not_retry(h: Harness) -> None:
    carrier = Carrier(h)
    call = h.ua.outbound.originate("120", trunk_name="carrier")
    h.ua.outbound.hangup(call, EndReason.LOCAL_BYE)
    carrier.challenge(last_invite(h), 407)
    assert len(h.net.requests("INVITE")) == 1  # no authenticated retry of a call we gave up
    assert call.end_reason is EndReason.CANCELLED and call.sip_status == 407


def test_offerless_reinvite_gets_our_offer_retransmitted_until_ack(h: Harness) -> None:
    peer = answered(h)
    h.net.take()
    reinvite = peer.in_dialog("INVITE")
    ok = [r for r in h.net.responses(200, "INVITE") if r.cseq.number == reinvite.cseq.number]
    assert len(ok) == 1 and sdp_of(ok[0]).media[0].port > 0  # RFC 3264 §8: we offer
    h.advance(1.6)  # 2xx retransmitted at 0.5 and 1.5 s until the ACK
    again = [r for r in h.net.responses(200, "INVITE") if r.cseq.number == reinvite.cseq.number]
    assert len(again) == 3
    h.net.take()
    peer.in_dialog("ACK", cseq=reinvite.cseq.number, body=PCMA_SDP.encode())
    h.advance(10)
    assert not [r for r in h.net.responses(200, "INVITE")]
    assert call_of(h, peer).active


def test_reinvite_never_acked_ends_the_call(h: Harness) -> None:
    peer = answered(h)
    peer.in_dialog("INVITE", body=PCMA_SDP.encode())
    h.advance(33)
    assert "BYE" in [m.method for m in h.net.requests()]
