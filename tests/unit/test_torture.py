"""RFC 4475 "SIP Torture Test Messages" against the sans-I/O parser.

The corpus in ``sip_torture/`` holds one message per file, exact bytes with CRLF line ends and the
RFC's ``<allOneLine>``, ``<hex>`` and ``<repeat>`` notations expanded. Names are the RFC's: note that
the RFC calls the negative Content-Length case ``ncl``, the overlarge *request* scalars ``scalar02``
and the overlarge *response* scalars ``scalarlg``. The §3.2-§3.4 messages whose handling is an
application matter (unknown schemes, unknown Content-Type or auth scheme, Require, Max-Forwards: 0,
broadcast Via, RFC 2543 syntax...) must simply parse; ``insuf``, ``multi01`` and ``mcl01`` are parser
matters and must be rejected.

Where the RFC's exact bytes could not be reproduced (the S/MIME signature in mpart01's body), the
file keeps the feature under test (a binary, non-UTF-8 body with CR/LF octets and exact
Content-Length).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.sip.errors import SipParseError
from callcenter.sip.headers import canonical_name
from callcenter.sip.message import Request, Response, error_response_from_partial, parse_message
from callcenter.sip.uri import AbsoluteUri, SipUri, TelUri

CORPUS = Path(__file__).parent / "sip_torture"

# RFC 4475 §3.1.1 (valid), §3.2 badbranch, §3.3 application-layer cases that are valid messages,
# §3.4 inv2543. Also baddate (§3.1.2.12): the Date header is carried verbatim and never parsed by
# the engine, so an invalid time zone in it is no reason to reject the request (the RFC itself
# says an element may accept it as long as it does not need the date).
VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason",
    "baddate",
    "badbranch",
    "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01",
    "cparam02", "regescrt", "sdp01",
    "inv2543",
]

# Invalid requests: the status the parser must report. Each of these is answerable (RFC 4475 asks
# for a 400, or a 505 for badvers), so error_response_from_partial must build that response.
# trws (trailing SP after SIP/2.0) is rejected: see the comment in message._parse_start_line.
INVALID_REQUESTS = {
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "quotbal": 400, "ltgtruri": 400,
    "lwsruri": 400, "lwsstart": 400, "trws": 400, "escruri": 400, "regbadct": 400, "badaspec": 400,
    "baddn": 400, "badvers": 505, "mismatch01": 400, "mismatch02": 400, "multi01": 400, "mcl01": 400,
}
# insuf lacks From, To and Call-ID: the RFC asks for a 400, but a response without those headers
# would itself be malformed (and unmatchable by the client), so nothing is sent.
UNANSWERABLE_REQUESTS = {"insuf": 400}
# Invalid responses are dropped: nothing can be sent back for them.
INVALID_RESPONSES = ["scalarlg", "bigcode"]


def _load(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def _raw_headers(data: bytes) -> list[tuple[str, str]]:
    """Header fields of a message read independently of the parser (for mirroring checks)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    fields: list[tuple[str, str]] = []
    for line in head.split("\r\n")[1:]:
        if line[:1] in (" ", "\t"):
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}".strip())
        else:
            name, _, value = line.partition(":")
            fields.append((canonical_name(name.strip()), value.strip()))
    return fields


def _comparable(msg: Request | Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in msg.headers if k != "Content-Length"]


def test_corpus_is_complete_and_crlf() -> None:
    names = {p.stem for p in CORPUS.glob("*.dat")}
    expected = set(VALID) | set(INVALID_REQUESTS) | set(UNANSWERABLE_REQUESTS) | set(INVALID_RESPONSES)
    assert names == expected
    for name in names:
        data = _load(name)
        head = data.split(b"\r\n\r\n", 1)[0]
        assert b"\n" not in head.replace(b"\r\n", b""), f"{name}: bare LF in the header section"
        assert b"\r" not in head.replace(b"\r\n", b""), f"{name}: bare CR in the header section"


@pytest.mark.parametrize("name", VALID)
def test_valid_message_parses_and_round_trips(name: str) -> None:
    msg = parse_message(_load(name))
    # The structured views must all be usable.
    assert msg.vias and msg.top_via.host
    assert msg.from_.uri is not None and msg.to.uri is not None
    assert msg.cseq.number >= 0 and msg.call_id
    msg.contacts  # noqa: B018
    again = parse_message(bytes(msg))
    assert type(again) is type(msg)
    assert _comparable(again) == _comparable(msg)
    assert again.headers.get("Content-Length") == str(len(msg.body))
    assert again.body == msg.body
    if isinstance(msg, Request):
        assert isinstance(again, Request)
        assert (again.method, str(again.uri)) == (msg.method, str(msg.uri))
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (msg.status, msg.reason)


@pytest.mark.parametrize("name", sorted(INVALID_REQUESTS))
def test_invalid_request_is_rejected_with_mirrored_response(name: str) -> None:
    data = _load(name)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    err = info.value
    assert err.status == INVALID_REQUESTS[name], err.reason
    assert err.is_request is True
    answer = error_response_from_partial(err)
    assert answer is not None
    # Read the answer independently of the parser: mirrored headers may themselves be malformed
    # (quotbal's To, badvers' SIP/7.0 Via) and are still sent back as received.
    assert answer.startswith(f"SIP/2.0 {INVALID_REQUESTS[name]} ".encode())
    assert answer.endswith(b"\r\nContent-Length: 0\r\n\r\n")
    got = _raw_headers(answer)
    sent = _raw_headers(data)
    assert [v for k, v in got if k == "Via"] == [v for k, v in sent if k == "Via"]
    first: dict[str, str] = {}
    for k, v in sent:
        first.setdefault(k, v)
    for header in ("From", "Call-ID", "CSeq"):
        assert [v for k, v in got if k == header] == [first[header]], header
    (to_value,) = [v for k, v in got if k == "To"]
    assert to_value == first["To"] or to_value.startswith(first["To"] + ";tag=")
    assert {k for k, _ in got} == {"Via", "From", "To", "Call-ID", "CSeq", "Content-Length"}


@pytest.mark.parametrize("name", sorted(UNANSWERABLE_REQUESTS))
def test_invalid_request_without_routing_headers_gets_no_response(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_load(name))
    assert info.value.status == UNANSWERABLE_REQUESTS[name]
    assert info.value.is_request is True
    assert error_response_from_partial(info.value) is None


@pytest.mark.parametrize("name", INVALID_RESPONSES)
def test_invalid_response_is_dropped(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_load(name))
    assert info.value.status == 400
    assert info.value.is_request is False
    assert error_response_from_partial(info.value) is None


# -- what the individual valid messages test -----------------------------------------------------


def test_wsinv_whitespace_and_folding() -> None:
    msg = parse_message(_load("wsinv"))
    assert isinstance(msg, Request) and msg.method == "INVITE"
    assert msg.to.tag == "1918181833n" and str(msg.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert msg.from_.display_name == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.headers.get("Max-Forwards") == "0068"
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    (route,) = msg.name_addrs("Route")
    assert isinstance(route.uri, SipUri) and route.uri.params["unknown-no-value"] is None
    assert len(msg.body) == 150


def test_intmeth_unusual_characters() -> None:
    msg = parse_message(_load("intmeth"))
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escapes_are_kept_and_unescaped_on_demand() -> None:
    msg = parse_message(_load("esc01"))
    assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
    assert msg.uri.user == "sips%3Auser%40example.com" and msg.uri.host == "example.net"
    assert msg.uri.user_unescaped == "sips:user@example.com"
    assert isinstance(msg.to.uri, SipUri) and msg.to.uri.user_unescaped == "user"
    (contact,) = msg.contacts
    assert isinstance(contact.uri, SipUri) and contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


def test_escnull_escaped_nul_in_user_part() -> None:
    msg = parse_message(_load("escnull"))
    assert isinstance(msg.to.uri, SipUri) and msg.to.uri.user_unescaped == "null-\x00-null"
    assert [c.uri.user for c in msg.contacts if isinstance(c.uri, SipUri)] == ["%00", "%00%00"]


def test_esc02_percent_that_is_not_an_escape() -> None:
    msg = parse_message(_load("esc02"))
    assert isinstance(msg, Request) and msg.method == "RE%47IST%45R"  # not REGISTER
    assert msg.from_.display_name == "%Z%45"
    assert [str(c.uri) for c in msg.contacts] == ["sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"  # an unknown header
    assert msg.top_via.params == {"rport": None, "branch": "z9hG4bK209%fzsnel234"}


def test_lwsdisp_no_space_before_angle() -> None:
    assert parse_message(_load("lwsdisp")).from_.display_name == "caller"


def test_longreq_long_values() -> None:
    msg = parse_message(_load("longreq"))
    assert len(msg.vias) == 34
    assert msg.vias[-1].branch == "very" + "long" * 50 + "branchvalue"
    assert msg.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert isinstance(msg.to.uri, SipUri) and msg.to.uri.port == 6000
    assert msg.from_.tag == "12" + "982" * 50 + "424"
    assert msg.call_id == "longreq.one" + "really" * 20 + "longcallid"


def test_dblreq_only_the_first_message_counts() -> None:
    msg = parse_message(_load("dblreq"))
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""


def test_semiuri_semicolon_in_user_part() -> None:
    msg = parse_message(_load("semiuri"))
    assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
    assert (msg.uri.user, msg.uri.host, msg.uri.params) == ("user;par=u%40example.net", "example.com", {})
    assert len(msg.headers.get_all("Accept")) == 6


def test_transports_unknown_transport_kept() -> None:
    msg = parse_message(_load("transports"))
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_is_exact() -> None:
    data = _load("mpart01")
    msg = parse_message(data)
    assert len(msg.body) == 553 and msg.body == data[-553:]
    with pytest.raises(UnicodeDecodeError):
        msg.body.decode("utf-8")


def test_reason_phrases() -> None:
    unreason = parse_message(_load("unreason"))
    assert isinstance(unreason, Response)
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    noreason = parse_message(_load("noreason"))
    assert isinstance(noreason, Response) and (noreason.status, noreason.reason) == (100, "")


def test_application_layer_cases_parse() -> None:
    unkscm = parse_message(_load("unkscm"))
    assert isinstance(unkscm, Request) and isinstance(unkscm.uri, AbsoluteUri)
    assert unkscm.uri.scheme == "nobodyknowsthisscheme"
    novelsc = parse_message(_load("novelsc"))
    assert isinstance(novelsc, Request) and str(novelsc.uri) == "soap.beep://192.0.2.103:3002"
    unksm2 = parse_message(_load("unksm2"))
    assert str(unksm2.to.uri) == "isbn:2983792873" and str(unksm2.contacts[0].uri) == "name:John_Smith"
    assert parse_message(_load("bext01")).headers.get_all("Proxy-Require") == [
        "noProxiesSupportThis", "norDoAnyProxiesSupportThis"
    ]
    assert parse_message(_load("regaut01")).headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert parse_message(_load("invut")).headers.get("Content-Type") == "application/unknownformat"
    assert parse_message(_load("zeromf")).headers.get("Max-Forwards") == "0"
    assert parse_message(_load("badbranch")).top_via.branch == "z9hG4bK"
    assert [v.host for v in parse_message(_load("bcast")).vias] == ["192.0.2.198", "255.255.255.255"]
    cparam01 = parse_message(_load("cparam01")).contacts[0]
    assert cparam01.params == {"unknownparam": None}  # a header parameter in addr-spec form
    cparam02 = parse_message(_load("cparam02")).contacts[0]
    assert isinstance(cparam02.uri, SipUri) and cparam02.uri.params == {"unknownparam": None} and not cparam02.params
    regescrt = parse_message(_load("regescrt")).contacts[0]
    assert isinstance(regescrt.uri, SipUri) and regescrt.uri.headers == {"Route": "<sip:sip.example.com>"}


def test_inv2543_rfc2543_syntax() -> None:
    msg = parse_message(_load("inv2543"))
    assert msg.top_via.branch is None and msg.from_.tag is None
    assert "Max-Forwards" not in msg.headers and "Content-Length" not in msg.headers
    assert len(msg.body) == 105  # datagram without Content-Length: the body runs to the end
    assert isinstance(msg.to.uri, SipUri) and msg.to.params == {"user": "phone"}
    assert not isinstance(msg.to.uri, TelUri)


# -- what the individual invalid messages test ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("badinv01", "Via"),
        ("clerr", "Content-Length 9999"),
        ("ncl", "Content-Length"),
        ("scalar02", "CSeq"),
        ("quotbal", "unterminated"),
        ("ltgtruri", "<>"),
        ("lwsruri", "request line"),
        ("lwsstart", "request line"),
        ("trws", "request line"),
        ("escruri", "headers are not allowed"),
        ("regbadct", "Contact"),
        ("badaspec", "To"),
        ("baddn", "must be quoted"),
        ("badvers", "version"),
        ("mismatch01", "does not match"),
        ("mismatch02", "does not match"),
        ("multi01", "more than one"),
        ("mcl01", "more than one Content-Length"),
        ("insuf", "missing"),
        ("scalarlg", "CSeq"),
        ("bigcode", "status line"),
    ],
)
def test_rejection_reason(name: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_load(name))
    assert fragment in info.value.reason


def test_multi01_response_mirrors_only_the_first_single_value_headers() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_load("multi01"))
    resp = parse_message(error_response_from_partial(info.value) or b"")
    assert resp.headers.get_all("CSeq") == ["5 INVITE"]
    assert resp.headers.get_all("Call-ID") == ["multi01.98asdh@192.0.2.1"]
    assert resp.from_.tag == "3413415"
    assert resp.to.tag is not None  # added by the responder (RFC 3261 §8.2.6.2)


def test_badvers_answered_with_505() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_load("badvers"))
    answer = error_response_from_partial(info.value) or b""
    assert answer.startswith(b"SIP/2.0 505 Version Not Supported")
    # The Via says SIP/7.0 too; it is mirrored as received.
    assert ("Via", "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw") in _raw_headers(answer)
