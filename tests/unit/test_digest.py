from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.sip.digest import (
    Challenge,
    Credentials,
    DigestError,
    answer_challenge,
    compute_ha1,
    compute_response,
    normalize_algorithm,
    parse_challenge,
    parse_credentials,
    pick_challenge,
)
from callcenter.sip.digest_server import AccountSecret, AuthResult, AuthStatus, DigestServer

SECRET = b"0123456789abcdef-test-secret"
REALM = "care.example.org"
T0 = 1_700_000_000.0


def deterministic_random() -> Callable[[int], bytes]:
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return rand


def make_server(**kwargs: Any) -> DigestServer:
    kwargs.setdefault("random_bytes", deterministic_random())
    return DigestServer(REALM, SECRET, **kwargs)


ACCOUNTS = {"alice": AccountSecret.from_password("s3cret pass")}


def lookup(username: str) -> AccountSecret | None:
    return ACCOUNTS.get(username)


def answer(challenge: Challenge, *, password: str = "s3cret pass", nc: int = 1, **kw: Any) -> Credentials:
    params: dict[str, Any] = {
        "method": "REGISTER",
        "uri": "sip:care.example.org",
        "username": "alice",
        "password": password,
        "cnonce": "0a4f113b",
        "nc": nc,
    }
    params.update(kw)
    return answer_challenge(challenge, **params)


# --------------------------------------------------------------------------- RFC vectors


def test_rfc2617_example() -> None:
    header = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    challenge = parse_challenge(header)
    assert challenge.realm == "testrealm@host.com"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm == "MD5"
    creds = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
        nc=1,
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    # The Authorization header from RFC 2617 §3.5 parses to the same thing.
    rfc_auth = (
        'Digest username="Mufasa",\r\n realm="testrealm@host.com",\r\n'
        ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n uri="/dir/index.html",\r\n'
        ' qop=auth,\r\n nc=00000001,\r\n cnonce="0a4f113b",\r\n'
        ' response="6629fae49393a05397450978507c4ef1",\r\n'
        ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert parse_credentials(rfc_auth) == creds


RFC7616 = {
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    # RFC 7616 §3.9.1 uses the password "Circle of Life" (lower-case "of", unlike RFC 2617).
    challenge = parse_challenge(
        f'Digest realm="{RFC7616["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616["nonce"]}", opaque="{RFC7616["opaque"]}"'
    )
    creds = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616["cnonce"],
    )
    assert creds.response == expected
    assert creds.algorithm == algorithm
    assert creds.opaque == RFC7616["opaque"]


def test_rfc2069_no_qop() -> None:
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    resp = compute_response(
        algorithm="MD5", ha1=ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", method="GET", uri="/dir/index.html"
    )
    challenge = Challenge(realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093")
    creds = answer_challenge(
        challenge, method="GET", uri="/dir/index.html", username="Mufasa", password="Circle Of Life", cnonce="x"
    )
    assert creds.response == resp
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "qop" not in creds.to_header() and "cnonce" not in creds.to_header()


def test_sess_and_auth_int_compute() -> None:
    ha1 = compute_ha1("u", "r", "p", "MD5-sess")
    assert ha1 == compute_ha1("u", "r", "p", "MD5")

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    sess_ha1 = md5(f"{ha1}:n:c")
    ha2 = md5(f"INVITE:sip:x:{hashlib.md5(b'body').hexdigest()}")
    expected = md5(f"{sess_ha1}:n:00000001:c:auth-int:{ha2}")
    got = compute_response(
        algorithm="md5-sess", ha1=ha1, nonce="n", method="INVITE", uri="sip:x",
        qop="auth-int", nc="00000001", cnonce="c", body=b"body",
    )  # fmt: skip
    assert got == expected
    with pytest.raises(DigestError):
        compute_response(algorithm="MD5-sess", ha1=ha1, nonce="n", method="A", uri="b")
    with pytest.raises(DigestError):
        compute_response(algorithm="SHA-512", ha1=ha1, nonce="n", method="A", uri="b")
    with pytest.raises(DigestError):
        compute_response(algorithm="MD5", ha1=ha1, nonce="n", method="A", uri="b", qop="auth")


def test_normalize_algorithm() -> None:
    assert normalize_algorithm("sha-256") == "SHA-256"
    assert normalize_algorithm("md5-SESS") == "MD5-sess"
    assert normalize_algorithm("SHA-512-256") is None


# --------------------------------------------------------------------------- parsing


def test_parse_challenge_full() -> None:
    ch = parse_challenge('Digest realm="x", nonce="y", algorithm=SHA-256, qop="auth,auth-int", opaque="z", stale=true')
    assert ch == Challenge(realm="x", nonce="y", algorithm="SHA-256", qop=("auth", "auth-int"), opaque="z", stale=True)


def test_parse_challenge_quoting_case_and_unknown_params() -> None:
    ch = parse_challenge(
        '  digest  REALM="a \\"quoted\\", realm, with \\\\ backslash" ,, Nonce=abc123,'
        ' Algorithm="md5", STALE=FALSE, charset=UTF-8, userhash=false, qop="AUTH"  '
    )
    assert ch.realm == 'a "quoted", realm, with \\ backslash'
    assert ch.nonce == "abc123"
    assert ch.algorithm == "MD5"
    assert ch.stale is False
    assert ch.qop == ("auth",)


def test_parse_challenge_unknown_algorithm_kept() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-512-256')
    assert ch.algorithm == "SHA-512-256"
    assert not ch.supported


def test_challenge_to_header_round_trip() -> None:
    ch = Challenge(realm='we"ird\\realm', nonce="n,1", algorithm="SHA-256", qop=("auth",), opaque="o", stale=True)
    header = ch.to_header()
    assert header == (
        'Digest realm="we\\"ird\\\\realm", nonce="n,1", algorithm=SHA-256, qop="auth", opaque="o", stale=true'
    )
    assert parse_challenge(header) == ch


def test_credentials_to_header_round_trip() -> None:
    creds = Credentials(
        username="bob",
        realm="r",
        nonce="n",
        uri="sip:bob@r;transport=tcp",
        response="abc",
        algorithm="SHA-256",
        cnonce="c",
        qop="auth",
        nc="0000000a",
        opaque="o",
    )
    header = creds.to_header()
    assert "qop=auth" in header and "nc=0000000a" in header and "algorithm=SHA-256" in header
    assert 'uri="sip:bob@r;transport=tcp"' in header
    assert parse_credentials(header) == creds
    assert creds.nc_value == 10


def test_parse_credentials_lenient_forms() -> None:
    creds = parse_credentials(
        'Digest username="alice", realm="r", nonce="n", uri=sip:r, response="ab", qop="auth", nc=00000002, cnonce=xyz'
    )
    assert creds.uri == "sip:r"
    assert creds.qop == "auth"
    assert creds.nc_value == 2
    assert creds.algorithm == "MD5"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "Digest",
        "Digest ",
        "Digest ,,",
        'Digest realm="x"',  # no nonce
        'Digest nonce="x"',  # no realm
        'Digest realm="x", nonce="y',  # unterminated
        'Digest realm="x" nonce="y"',  # missing comma
        'Digest realm="x", nonce=',  # missing value
        'Digest realm="x", nonce',  # missing '='
        'Digest realm="x", nonce="y", realm="z"',  # duplicate
        'Digest realm="x", =y',
        'Digest realm="a\x00b", nonce="y"',  # control char in quoted string
        'Digest realm="x", nonce="y"\r\nVia: evil',  # unfolded newline
        'Digest realm="x", nonce="y\\',
        'Digest realm="x", nonce=ab"c"',
        'Digest, realm="x", nonce="y"',
        'Digest realm="x", nonce="y", Digest realm="z", nonce="w"',
    ],
)
def test_parse_challenge_malformed(value: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(value)


_GOOD_CREDS = {
    "username": '"u"',
    "realm": '"r"',
    "nonce": '"n"',
    "uri": '"sip:r"',
    "response": '"abc"',
}


def _creds_header(**override: str | None) -> str:
    params = dict(_GOOD_CREDS)
    params.update({k: v for k, v in override.items() if v is not None})
    for k, v in override.items():
        if v is None:
            params.pop(k, None)
    return "Digest " + ", ".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize(
    "override",
    [
        {"username": None},
        {"realm": None},
        {"nonce": None},
        {"uri": None},
        {"response": None},
        {"qop": "auth", "cnonce": '"c"'},  # qop without nc
        {"qop": "auth", "nc": "00000001"},  # qop without cnonce
        {"qop": "auth", "nc": "1", "cnonce": '"c"'},  # nc not 8 hex digits
        {"qop": "auth", "nc": "0000000g", "cnonce": '"c"'},
        {"qop": '"auth,auth-int"', "nc": "00000001", "cnonce": '"c"'},  # qop must be one token
    ],
)
def test_parse_credentials_malformed(override: dict[str, str | None]) -> None:
    parse_credentials(_creds_header())  # the baseline is fine
    with pytest.raises(DigestError):
        parse_credentials(_creds_header(**override))


def test_serialise_rejects_injection() -> None:
    with pytest.raises(DigestError):
        Challenge(realm="x\r\nVia: evil", nonce="n").to_header()
    with pytest.raises(DigestError):
        Challenge(realm="x", nonce="n", algorithm="MD5, evil=1").to_header()
    with pytest.raises(DigestError):
        Credentials(username="u", realm="r", nonce="n", uri="s", response="x", nc="1").to_header()
    with pytest.raises(DigestError):
        Credentials(username="u", realm="r", nonce="n", uri="s", response="x", qop="auth x").to_header()


_FRAGMENTS = [
    "Digest ", "digest", "realm", "nonce", "username", "uri", "response", "qop", "nc", "cnonce",
    "algorithm", "opaque", "stale", "=", '"', "\\", ",", " ", "\t", "\r\n ", "\r", "\n", "\x00", "é",
    "auth", "auth-int", "MD5", "SHA-256", "00000001", "true", "x", "sip:a@b",
]  # fmt: skip
_header_text = st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_value = st.one_of(
    st.text(max_size=12).map(_quoted),
    st.sampled_from(["auth", "MD5", "SHA-256", "00000001", "true", "sip:a@b"]),
)
_param = st.tuples(
    st.sampled_from(["qop", "nc", "cnonce", "algorithm", "opaque", "stale"])
    | st.text("abcXYZ-_", min_size=1, max_size=5),
    _value,
).map(lambda kv: f"{kv[0]}={kv[1]}")


@st.composite
def _near_valid_header(draw: st.DrawFn) -> str:
    """Mostly well-formed headers, sometimes with one character inserted or removed."""
    required = [f"{name}={draw(_value)}" for name in ("realm", "nonce", "username", "uri", "response")]
    params = draw(st.permutations(required + draw(st.lists(_param, max_size=5))))
    text = "Digest " + draw(st.sampled_from([", ", ",", " ,\t"])).join(params)
    if text and draw(st.booleans()):
        i = draw(st.integers(0, len(text) - 1))
        if draw(st.booleans()):
            text = text[:i] + text[i + 1 :]
        else:
            text = text[:i] + draw(st.sampled_from(list('",=\\ \r\n\x00é'))) + text[i:]
    return text


@given(
    st.one_of(st.text(max_size=200), _header_text, st.builds(lambda s: "Digest " + s, st.text()), _near_valid_header())
)
def test_parsers_raise_only_digest_error(value: str) -> None:
    for parser in (parse_challenge, parse_credentials):
        try:
            parser(value)
        except DigestError:
            pass


_param_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)


@given(
    realm=_param_text,
    nonce=_param_text,
    algorithm=st.sampled_from(["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"]),
    qop=st.lists(st.sampled_from(["auth", "auth-int"]), unique=True).map(tuple),
    opaque=st.none() | _param_text,
    stale=st.booleans(),
)
def test_challenge_round_trip_property(
    realm: str, nonce: str, algorithm: str, qop: tuple[str, ...], opaque: str | None, stale: bool
) -> None:
    ch = Challenge(realm=realm, nonce=nonce, algorithm=algorithm, qop=qop, opaque=opaque, stale=stale)
    assert parse_challenge(ch.to_header()) == ch


@given(username=_param_text, uri=_param_text, cnonce=_param_text, nc=st.integers(1, 0xFFFFFFFF))
def test_credentials_round_trip_property(username: str, uri: str, cnonce: str, nc: int) -> None:
    ch = Challenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth",))
    creds = answer_challenge(ch, method="INVITE", uri=uri, username=username, password="p", cnonce=cnonce, nc=nc)
    assert parse_credentials(creds.to_header()) == creds


# --------------------------------------------------------------------------- client side


def test_pick_challenge_prefers_sha256() -> None:
    md5 = Challenge(realm="r", nonce="1", algorithm="MD5", qop=("auth",))
    sha = Challenge(realm="r", nonce="2", algorithm="SHA-256", qop=("auth",))
    weird = Challenge(realm="r", nonce="3", algorithm="SHA-512-256", qop=("auth",))
    conf = Challenge(realm="r", nonce="4", algorithm="SHA-256", qop=("auth-conf",))
    assert pick_challenge([md5, sha]) is sha
    assert pick_challenge([weird, conf, md5]) is md5
    assert pick_challenge([md5, Challenge(realm="r", nonce="5")]) is md5
    with pytest.raises(DigestError):
        pick_challenge([weird, conf])
    with pytest.raises(DigestError):
        pick_challenge([])


def test_answer_challenge_qop_choice() -> None:
    auth_int_only = Challenge(realm="r", nonce="n", qop=("auth-int",))
    creds = answer(auth_int_only, body=b"v=0\r\n")
    assert creds.qop == "auth-int"
    assert creds.response == compute_response(
        algorithm="MD5", ha1=compute_ha1("alice", "r", "s3cret pass"), nonce="n", method="REGISTER",
        uri="sip:care.example.org", qop="auth-int", nc="00000001", cnonce="0a4f113b", body=b"v=0\r\n",
    )  # fmt: skip
    with pytest.raises(DigestError):
        answer(Challenge(realm="r", nonce="n", qop=("auth-conf",)))
    with pytest.raises(DigestError):
        answer(Challenge(realm="r", nonce="n", algorithm="SHA-512"))
    with pytest.raises(DigestError):
        answer(Challenge(realm="r", nonce="n", algorithm="MD5-sess"))  # -sess needs qop
    with pytest.raises(DigestError):
        answer(Challenge(realm="r", nonce="n", qop=("auth",)), nc=0)


# --------------------------------------------------------------------------- server side


def test_round_trip_ok_both_algorithms() -> None:
    server = make_server()
    challenges = server.challenges(T0)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale for c in challenges)
    for ch in challenges:
        creds = answer(ch)
        result = server.verify(creds, "REGISTER", T0 + 1, lookup)
        assert result == AuthResult(AuthStatus.OK, username="alice")
        assert result.ok


def test_round_trip_via_header_strings() -> None:
    server = make_server()
    headers = [c.to_header() for c in server.challenges(T0)]
    chosen = pick_challenge([parse_challenge(h) for h in headers])
    assert chosen.algorithm == "SHA-256"
    auth_header = answer(chosen, method="INVITE", uri="sip:hotline@care.example.org").to_header()
    result = server.verify_header(auth_header, "INVITE", T0 + 2, lookup)
    assert result.status is AuthStatus.OK
    # ...but the method is covered by the digest.
    again = answer(chosen, method="INVITE", uri="sip:hotline@care.example.org", nc=2).to_header()
    assert server.verify_header(again, "BYE", T0 + 2, lookup).status is AuthStatus.FAILED


def test_verify_header_malformed() -> None:
    server = make_server()
    result = server.verify_header('Digest username="alice"', "REGISTER", T0, lookup)
    assert result.status is AuthStatus.MALFORMED
    assert result.username is None
    assert "nonce" in result.reason or "realm" in result.reason


def test_wrong_password_failed() -> None:
    server = make_server()
    creds = answer(server.challenge(T0), password="guess")
    result = server.verify(creds, "REGISTER", T0, lookup)
    assert result.status is AuthStatus.FAILED
    assert result.username is None


def test_unknown_user_failed() -> None:
    server = make_server()
    creds = answer(server.challenge(T0), username="mallory")
    assert server.verify(creds, "REGISTER", T0, lookup).status is AuthStatus.FAILED


def test_wrong_realm_failed() -> None:
    server = make_server()
    ch = server.challenge(T0)
    other = Challenge(realm="other.example", nonce=ch.nonce, qop=ch.qop)
    assert server.verify(answer(other), "REGISTER", T0, lookup).status is AuthStatus.FAILED


def test_expired_nonce_stale_only_with_right_password() -> None:
    server = make_server(nonce_lifetime=300.0)
    ch = server.challenge(T0)
    assert server.verify(answer(ch), "REGISTER", T0 + 299.0, lookup).status is AuthStatus.OK
    late = server.verify(answer(ch, nc=2), "REGISTER", T0 + 301.0, lookup)
    assert late.status is AuthStatus.STALE
    # A wrong password with an expired nonce is a failure, not a stale nonce.
    wrong = server.verify(answer(ch, nc=3, password="x"), "REGISTER", T0 + 301.0, lookup)
    assert wrong.status is AuthStatus.FAILED
    # The caller re-challenges with stale=true.
    fresh = server.challenge(T0 + 301.0, stale=True)
    assert fresh.stale and "stale=true" in fresh.to_header()
    assert server.verify(answer(fresh), "REGISTER", T0 + 302.0, lookup).ok


def test_nonce_from_far_future_is_stale() -> None:
    server = make_server()
    ch = server.challenge(T0 + 10_000)
    assert server.verify(answer(ch), "REGISTER", T0, lookup).status is AuthStatus.STALE


@pytest.mark.parametrize(
    "nonce",
    [
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",  # someone else's nonce
        "",
        "A" * 43,  # right shape, bad MAC
        "é" * 43,
    ],
)
def test_forged_nonce_failed(nonce: str) -> None:
    server = make_server()
    ch = Challenge(realm=REALM, nonce=nonce, qop=("auth",))
    assert server.verify(answer(ch), "REGISTER", T0, lookup).status is AuthStatus.FAILED


def test_tampered_nonce_timestamp_failed() -> None:
    server = make_server()
    nonce = server.challenge(T0).nonce
    raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
    raw[7] ^= 0x01  # nudge the embedded timestamp
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    ch = Challenge(realm=REALM, nonce=forged, qop=("auth",))
    assert server.verify(answer(ch), "REGISTER", T0, lookup).status is AuthStatus.FAILED


def test_nonce_from_other_secret_or_realm_failed() -> None:
    other_secret = DigestServer(REALM, b"another secret of 16+ bytes", random_bytes=deterministic_random())
    other_realm = DigestServer("other", SECRET, random_bytes=deterministic_random())
    server = make_server()
    for foreign in (other_secret.challenge(T0), other_realm.challenge(T0)):
        ch = Challenge(realm=REALM, nonce=foreign.nonce, qop=("auth",))
        assert server.verify(answer(ch), "REGISTER", T0, lookup).status is AuthStatus.FAILED


def test_nonces_verifiable_by_another_instance() -> None:
    issuer = make_server()
    verifier = DigestServer(REALM, SECRET)
    assert verifier.verify(answer(issuer.challenge(T0)), "REGISTER", T0 + 5, lookup).ok


def test_nonces_are_unique() -> None:
    server = DigestServer(REALM, SECRET)
    assert len({server.challenge(T0).nonce for _ in range(100)}) == 100


def test_replayed_nc_rejected() -> None:
    server = make_server()
    ch = server.challenge(T0)
    first = answer(ch, nc=1)
    assert server.verify(first, "REGISTER", T0 + 1, lookup).ok
    replay = server.verify(first, "REGISTER", T0 + 2, lookup)
    assert replay.status is AuthStatus.STALE
    assert "replay" in replay.reason
    assert server.verify(answer(ch, nc=3), "REGISTER", T0 + 3, lookup).ok
    assert not server.verify(answer(ch, nc=2), "REGISTER", T0 + 4, lookup).ok  # went backwards
    assert server.verify(answer(ch, nc=4), "REGISTER", T0 + 5, lookup).ok


def test_failed_attempt_does_not_burn_nc() -> None:
    server = make_server()
    ch = server.challenge(T0)
    assert not server.verify(answer(ch, password="bad"), "REGISTER", T0, lookup).ok
    assert server.verify(answer(ch), "REGISTER", T0, lookup).ok


def test_nc_table_bounded_and_eviction_never_reopens_replay() -> None:
    server = make_server(max_tracked_nonces=3)
    used: list[Credentials] = []
    for i in range(5):
        creds = answer(server.challenge(T0 + i))
        assert server.verify(creds, "REGISTER", T0 + i, lookup).ok
        used.append(creds)
    assert server.tracked_nonces == 3
    # The evicted nonces' first answers must not become replayable.
    for creds in used:
        assert not server.verify(creds, "REGISTER", T0 + 6, lookup).ok
    # Fresh nonces keep working.
    assert server.verify(answer(server.challenge(T0 + 7)), "REGISTER", T0 + 7, lookup).ok


def test_nc_table_prunes_expired() -> None:
    server = make_server(nonce_lifetime=10.0)
    for i in range(5):
        assert server.verify(answer(server.challenge(T0 + i)), "REGISTER", T0 + i, lookup).ok
    assert server.tracked_nonces == 5
    assert server.verify(answer(server.challenge(T0 + 100)), "REGISTER", T0 + 100, lookup).ok
    assert server.tracked_nonces == 1


def test_qop_required_option_and_rfc2069_accepted_by_default() -> None:
    ch = make_server().challenge(T0)
    legacy = Challenge(realm=ch.realm, nonce=ch.nonce)  # no qop offered
    creds = answer(legacy)
    assert creds.qop is None
    assert make_server().verify(creds, "REGISTER", T0, lookup).ok
    strict = make_server(allow_no_qop=False)
    assert strict.verify(creds, "REGISTER", T0, lookup).status is AuthStatus.FAILED


def test_verify_auth_int_body() -> None:
    server = make_server()
    ch = server.challenge(T0)
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    creds = answer(Challenge(realm=ch.realm, nonce=ch.nonce, qop=("auth-int",)), method="INVITE", body=body)
    assert server.verify(creds, "INVITE", T0, lookup, body=b"tampered").status is AuthStatus.FAILED
    assert server.verify(creds, "INVITE", T0, lookup, body=body).ok


def test_verify_sess_algorithms() -> None:
    server = make_server()
    for algorithm in ("MD5-sess", "SHA-256-sess"):
        ch = server.challenge(T0, algorithm=algorithm)
        assert ch.algorithm == algorithm
        assert server.verify(answer(ch), "REGISTER", T0, lookup).ok


def test_verify_structural_problems() -> None:
    server = make_server()
    ch = server.challenge(T0)
    good = answer(ch)
    assert server.verify(replace(good, qop="auth-conf"), "REGISTER", T0, lookup).status is AuthStatus.MALFORMED
    assert server.verify(replace(good, nc=None), "REGISTER", T0, lookup).status is AuthStatus.MALFORMED
    assert server.verify(replace(good, nc="xyz"), "REGISTER", T0, lookup).status is AuthStatus.MALFORMED
    assert server.verify(replace(good, nc="00000000"), "REGISTER", T0, lookup).status is AuthStatus.MALFORMED
    assert server.verify(replace(good, algorithm="SHA-512"), "REGISTER", T0, lookup).status is AuthStatus.FAILED
    assert server.verify(replace(good, response="é" * 32), "REGISTER", T0, lookup).status is AuthStatus.FAILED
    assert server.verify(good, "REGISTER", T0, lookup).ok


def test_response_compared_case_insensitively() -> None:
    server = make_server()
    creds = answer(server.challenge(T0))
    assert server.verify(replace(creds, response=creds.response.upper()), "REGISTER", T0, lookup).ok


def test_precomputed_ha1_accounts() -> None:
    server = make_server()
    md5_only = {
        "carol": AccountSecret.from_ha1(md5=compute_ha1("carol", REALM, "pw", "MD5").upper()),
    }
    both = {
        "carol": AccountSecret.from_ha1(
            md5=compute_ha1("carol", REALM, "pw", "MD5"), sha256=compute_ha1("carol", REALM, "pw", "SHA-256")
        )
    }
    sha_ch, md5_ch = server.challenges(T0)
    sha_creds = answer(sha_ch, username="carol", password="pw")
    md5_creds = answer(md5_ch, username="carol", password="pw")
    assert server.verify(md5_creds, "REGISTER", T0, md5_only.get).ok
    assert server.verify(sha_creds, "REGISTER", T0, md5_only.get).status is AuthStatus.FAILED
    assert server.verify(sha_creds, "REGISTER", T0, both.get).ok


def test_server_argument_validation() -> None:
    with pytest.raises(ValueError):
        DigestServer(REALM, b"short")
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, nonce_lifetime=0)
    with pytest.raises(DigestError):
        DigestServer("bad\nrealm", SECRET)
    with pytest.raises(ValueError):
        make_server().challenge(float("nan"))
    with pytest.raises(DigestError):
        make_server().challenge(T0, algorithm="SHA-1")
