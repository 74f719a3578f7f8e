"""Parsing and serialising SIP messages, URIs and header values (RFC 3261 §7, §18.3, §19, §20, §25)."""

from __future__ import annotations

import pytest

from callcenter.sip.errors import SipParseError, UriError
from callcenter.sip.headers import CSeq, Via, canonical_name, split_values
from callcenter.sip.message import (
    Headers,
    Request,
    Response,
    error_response_from_partial,
    parse_message,
    response_for,
)
from callcenter.sip.stream import StreamFramer
from callcenter.sip.uri import AbsoluteUri, NameAddr, SipUri, TelUri, parse_name_addr, parse_uri


def crlf(text: str) -> bytes:
    """A message written with ``\\n`` line ends → CRLF; the blank line ends the header section."""
    return text.replace("\n", "\r\n").encode("utf-8")


def options(*extra: str, body: bytes = b"", length: int | None = None, method: str = "OPTIONS") -> bytes:
    lines = [
        f"{method} sip:agent@cc.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        "From: <sip:alice@example.org>;tag=a1",
        "To: <sip:agent@cc.example.com>",
        "Call-ID: c1@192.0.2.1",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
        *extra,
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


# -- header names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("i", "Call-ID"), ("m", "Contact"), ("e", "Content-Encoding"), ("l", "Content-Length"),
        ("c", "Content-Type"), ("f", "From"), ("s", "Subject"), ("k", "Supported"), ("t", "To"),
        ("v", "Via"), ("o", "Event"), ("r", "Refer-To"), ("b", "Referred-By"), ("u", "Allow-Events"),
        ("x", "Session-Expires"), ("a", "Accept-Contact"), ("j", "Reject-Contact"),
        ("d", "Request-Disposition"), ("y", "Identity"), ("n", "Identity-Info"),
    ],
)
def test_compact_forms(compact: str, full: str) -> None:
    assert canonical_name(compact) == full
    assert canonical_name(compact.upper()) == full


def test_compact_forms_in_a_message_are_serialised_long() -> None:
    data = crlf(
        "INVITE sip:agent@cc.example.com SIP/2.0\n"
        "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-2\n"
        "f: <sip:alice@example.org>;tag=a1\n"
        "t: <sip:agent@cc.example.com>\n"
        "i: c2@192.0.2.1\n"
        "CSeq: 1 INVITE\n"
        "m: <sip:alice@192.0.2.1>\n"
        "k: timer, 100rel\n"
        "s: hello\n"
        "c: text/plain\n"
        "l: 2\n"
        "\n"
        "hi"
    )
    msg = parse_message(data)
    assert [k for k, _ in msg.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Subject", "Content-Type", "Content-Length"
    ]
    assert msg.headers.get_all("k") == ["timer", "100rel"]
    out = bytes(msg)
    for name in (b"Via", b"From", b"To", b"Call-ID", b"Contact", b"Supported", b"Subject", b"Content-Type"):
        assert b"\r\n" + name + b": " in out
    assert b"\r\nContent-Length: 2\r\n" in out
    assert out.endswith(b"\r\n\r\nhi")


def test_canonical_capitalisation() -> None:
    data = options(
        'www-authenticate: Digest realm="x"', "user-agent: t", "x-custom-HEADER: 1", "p-asserted-identity: <sip:a@b>"
    )
    data = data.replace(b"Call-ID:", b"call-id:").replace(b"CSeq:", b"CSEQ:").replace(b"Max-Forwards", b"MAX-forwards")
    msg = parse_message(data)
    names = [k for k, _ in msg.headers]
    assert "Call-ID" in names and "CSeq" in names and "WWW-Authenticate" in names and "Max-Forwards" in names
    assert "User-Agent" in names and "X-Custom-Header" in names and "P-Asserted-Identity" in names
    out = bytes(msg)
    assert b"\r\nCall-ID: c1@192.0.2.1\r\n" in out and b"\r\nCSeq: 1 OPTIONS\r\n" in out
    assert b'\r\nWWW-Authenticate: Digest realm="x"\r\n' in out
    # Lookups are case-insensitive and accept compact forms.
    assert msg.headers.get("CALL-ID") == msg.headers.get("i") == "c1@192.0.2.1"


# -- multi-value headers --------------------------------------------------------------------------


def test_comma_separated_values_are_split_for_list_headers() -> None:
    msg = parse_message(
        options(
            "Via: SIP/2.0/TCP p1.example.com;branch=z9hG4bK-a, SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK-b",
            'Contact: "Doe, John" <sip:jo,hn@a.example.com;x=1>;q=0.5, <sip:john@b.example.com>',
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            "Route: <sip:p3.example.com;lr>",
        )
    )
    assert [v.host for v in msg.vias] == ["192.0.2.1", "p1.example.com", "[2001:db8::9]"]
    assert msg.vias[2].port == 5070 and msg.vias[2].bare_host == "2001:db8::9"
    assert [c.display_name for c in msg.contacts] == ["Doe, John", None]
    assert msg.contacts[0].params == {"q": "0.5"}
    assert [str(r.uri) for r in msg.name_addrs("Route")] == [
        "sip:p1.example.com;lr", "sip:p2.example.com;lr", "sip:p3.example.com;lr"
    ]


def test_commas_inside_single_value_headers_are_not_split() -> None:
    auth = 'Digest username="alice", realm="cc.example.com", nonce="abc", uri="sip:cc.example.com", response="0f"'
    www = 'Digest realm="cc.example.com", qop="auth,auth-int", nonce="n1", algorithm=MD5'
    date = "Sat, 13 Nov 2010 23:29:00 GMT"
    msg = parse_message(options(f"Authorization: {auth}", f"WWW-Authenticate: {www}", f"Date: {date}"))
    assert msg.headers.get_all("Authorization") == [auth]
    assert msg.headers.get_all("WWW-Authenticate") == [www]
    assert msg.headers.get_all("Date") == [date]


def test_split_values_respects_quotes_and_angles() -> None:
    assert split_values('"a,b" <sip:x@y;p=1,2>, c') == ['"a,b" <sip:x@y;p=1,2>', "c"]
    assert split_values('"a\\",b", c') == ['"a\\",b"', "c"]
    assert split_values("a,,b") == ["a", "", "b"]
    with pytest.raises(SipParseError):
        split_values('"unterminated, x')


# -- folding, UTF-8, bodies -----------------------------------------------------------------------


def test_line_folding_with_spaces_and_tabs() -> None:
    data = options("Subject: first\r\n  second\r\n\tthird", "Supported: timer,\r\n 100rel")
    msg = parse_message(data.replace(b"To: <", b"To:\r\n\t<"))
    assert msg.headers.get("Subject") == "first second third"
    assert msg.headers.get_all("Supported") == ["timer", "100rel"]
    assert str(msg.to.uri) == "sip:agent@cc.example.com"
    assert b"\r\nSubject: first second third\r\n" in bytes(msg)


def test_folded_line_right_after_the_start_line_is_rejected() -> None:
    with pytest.raises(SipParseError):
        parse_message(options().replace(b"SIP/2.0\r\n", b"SIP/2.0\r\n folded\r\n", 1))


def test_utf8_display_names_reason_and_body() -> None:
    body = "Grüße, 你好 ☎".encode()
    data = options(length=len(body), body=body).replace(
        b"From: <sip:alice@example.org>", 'From: "Jürgen Müller 😀" <sip:juergen@example.org>'.encode()
    )
    msg = parse_message(data)
    assert msg.from_.display_name == "Jürgen Müller 😀"
    assert msg.body == body
    again = parse_message(bytes(msg))
    assert again.from_.display_name == "Jürgen Müller 😀" and again.body == body
    resp = parse_message(crlf("SIP/2.0 486 Besetzt – später\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n"
                              "From: <sip:a@b>;tag=1\nTo: <sip:c@d>;tag=2\nCall-ID: x\nCSeq: 1 INVITE\n\n"))
    assert isinstance(resp, Response) and resp.reason == "Besetzt – später"


def test_header_section_must_be_utf8() -> None:
    data = options("Subject: cafe").replace(b"cafe", b"caf\xe9")  # latin-1, not UTF-8
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400 and info.value.is_request is True
    # The undecodable Subject is left out of the salvaged headers; the routing headers are mirrored.
    assert "Subject" not in dict(info.value.partial) and "Call-ID" in dict(info.value.partial)
    answer = error_response_from_partial(info.value)
    assert answer is not None and answer.startswith(b"SIP/2.0 400 ")


def test_datagram_body_longer_than_content_length_is_truncated() -> None:
    msg = parse_message(options(length=5, body=b"helloEXTRA"))
    assert msg.body == b"hello"


def test_datagram_body_shorter_than_content_length_is_rejected() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(options(length=10, body=b"hello"))
    assert info.value.status == 400 and "Content-Length" in info.value.reason


def test_datagram_without_content_length_takes_the_rest() -> None:
    assert parse_message(options(body=b"abc")).body == b"abc"


def test_stream_message_requires_content_length() -> None:
    with pytest.raises(SipParseError):
        parse_message(options(body=b"abc"), stream=True)
    assert parse_message(options(length=3, body=b"abc"), stream=True).body == b"abc"


def test_serialised_content_length_is_the_body_length() -> None:
    msg = parse_message(options(length=3, body=b"abc"))
    msg.body = "é".encode()
    out = bytes(msg)
    assert out.endswith(b"\r\nContent-Length: 2\r\n\r\n\xc3\xa9")
    assert out.count(b"Content-Length") == 1


@pytest.mark.parametrize("value", ["-1", "1.5", "0x10", "", "1 2", "²", "٣", "9" * 30, "1" * 5000])
def test_bad_content_length_values(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(options(f"Content-Length: {value}", body=b"x" * 3))


def test_lf_only_line_ends_are_accepted() -> None:
    data = options(length=6, body=b"a\r\n\r\nb")
    head, body = data.split(b"\r\n\r\n", 1)
    msg = parse_message(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    # The body's CRLFCRLF must not be taken for the end of an LF-only header section.
    assert msg.call_id == "c1@192.0.2.1" and msg.body == b"a\r\n\r\nb"


def test_leading_crlfs_are_ignored() -> None:
    assert parse_message(b"\r\n\r\n" + options()).call_id == "c1@192.0.2.1"


# -- limits ---------------------------------------------------------------------------------------


def test_size_limit_gives_513_with_a_response() -> None:
    data = options(length=2000, body=b"x" * 2000)
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_size=1000)
    assert info.value.status == 513 and info.value.is_request is True
    answer = error_response_from_partial(info.value)
    assert answer is not None and answer.startswith(b"SIP/2.0 513 Message Too Large")
    assert b"\r\nCall-ID: c1@192.0.2.1\r\n" in answer


def test_size_limit_counts_the_whole_datagram() -> None:
    data = options(length=10, body=b"x" * 10)
    assert parse_message(data, max_size=len(data)).body == b"x" * 10
    with pytest.raises(SipParseError):
        parse_message(data, max_size=len(data) - 1)


def test_header_count_limit_gives_513() -> None:
    data = options(*[f"X-H{i}: {i}" for i in range(20)])
    assert parse_message(data, max_headers=40)
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_headers=10)
    assert info.value.status == 513
    answer = error_response_from_partial(info.value)
    assert answer is not None and answer.startswith(b"SIP/2.0 513 ")


# -- stream framing -------------------------------------------------------------------------------


def _stream_messages() -> list[bytes]:
    return [
        options(length=0),
        options("Content-Type: text/plain", length=11, body=b"hello\r\n\r\nxx", method="MESSAGE"),
        crlf("SIP/2.0 200 OK\nl: 3\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\n"
             "To: <sip:c@d>;tag=2\nCall-ID: x\nCSeq: 1 MESSAGE\n\nabc"),
    ]


def test_framer_several_messages_in_one_read() -> None:
    msgs = _stream_messages()
    framer = StreamFramer()
    assert framer.feed(b"".join(msgs)) == msgs
    for raw in msgs:
        parse_message(raw, stream=True)


def test_framer_split_at_every_byte_offset() -> None:
    msgs = _stream_messages()
    stream = b"".join(msgs)
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == msgs, cut


def test_framer_byte_at_a_time() -> None:
    msgs = _stream_messages()
    framer = StreamFramer()
    got: list[bytes] = []
    for i, byte in enumerate(b"\r\n".join(msgs)):
        got += framer.feed(bytes([byte]))
        assert len(got) <= len(msgs), i
    assert got == msgs


def test_framer_skips_keepalive_crlfs() -> None:
    msgs = _stream_messages()
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []  # RFC 5626 ping
    assert framer.feed(b"\r\n" + msgs[0] + b"\r\n\r\n\r\n") == [msgs[0]]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n" + msgs[1]) == [msgs[1]]


def test_framer_requires_content_length() -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(options(body=b""))


def test_framer_content_length_anywhere_in_the_header_section() -> None:
    # Regression: the old framer only saw Content-Length when it was the last header line.
    raw = options("Content-Length: 3", "Subject: after", body=b"abc")
    assert StreamFramer().feed(raw + raw) == [raw, raw]
    folded = options("Content-Length:\r\n 3", body=b"abc")
    assert StreamFramer().feed(folded) == [folded]


def test_framer_conflicting_content_lengths_close_the_stream() -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(options("Content-Length: 3", "l: 30", body=b"abc"))


def test_framer_size_limits() -> None:
    framer = StreamFramer(max_size=500)
    with pytest.raises(SipParseError) as info:
        framer.feed(options(length=10_000))
    assert info.value.status == 413
    framer = StreamFramer(max_size=500)
    with pytest.raises(SipParseError) as info:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X-Filler: yyyyyyyyyyyyy\r\n" * 40)
    assert info.value.status == 513


# -- URIs -----------------------------------------------------------------------------------------


def test_ipv6_sip_uri() -> None:
    uri = SipUri.parse("sip:[2001:db8::1]:5060;transport=tcp")
    assert (uri.host, uri.bare_host, uri.port, uri.transport, uri.user) == (
        "[2001:db8::1]", "2001:db8::1", 5060, "tcp", None
    )
    assert str(uri) == "sip:[2001:db8::1]:5060;transport=tcp"
    assert SipUri.parse("sips:alice@[::1]").default_port() == 5061
    for bad in ("sip:[2001:db8::1", "sip:[2001:db8::g]", "sip:[fe80::1%25eth0]", "sip:[::1]x", "sip:[::1]:99999"):
        with pytest.raises(UriError):
            SipUri.parse(bad)


def test_sip_uri_fields_params_and_headers() -> None:
    uri = SipUri.parse(
        "SIPS:Alice:secret@CC.Example.COM:5061;Transport=TCP;lr;maddr=239.255.255.1?subject=hi%20there&priority=urgent"
    )
    assert uri.scheme == "sips" and uri.user == "Alice" and uri.password == "secret"
    assert uri.host == "cc.example.com" and uri.port == 5061
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert uri.transport == "tcp"
    assert uri.headers == {"subject": "hi there", "priority": "urgent"}
    assert uri.address_of_record() == "sips:Alice@cc.example.com"
    assert SipUri.parse(str(uri)) == uri
    assert SipUri.parse("sip:example.com").default_port() == 5060


@pytest.mark.parametrize(
    "bad",
    [
        "sip:", "sip:@example.com", "sip:user@", "sip:a b@example.com", "sip:user@exa_mple.com",
        "sip:user@example.com:", "sip:user@example.com:65536", "sip:user@example.com:²", "sip:user@example.com;",
        "sip:user@example.com;a=1;A=2", "sip:us@er@example.com", "sip:user@example.com?x", "http://example.com",
        "sip:user@example.com:" + "1" * 5000,
    ],
)
def test_bad_sip_uris(bad: str) -> None:
    with pytest.raises(UriError):
        SipUri.parse(bad)


def test_tel_uris() -> None:
    tel = parse_uri("tel:+1-201-555-0123;ext=42")
    assert isinstance(tel, TelUri) and tel.number == "+1-201-555-0123" and tel.params == {"ext": "42"}
    assert tel.digits == "+12015550123" and str(tel) == "tel:+1-201-555-0123;ext=42"
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelUri) and local.params["phone-context"] == "example.com"
    for bad in ("tel:", "tel:+", "tel:+-.()", "tel:12 34", "tel:+1" + "1" * 3000 + "x"):
        with pytest.raises(UriError):
            parse_uri(bad)


def test_other_schemes_are_kept_verbatim() -> None:
    uri = parse_uri("urn:service:sos")
    assert isinstance(uri, AbsoluteUri) and uri.scheme == "urn" and str(uri) == "urn:service:sos"
    for bad in ("urn:a b", "urn:<x>", "mailto:\x00@x", "nocolon"):
        with pytest.raises(UriError):
            parse_uri(bad)


# -- name-addr ------------------------------------------------------------------------------------


def test_name_addr_quoted_display_names_and_escapes() -> None:
    na = parse_name_addr('"Doe \\"JD\\" \\\\ John" <sip:jd@example.com;transport=udp>;tag=xyz;expires=60')
    assert na.display_name == 'Doe "JD" \\ John'
    assert isinstance(na.uri, SipUri) and na.uri.params == {"transport": "udp"}
    assert na.params == {"tag": "xyz", "expires": "60"} and na.tag == "xyz"
    assert parse_name_addr(str(na)) == na
    assert parse_name_addr("Joe Bloggs <sip:j@b>").display_name == "Joe Bloggs"
    assert parse_name_addr("<sip:j@b>").display_name is None
    assert parse_name_addr("*").wildcard
    assert parse_name_addr("sip:j@b;tag=1").params == {"tag": "1"}
    assert parse_name_addr('<sip:j@b>;p="quoted ; value"').params == {"p": '"quoted ; value"'}


@pytest.mark.parametrize(
    "bad",
    [
        '"unterminated <sip:a@b>', '"name" sip:a@b', "Bell, Alex <sip:a@b>", "<sip:a@b", "< sip:a@b>",
        "<sip:a@b>tag=1", "<sip:a@b>;tag=1;tag=2", "sip:a@b?x=y", "<sip:a@b>;", '"bad\x01ctl" <sip:a@b>',
        "<sip:a@b>;p=\"open",
    ],
)
def test_bad_name_addrs(bad: str) -> None:
    with pytest.raises(UriError):
        parse_name_addr(bad)


def test_name_addr_serialisation_never_emits_crlf() -> None:
    na = NameAddr(uri=SipUri(host="b", user="a"), display_name="evil\r\nVia: x")
    assert "\r" not in str(na) and "\n" not in str(na)
    assert parse_name_addr(str(na)).display_name == "evil  Via: x"


# -- Via and CSeq ---------------------------------------------------------------------------------


def test_via_received_and_rport() -> None:
    via = Via.parse("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776;received=192.0.2.4;rport=5067")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "pc33.example.com", 5066, "z9hG4bK776")
    assert via.params["received"] == "192.0.2.4" and via.params["rport"] == "5067"
    bare = Via.parse("SIP/2.0/tcp [2001:db8::5];rport;received=2001:db8::7")
    assert bare.transport == "TCP" and bare.bare_host == "2001:db8::5" and bare.params["rport"] is None
    assert bare.params["received"] == "2001:db8::7"
    assert Via.parse(str(via)) == via
    spaced = Via.parse("SIP / 2.0 / UDP host.example.com : 5060 ; branch = z9hG4bK1")
    assert (spaced.port, spaced.branch) == (5060, "z9hG4bK1")


@pytest.mark.parametrize(
    "bad",
    [
        "SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/3.0/UDP host", "SIP/2.0/UDP host:", "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP host port", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host;branch=a;branch=b",
        "SIP/2.0/UDP [::1", "SIP/2.0/UDP [zz::1]", "SIP/2.0/UDP h_o_st", "SIP/2.0/UDP host:²",
        "SIP/2.0/UDP host:" + "1" * 5000,
    ],
)
def test_bad_vias(bad: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(bad)


def test_cseq() -> None:
    assert CSeq.parse("  0042   INVITE ") == CSeq(42, "INVITE")
    assert CSeq.parse("2147483647 ACK").number == 2**31 - 1
    for bad in ("2147483648 ACK", "1", "INVITE 1", "1 INVITE x", "-1 INVITE", "² INVITE", "1\u00a0INVITE",
                "1" * 5000 + " INVITE"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)


# -- responses ------------------------------------------------------------------------------------


def _request(to: str = "<sip:agent@cc.example.com>") -> Request:
    msg = parse_message(
        options(
            "Record-Route: <sip:p1.example.com;lr>",
            "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-p1",
            "Timestamp: 54",
        ).replace(b"To: <sip:agent@cc.example.com>", f"To: {to}".encode())
    )
    assert isinstance(msg, Request)
    return msg


def test_response_for_mirrors_headers_and_adds_to_tag() -> None:
    req = _request()
    resp = response_for(req, 180, to_tag="srv1")
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert [k for k, _ in resp.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Record-Route", "Via"]
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.headers.get("To") == "<sip:agent@cc.example.com>;tag=srv1"
    again = parse_message(bytes(resp))
    assert isinstance(again, Response) and again.to.tag == "srv1" and again.from_.tag == "a1"


def test_response_for_to_tag_rules() -> None:
    req = _request()
    assert response_for(req, 100, to_tag="srv1").headers.get("To") == "<sip:agent@cc.example.com>"
    assert "Record-Route" not in response_for(req, 100).headers
    assert "Record-Route" not in response_for(req, 486, to_tag="t").headers
    assert response_for(req, 200).headers.get("To") == "<sip:agent@cc.example.com>"  # no tag given
    # In-dialog: an existing tag is kept, never doubled — also when written with spaces (wsinv style).
    for to in ("<sip:agent@cc.example.com>;tag=abc", "sip:agent@cc.example.com ;  tag = abc", "<sip:x@y>;TAG=abc"):
        resp = response_for(_request(to), 200, to_tag="srv1")
        assert resp.headers.get("To") == to
    assert response_for(req, 404, "Nobody Here").reason == "Nobody Here"


def test_error_response_never_answers_ack_or_responses() -> None:
    bad_ack = options(method="ACK").replace(b"Max-Forwards: 70", b"Max-Forwards: 700")
    with pytest.raises(SipParseError) as info:
        parse_message(bad_ack)
    assert info.value.method == "ACK" and error_response_from_partial(info.value) is None
    bad_resp = crlf("SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\n"
                    "To: <sip:c@d>\nCall-ID: x\nCSeq: x INVITE\n\n")
    with pytest.raises(SipParseError) as info:
        parse_message(bad_resp)
    assert info.value.is_request is False and error_response_from_partial(info.value) is None


# -- building messages ----------------------------------------------------------------------------


def test_headers_api() -> None:
    h = Headers([("call-id", "1"), ("v", "a"), ("Via", "b")])
    assert list(h) == [("Call-ID", "1"), ("Via", "a"), ("Via", "b")]
    h.prepend("VIA", "z")
    h.set("via", "only")
    assert list(h) == [("Via", "only"), ("Call-ID", "1")]
    copy = h.copy()
    copy.remove("Via")
    assert "Via" in h and "via" not in copy and len(copy) == 1
    assert h.get("X-Missing", "d") == "d" and h.get_all("X-Missing") == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "x\r\nVia: evil"), ("X-A", "x\ny"), ("X-A", "x\r"), ("Bad Name", "v"), ("X-A: b", "v")],
)
def test_headers_reject_injection(name: str, value: str) -> None:
    h = Headers()
    for method in (h.add, h.prepend, h.set):
        with pytest.raises(ValueError):
            method(name, value)


def test_build_and_serialise_request() -> None:
    req = Request(method="INVITE", uri=SipUri(host="cc.example.com", user="agent"), body=b"v=0\r\n")
    req.headers.add("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-x")
    sender = NameAddr(uri=SipUri(host="example.org", user="a"), display_name="A B", params={"tag": "1"})
    req.headers.add("From", str(sender))
    req.headers.add("To", "<sip:agent@cc.example.com>")
    req.headers.add("Call-ID", "built@1")
    req.headers.add("CSeq", "1 INVITE")
    req.headers.add("Content-Length", "999")  # replaced by the real length
    out = bytes(req)
    assert out.startswith(b"INVITE sip:agent@cc.example.com SIP/2.0\r\n")
    assert out.endswith(b"\r\nContent-Length: 5\r\n\r\nv=0\r\n")
    assert parse_message(out).from_.display_name == "A B"
    req.method = "INVITE\r\nX"
    with pytest.raises(ValueError):
        bytes(req)


def test_invalidate_drops_cached_views() -> None:
    req = _request()
    assert req.cseq.number == 1
    req.headers.set("CSeq", "2 OPTIONS")
    assert req.cseq.number == 1
    req.invalidate()
    assert req.cseq.number == 2


def test_tag_without_value_is_rejected() -> None:
    """Found by hypothesis: a valueless To tag passed, then response_for added a second tag."""
    raw = (
        b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:x@y> ;  tag\r\nFrom: <sip:x@y>;tag=1\r\nCall-ID: c\r\n"
        b"CSeq: 1 INVITE\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(SipParseError, match="tag parameter without a value"):
        parse_message(raw)
