"""Tests for callcenter.sip.sdp: RFC 4566 parsing/serialisation and RFC 3264 offer/answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.sip.sdp import (
    Attribute,
    Connection,
    MediaDescription,
    NoCommonCodec,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    build_offer,
    negotiate,
    parse_answer,
)


def crlf(text: str) -> str:
    return "".join(line + "\r\n" for line in text.strip("\n").split("\n"))


def answer_to(offer_text: str, **kwargs):
    params = {"local_address": "192.0.2.1", "local_port": 40000, "session_id": 42}
    params.update(kwargs)
    return negotiate(SessionDescription.parse(offer_text), **params)


# --- real-world offers -----------------------------------------------------------------------------

BARESIP = crlf("""
v=0
o=- 1462519463 2044476330 IN IP4 192.168.1.10
s=-
c=IN IP4 192.168.1.10
t=0 0
a=tool:baresip 2.9.0
m=audio 10730 RTP/AVP 96 9 0 8 101
b=AS:64
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=ssrc:2869934234 cname:88f8b5de-ac44-4a9e-a2f1-79dc6aa8a5a1
a=rtcp-rsize
""")

# SIPp's built-in uac scenario, with [local_ip]/[media_port] substituted.
SIPP_UAC = crlf("""
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
""")

LINPHONE = crlf("""
v=0
o=alice 3016 1263 IN IP4 192.168.0.23
s=Talk
c=IN IP4 192.168.0.23
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp-fb:* trr-int 1000
""")

PJSIP = crlf("""
v=0
o=- 3831234567 3831234567 IN IP4 10.0.0.5
s=pjmedia
b=AS:84
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 8 0 9 96 120 121
c=IN IP4 10.0.0.5
b=TIAS:64000
a=rtcp:4001 IN IP4 10.0.0.5
a=sendrecv
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:9 G722/8000
a=rtpmap:96 speex/8000
a=rtpmap:120 telephone-event/8000
a=fmtp:120 0-16
a=rtpmap:121 telephone-event/16000
a=fmtp:121 0-16
a=ssrc:1573491022 cname:0f4a6d7e2e6c1d3b
""")

IPV6 = crlf("""
v=0
o=- 20518 0 IN IP6 2001:db8::10
s=-
c=IN IP6 2001:db8::10
t=0 0
m=audio 30000 RTP/AVP 0 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:30
""")


@pytest.mark.parametrize("text", [BARESIP, SIPP_UAC, LINPHONE, PJSIP, IPV6])
def test_real_world_sdp_round_trips_byte_for_byte(text):
    sdp = SessionDescription.parse(text)
    assert sdp.serialise() == text
    assert bytes(sdp) == text.encode()
    assert SessionDescription.parse(bytes(sdp)) == sdp


def test_parse_baresip_fields():
    sdp = SessionDescription.parse(BARESIP)
    assert sdp.version == 0
    assert sdp.origin == Origin("-", 1462519463, 2044476330, "IN", "IP4", "192.168.1.10")
    assert sdp.session_name == "-"
    assert sdp.connection == Connection("IN", "IP4", "192.168.1.10")
    assert sdp.timing == (0, 0)
    assert sdp.attributes == [Attribute("tool", "baresip 2.9.0")]
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 10730, "RTP/AVP")
    assert audio.formats == ["96", "9", "0", "8", "101"]
    assert audio.payload_types == [96, 9, 0, 8, 101]
    assert audio.other_lines == [("b", "AS:64")]
    assert audio.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert audio.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp(101) == "0-15"
    assert audio.fmtp(0) is None
    assert audio.direction == "sendrecv"
    assert audio.attribute("rtcp-rsize") == ""
    assert audio.attribute("nope") is None
    assert sdp.connection_for(audio) == sdp.connection


def test_answer_baresip_picks_first_supported_in_offerer_order():
    answer = answer_to(BARESIP)
    assert (answer.codec, answer.payload_type, answer.clock_rate) == ("PCMU", 0, 8000)
    assert answer.telephone_event_pt == 101
    assert (answer.remote_address, answer.remote_port) == ("192.168.1.10", 10730)
    assert answer.direction == "sendrecv"
    assert answer.media_index == 0
    text = answer.sdp.serialise()
    assert text == crlf("""
v=0
o=- 42 1 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 40000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
""")


def test_sipp_default_uac_offer_static_pt_without_telephone_event():
    sdp = SessionDescription.parse(SIPP_UAC)
    assert sdp.media[0].rtpmap(0) == RtpMap(0, "PCMU", 8000)
    answer = negotiate(sdp, local_address="127.0.0.1", local_port=7000, session_id=1, session_version=5)
    assert (answer.codec, answer.payload_type, answer.telephone_event_pt) == ("PCMU", 0, None)
    assert (answer.remote_address, answer.remote_port) == ("127.0.0.1", 6000)
    assert answer.sdp.media[0].formats == ["0"]
    assert answer.sdp.origin.sess_version == 5


def test_static_payload_types_are_implied_without_rtpmap():
    text = SIPP_UAC.replace("m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", "m=audio 6000 RTP/AVP 8 0\r\n")
    sdp = SessionDescription.parse(text)
    assert sdp.media[0].rtpmap(8) == RtpMap(8, "PCMA", 8000)
    assert sdp.media[0].rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert sdp.media[0].rtpmap(96) is None
    answer = negotiate(sdp, local_address="127.0.0.1", local_port=7000, session_id=1)
    assert (answer.codec, answer.payload_type) == ("PCMA", 8)
    assert answer.sdp.media[0].attributes[0] == Attribute("rtpmap", "8 PCMA/8000")


def test_linphone_many_codecs_with_video():
    answer = answer_to(LINPHONE)
    assert (answer.codec, answer.payload_type) == ("PCMU", 0)
    # telephone-event at the codec's 8000 Hz clock, not the 48 kHz/16 kHz ones listed first.
    assert answer.telephone_event_pt == 100
    media = answer.sdp.media
    assert [(m.media, m.port) for m in media] == [("audio", 40000), ("video", 0)]
    assert media[1].proto == "RTP/AVP" and media[1].formats == ["96", "97"]
    assert media[1].attributes == [] and media[1].connection is None
    assert media[0].fmtp(100) is None  # the offer had no fmtp for PT 100: none invented


def test_pjsip_pcma_first_media_level_connection_and_fmtp():
    sdp = SessionDescription.parse(PJSIP)
    assert sdp.connection is None
    assert sdp.other_lines == [("b", "AS:84")]
    assert sdp.connection_for(0) == Connection("IN", "IP4", "10.0.0.5")
    answer = negotiate(sdp, local_address="192.0.2.1", local_port=40000, session_id=9)
    assert (answer.codec, answer.payload_type, answer.telephone_event_pt) == ("PCMA", 8, 120)
    assert answer.sdp.media[0].fmtp(120) == "0-16"
    assert answer.remote_address == "10.0.0.5"


def test_supported_list_does_not_override_offerer_preference():
    answer = answer_to(PJSIP, supported=("PCMU", "PCMA"))
    assert answer.codec == "PCMA"
    answer = answer_to(PJSIP, supported=("pcmu",))
    assert (answer.codec, answer.payload_type) == ("PCMU", 0)


def test_rtpmap_encoding_names_are_case_insensitive():
    text = SIPP_UAC.replace("RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/AVP 0\r\na=rtpmap:0 pcmu/8000")
    assert answer_to(text).codec == "PCMU"


def test_ipv6_offer_and_answer():
    sdp = SessionDescription.parse(IPV6)
    assert sdp.connection is not None and sdp.connection.is_ipv6 and not sdp.connection.is_hold
    assert sdp.media[0].ptime == 30
    answer = negotiate(sdp, local_address="2001:db8::1", local_port=20000, session_id=7)
    assert answer.remote_address == "2001:db8::10"
    assert answer.ptime == 30
    assert answer.sdp.connection == Connection("IN", "IP6", "2001:db8::1")
    assert answer.sdp.origin.addrtype == "IP6"
    assert "c=IN IP6 2001:db8::1\r\n" in answer.sdp.serialise()


# --- hold / direction -----------------------------------------------------------------------------


def test_hold_with_sendonly_is_answered_recvonly():
    sdp = SessionDescription.parse(BARESIP.replace("a=sendrecv", "a=sendonly"))
    assert sdp.media_direction(0) == "sendonly"
    assert sdp.is_on_hold(0)
    assert answer_to(BARESIP.replace("a=sendrecv", "a=sendonly")).direction == "recvonly"


def test_recvonly_offer_is_answered_sendonly():
    answer = answer_to(BARESIP.replace("a=sendrecv", "a=recvonly"))
    assert answer.direction == "sendonly"
    assert answer.sdp.media[0].direction == "sendonly"


def test_session_level_inactive_is_default_for_streams():
    text = SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n")
    sdp = SessionDescription.parse(text)
    assert sdp.direction == "inactive"
    assert sdp.media[0].direction is None
    assert sdp.media_direction(sdp.media[0]) == "inactive"
    assert sdp.is_on_hold(0)
    assert answer_to(text).direction == "inactive"


def test_media_level_direction_overrides_session_level():
    text = SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n") + "a=sendrecv\r\n"
    sdp = SessionDescription.parse(text)
    assert sdp.media_direction(0) == "sendrecv"
    assert not sdp.is_on_hold(0)


def test_legacy_hold_with_zero_connection_address():
    text = SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    sdp = SessionDescription.parse(text)
    assert sdp.connection is not None and sdp.connection.is_hold
    assert sdp.media_direction(0) == "sendrecv"
    assert sdp.is_on_hold(0)
    answer = answer_to(text)
    assert answer.direction == "recvonly"  # must not send RTP to 0.0.0.0
    assert answer.remote_address == "0.0.0.0"


def test_no_direction_defaults_to_sendrecv():
    assert SessionDescription.parse(SIPP_UAC).media_direction(0) == "sendrecv"
    assert answer_to(SIPP_UAC).direction == "sendrecv"


@pytest.mark.parametrize(
    ("offered", "override", "expected"),
    [
        ("sendrecv", "sendonly", "sendonly"),
        ("sendrecv", "inactive", "inactive"),
        ("sendonly", "sendonly", "inactive"),
        ("recvonly", "sendrecv", "sendonly"),
        ("sendonly", "sendrecv", "recvonly"),
    ],
)
def test_direction_override_intersects_with_mirrored_direction(offered, override, expected):
    answer = answer_to(BARESIP.replace("a=sendrecv", f"a={offered}"), direction_override=override)
    assert answer.direction == expected


def test_invalid_direction_override_is_rejected():
    with pytest.raises(ValueError, match="direction must be one of"):
        answer_to(SIPP_UAC, direction_override="hold")


# --- stream accept/reject -----------------------------------------------------------------------


def test_video_before_audio_keeps_order_and_rejects_video():
    text = crlf("""
v=0
o=- 1 1 IN IP4 198.51.100.7
s=-
c=IN IP4 198.51.100.7
t=0 0
m=video 5004 RTP/AVP 96
a=rtpmap:96 H264/90000
m=audio 5006 RTP/AVP 8 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
""")
    answer = answer_to(text)
    assert answer.media_index == 1
    assert (answer.remote_port, answer.codec, answer.telephone_event_pt) == (5006, "PCMA", 101)
    assert [(m.media, m.port, m.formats) for m in answer.sdp.media] == [
        ("video", 0, ["96"]),
        ("audio", 40000, ["8", "101"]),
    ]


def test_only_first_usable_audio_stream_is_accepted():
    text = SIPP_UAC + "m=audio 6002 RTP/AVP 8\r\n"
    answer = answer_to(text)
    assert [m.port for m in answer.sdp.media] == [40000, 0]


def test_rejected_offered_stream_is_skipped():
    text = SIPP_UAC.replace("m=audio 6000 RTP/AVP 0", "m=audio 0 RTP/AVP 0") + "m=audio 6002 RTP/AVP 8\r\n"
    sdp = SessionDescription.parse(text)
    assert sdp.media[0].rejected and not sdp.media[1].rejected
    answer = negotiate(sdp, local_address="192.0.2.1", local_port=40000, session_id=1)
    assert (answer.media_index, answer.codec, answer.remote_port) == (1, "PCMA", 6002)
    assert [m.port for m in answer.sdp.media] == [0, 40000]


def test_g729_only_offer_raises_no_common_codec():
    text = SIPP_UAC.replace(
        "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000",
        "RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000",
    )
    with pytest.raises(NoCommonCodec, match=r"^no common codec: offered G729; supported PCMU, PCMA$"):
        answer_to(text)


def test_srtp_only_offer_raises_no_common_codec():
    text = SIPP_UAC.replace("RTP/AVP", "RTP/SAVP")
    with pytest.raises(NoCommonCodec, match="no usable RTP/AVP audio stream"):
        answer_to(text)


def test_video_only_offer_raises_no_common_codec():
    text = SIPP_UAC.replace("m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "m=video 6000 RTP/AVP 31")
    with pytest.raises(NoCommonCodec):
        answer_to(text)


def test_no_common_codec_is_an_sdp_error_and_value_error():
    assert issubclass(NoCommonCodec, SdpError)
    assert issubclass(SdpError, ValueError)


def test_offer_without_any_connection_line():
    text = SIPP_UAC.replace("c=IN IP4 127.0.0.1\r\n", "")
    with pytest.raises(SdpError, match=r"audio stream #1 has no c= line"):
        answer_to(text)


def test_answer_copies_offer_timing_and_accepts_application_streams():
    text = SIPP_UAC.replace("t=0 0", "t=3034423619 0") + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    sdp = SessionDescription.parse(text)
    assert sdp.media[1].formats == ["webrtc-datachannel"] and sdp.media[1].payload_types == []
    answer = negotiate(sdp, local_address="192.0.2.1", local_port=40000, session_id=1)
    assert answer.sdp.timing == (3034423619, 0)
    assert "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n" in answer.sdp.serialise()


# --- outbound offers ------------------------------------------------------------------------------


def test_build_offer_default():
    offer = build_offer("192.0.2.1", 40000, session_id=1234)
    assert offer.serialise() == crlf("""
v=0
o=- 1234 1 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 40000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")
    assert SessionDescription.parse(offer.serialise()) == offer


def test_build_offer_options():
    offer = build_offer(
        "2001:db8::1", 5000, codecs=("PCMA",), telephone_event_pt=None, session_id=1,
        session_version=3, direction="sendonly",
    )
    assert offer.origin.addrtype == "IP6" and offer.connection == Connection("IN", "IP6", "2001:db8::1")
    assert offer.media[0].formats == ["8"]
    assert offer.media[0].direction == "sendonly"
    assert offer.origin.sess_version == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codecs": ("opus",)}, "no static payload type"),
        ({"codecs": ()}, "at least one codec"),
        ({"telephone_event_pt": 8}, "96-127"),
        ({"direction": "hold"}, "direction must be one of"),
        ({"local_port": 0}, "local_port must be 1-65535"),
    ],
)
def test_build_offer_rejects_bad_arguments(kwargs, message):
    params = {"local_address": "192.0.2.1", "local_port": 40000, "session_id": 1}
    params.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_offer(**params)


def test_offer_answer_loop_with_our_own_negotiate():
    offer = build_offer("192.0.2.1", 40000, session_id=1)
    answer = negotiate(offer, local_address="198.51.100.2", local_port=50000, session_id=2)
    media = parse_answer(offer, SessionDescription.parse(bytes(answer.sdp)))
    assert (media.codec, media.payload_type, media.telephone_event_pt) == ("PCMU", 0, 101)
    assert (media.remote_address, media.remote_port, media.direction) == ("198.51.100.2", 50000, "sendrecv")
    assert media.ptime == 20 and media.media_index == 0


def test_parse_answer_from_asterisk_like_peer():
    offer = build_offer("192.0.2.1", 40000, session_id=1)
    answer = SessionDescription.parse(crlf("""
v=0
o=root 1821 1821 IN IP4 203.0.113.9
s=Asterisk PBX 18.0.0
c=IN IP4 203.0.113.9
t=0 0
m=audio 12000 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=recvonly
"""))
    media = parse_answer(offer, answer)
    assert (media.codec, media.payload_type, media.telephone_event_pt) == ("PCMA", 8, 101)
    assert media.remote_address == "203.0.113.9" and media.remote_port == 12000
    assert media.direction == "sendonly"  # they only receive


def test_parse_answer_telephone_event_ignored_when_not_offered():
    offer = build_offer("192.0.2.1", 40000, session_id=1, telephone_event_pt=None)
    answer = SessionDescription.parse(SIPP_UAC + "a=rtpmap:101 telephone-event/8000\r\n")
    answer.media[0].formats.append("101")
    assert parse_answer(offer, answer).telephone_event_pt is None


def test_parse_answer_rejects_codec_not_offered():
    offer = build_offer("192.0.2.1", 40000, session_id=1, codecs=("PCMU",))
    answer = SessionDescription.parse(SIPP_UAC.replace("RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/AVP 8"))
    with pytest.raises(SdpError, match=r"chose codec PCMA \(PT 8\) which was not offered"):
        parse_answer(offer, answer)


def test_parse_answer_rejects_stream_count_mismatch():
    offer = build_offer("192.0.2.1", 40000, session_id=1)
    answer = SessionDescription.parse(SIPP_UAC + "m=video 0 RTP/AVP 96\r\n")
    with pytest.raises(SdpError, match="answer has 2 m= lines but the offer had 1"):
        parse_answer(offer, answer)


def test_parse_answer_rejects_media_type_mismatch():
    offer = build_offer("192.0.2.1", 40000, session_id=1)
    answer = SessionDescription.parse(SIPP_UAC.replace("m=audio", "m=video"))
    with pytest.raises(SdpError, match="is 'video' but the offer had 'audio'"):
        parse_answer(offer, answer)


def test_parse_answer_all_rejected_raises_no_common_codec():
    offer = build_offer("192.0.2.1", 40000, session_id=1)
    answer = SessionDescription.parse(SIPP_UAC.replace("m=audio 6000", "m=audio 0"))
    with pytest.raises(NoCommonCodec, match="rejected every audio stream"):
        parse_answer(offer, answer)


def test_parse_answer_unknown_dynamic_payload_type():
    offer = build_offer("192.0.2.1", 40000, session_id=1)
    answer = SessionDescription.parse(SIPP_UAC.replace("RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/AVP 97"))
    with pytest.raises(SdpError, match="payload type 97 has no rtpmap"):
        parse_answer(offer, answer)


def test_parse_answer_legacy_hold_answer_means_we_do_not_send():
    offer = build_offer("192.0.2.1", 40000, session_id=1)
    answer = SessionDescription.parse(SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert parse_answer(offer, answer).direction == "recvonly"


# --- parsing details ------------------------------------------------------------------------------


def test_bare_lf_blank_lines_and_trailing_whitespace_are_tolerated():
    text = SIPP_UAC.replace("\r\n", "\n").replace("s=-\n", "s=- \n\n")
    assert SessionDescription.parse(text) == SessionDescription.parse(SIPP_UAC)


def test_missing_t_line_defaults_to_zero_timing():
    sdp = SessionDescription.parse(SIPP_UAC.replace("t=0 0\r\n", ""))
    assert sdp.timing == (0, 0)
    assert "t=0 0\r\n" in sdp.serialise()


def test_unknown_lines_and_attributes_are_kept_in_rfc_order():
    text = crlf("""
v=0
o=- 1 2 IN IP4 192.0.2.9
s=call
a=group:BUNDLE 0
t=0 0
i=session info
c=IN IP4 192.0.2.9
x=unknown line
b=CT:128
r=604800 3600 0 90000
t=100 200
m=audio 49170/2 RTP/AVP 0
a=mid:0
k=prompt
i=media info
""")
    sdp = SessionDescription.parse(text)
    assert sdp.timing == (0, 0)
    assert sdp.other_lines == [
        ("i", "session info"), ("b", "CT:128"), ("r", "604800 3600 0 90000"), ("t", "100 200"),
        ("x", "unknown line"),
    ]
    assert sdp.media[0].port_count == 2 and sdp.media[0].port == 49170
    assert sdp.media[0].other_lines == [("i", "media info"), ("k", "prompt")]
    assert sdp.serialise() == crlf("""
v=0
o=- 1 2 IN IP4 192.0.2.9
s=call
i=session info
c=IN IP4 192.0.2.9
b=CT:128
t=0 0
r=604800 3600 0 90000
t=100 200
x=unknown line
a=group:BUNDLE 0
m=audio 49170/2 RTP/AVP 0
i=media info
k=prompt
a=mid:0
""")
    assert SessionDescription.parse(sdp.serialise()) == sdp


def test_attribute_with_empty_value_differs_from_flag():
    sdp = SessionDescription.parse(SIPP_UAC + "a=foo:\r\na=bar\r\n")
    assert sdp.media[0].attributes[-2:] == [Attribute("foo", ""), Attribute("bar")]
    assert sdp.serialise().endswith("a=foo:\r\na=bar\r\n")


def test_rejected_stream_without_formats_is_tolerated():
    sdp = SessionDescription.parse(SIPP_UAC + "m=video 0 RTP/AVP\r\n")
    assert sdp.media[1].formats == [] and sdp.media[1].rejected
    assert sdp.serialise().endswith("m=video 0 RTP/AVP\r\n")


def test_constructed_description_serialises():
    sdp = SessionDescription(
        origin=Origin("-", 1, 1, "IN", "IP4", "192.0.2.1"),
        media=[MediaDescription("audio", 4000, "RTP/AVP", ["0"], connection=Connection.for_address("192.0.2.1"))],
    )
    assert sdp.serialise() == crlf("""
v=0
o=- 1 1 IN IP4 192.0.2.1
s=-
t=0 0
m=audio 4000 RTP/AVP 0
c=IN IP4 192.0.2.1
""")
    assert bytes(sdp) == sdp.serialise().encode()


HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty SDP body"),
        ("\r\n\r\n", "empty SDP body"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", r"line 1: expected v= line \(version\), got 'o=- 1 1 IN IP4 1.2.3.4'"),
        ("v=0\r\ns=-\r\n", r"line 2: expected o= line \(origin\), got 's=-'"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=0 0\r\n", r"line 3: expected s= line \(session name\)"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n", r"line 3: missing s= line \(session name\): SDP ends too early"),
        ("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "line 1: unsupported SDP version 1"),
        ("v=x\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "line 1: SDP version must be a non-negative integer, got 'x'"),
        ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "line 2: o= line needs 6 fields .* got 5"),
        ("v=0\r\no=- abc 1 IN IP4 1.2.3.4\r\ns=-\r\n", "line 2: o= sess-id must be a non-negative integer, got 'abc'"),
        (HEAD + "m=audio\r\n", r"line 6: bad m= line 'audio': expected '<media> <port> <proto> <fmt> \.\.\.'"),
        (HEAD + "m=audio 4000 RTP/AVP\r\n", "line 6: bad m= line 'audio 4000 RTP/AVP': no media formats"),
        (HEAD + "m=audio abc RTP/AVP 0\r\n", "line 6: m= port must be a non-negative integer, got 'abc'"),
        (HEAD + "m=audio -1 RTP/AVP 0\r\n", "line 6: m= port must be a non-negative integer, got '-1'"),
        (HEAD + "m=audio 70000 RTP/AVP 0\r\n", "line 6: m= port must be 0-65535, got 70000"),
        (HEAD + "m=audio 4000/x RTP/AVP 0\r\n", "line 6: m= port count must be"),
        (HEAD + "m=audio 4000 RTP/AVP 0 PCMU\r\n", "line 6: m= RTP payload type must be .* got 'PCMU'"),
        (HEAD + "m=audio 4000 RTP/AVP 128\r\n", "line 6: m= RTP payload type must be 0-127, got 128"),
        (HEAD + "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", "line 7: bad rtpmap '0 PCMU'"),
        (HEAD + "m=audio 4000 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n", "line 7: rtpmap payload type must be"),
        (HEAD + "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/fast\r\n", "line 7: rtpmap clock rate must be"),
        (HEAD + "a=:x\r\n", "line 6: attribute without a name: 'a=:x'"),
        (HEAD + "c=IN IP4 192.0.2.2\r\n", "line 6: duplicate c= line"),
        (HEAD + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4\r\n", "line 7: c= line needs 3 fields"),
        (HEAD + "m=audio 4000 RTP/AVP 0\r\nt=0 0\r\n", "line 7: t= line not allowed inside a media section"),
        (HEAD + "o=- 1 1 IN IP4 192.0.2.1\r\n", "line 6: o= line not allowed more than once"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0\r\n", "line 4: t= line needs '<start> <stop>', got '0'"),
        (HEAD + "this is not sdp\r\n", "line 6: expected '<letter>=<value>', got 'this is not sdp'"),
        (HEAD + "A=foo\r\n", "line 6: expected '<letter>=<value>'"),
        (HEAD + "a=x\ry\r\n", "line 6: stray CR or NUL"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=\xff\r\n", r"SDP is not valid UTF-8 \(byte 31\)"),
    ],
)
def test_malformed_sdp_errors(text, message):
    with pytest.raises(SdpError, match=message) as info:
        SessionDescription.parse(text)
    assert not isinstance(info.value, NoCommonCodec)


def test_error_carries_line_number():
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(HEAD + "m=audio 4000 RTP/AVP 0\r\n\r\nm=audio x RTP/AVP 0\r\n")
    assert info.value.line == 8
    assert info.value.reason == "m= port must be a non-negative integer, got 'x'"


def test_error_quotes_long_lines_truncated():
    with pytest.raises(SdpError, match=r"got 'x{40}\.\.\.'"):
        SessionDescription.parse("x" * 200)


# --- property tests -------------------------------------------------------------------------------

_FRAGMENTS = [
    "v=0", "o=- 1 1 IN IP4 192.0.2.1", "o=- 1 1 IN IP6 ::1", "s=-", "s=", "c=IN IP4 0.0.0.0", "t=0 0",
    "m=audio 4000 RTP/AVP 0 8 101", "m=audio 0 RTP/AVP", "m=video 5000/2 RTP/AVP 96", "m=application 9 x y",
    "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=rtpmap:96 opus/48000/2", "a=sendonly",
    "a=inactive", "a=ptime:20", "a=ptime:x", "b=AS:64", "i=info", "k=clear", "r=1 2", "z=0 0", "q=?", "e=x",
]
_NOISY_LINES = st.one_of(
    st.sampled_from(_FRAGMENTS), st.text(max_size=30), st.sampled_from(_FRAGMENTS).map(lambda s: s[:-1])
)
_SDP_TEXT = st.builds(
    lambda head, body, eol: eol.join([*head, *body]) + eol,
    st.sampled_from([["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-"], []]),
    st.one_of(st.lists(_NOISY_LINES, max_size=20), st.lists(st.sampled_from(_FRAGMENTS), max_size=20)),
    st.sampled_from(["\r\n", "\n"]),
)


def _parse_or_error(text: str | bytes) -> SessionDescription | None:
    try:
        return SessionDescription.parse(text)
    except SdpError:
        return None


@settings(max_examples=300)
@given(st.one_of(st.text(), _SDP_TEXT))
def test_any_text_parses_or_raises_sdp_error(text):
    sdp = _parse_or_error(text)
    if sdp is not None:
        assert SessionDescription.parse(sdp.serialise()) == sdp
        assert SessionDescription.parse(bytes(sdp)) == sdp


@settings(max_examples=200)
@given(st.binary())
def test_any_bytes_parse_or_raise_sdp_error(data):
    _parse_or_error(data)


_OFFER_TEXT = st.builds(lambda body: HEAD + "".join(line + "\r\n" for line in body), st.lists(
    st.sampled_from([*_FRAGMENTS, "m=audio 4000 RTP/AVP 8 0", "a=rtpmap:18 G729/8000", "a=recvonly"]), max_size=20
))


@settings(max_examples=300)
@given(_OFFER_TEXT)
def test_negotiate_on_parsed_text_answers_or_raises_sdp_error(text):
    sdp = _parse_or_error(text)
    if sdp is None:
        return
    try:
        answer = negotiate(sdp, local_address="192.0.2.1", local_port=4000, session_id=1)
    except SdpError:
        return
    assert len(answer.sdp.media) == len(sdp.media)
    assert parse_answer(sdp, SessionDescription.parse(bytes(answer.sdp))).codec == answer.codec
