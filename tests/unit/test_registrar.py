"""Registrar bindings and REGISTER processing (RFC 3261 §10.3), sans-I/O with an explicit ``now``."""

from __future__ import annotations

import pytest

from callcenter.sip.message import Request, Response, parse_message
from callcenter.sip.registrar import Binding, BindingTable, RegisterOutcome, process_register

AOR = "sip:1001@cc.example.com"
SOURCE = ("UDP", "192.0.2.20", 5062)
C1 = "<sip:1001@192.0.2.20:5062>"
C2 = "<sip:1001@192.0.2.21:5062>"
C3 = "<sip:1001@192.0.2.22:5062>"


def register(
    contacts: list[str],
    *,
    expires: int | None = None,
    cseq: int = 1,
    call_id: str = "reg-1@192.0.2.20",
) -> Request:
    lines = [
        "REGISTER sip:cc.example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKr{cseq}",
        "Max-Forwards: 70",
        "From: <sip:1001@cc.example.com>;tag=ph1",
        "To: <sip:1001@cc.example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *[f"Contact: {c}" for c in contacts],
        "User-Agent: TestPhone/1.0",
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def run(
    table: BindingTable,
    request: Request,
    now: float = 1000.0,
    *,
    min_expires: int = 60,
    max_expires: int = 3600,
    default_expires: int = 600,
    max_bindings: int = 3,
) -> RegisterOutcome:
    return process_register(
        request,
        table,
        AOR,
        now,
        SOURCE,
        min_expires=min_expires,
        max_expires=max_expires,
        default_expires=default_expires,
        max_bindings=max_bindings,
        to_tag=lambda: "regtag",
    )


def listed(resp: Response) -> dict[str, str | None]:
    """Contact URI → expires parameter of a 200 to REGISTER."""
    wire = parse_message(bytes(resp))
    return {str(c.uri): c.params.get("expires") for c in wire.contacts}


def test_add_binding_and_200_lists_it() -> None:
    table = BindingTable()
    out = run(table, register([C1], expires=300))
    assert out.response.status == 200
    assert out.response.to.tag == "regtag"
    assert [b.contact for b in out.added] == ["sip:1001@192.0.2.20:5062"]
    assert out.removed == []
    b = out.added[0]
    assert b.expires_at == 1300.0 and b.cseq == 1 and b.source == SOURCE and b.user_agent == "TestPhone/1.0"
    assert listed(out.response) == {"sip:1001@192.0.2.20:5062": "300"}
    assert len(table) == 1
    assert [x.contact for x in table.lookup(AOR, 1000.0)] == ["sip:1001@192.0.2.20:5062"]


def test_default_expires_when_none_given() -> None:
    table = BindingTable()
    out = run(table, register([C1]), default_expires=600)
    assert listed(out.response) == {"sip:1001@192.0.2.20:5062": "600"}


def test_refresh_updates_expiry_and_cseq() -> None:
    table = BindingTable()
    run(table, register([C1], expires=300, cseq=1))
    out = run(table, register([C1], expires=900, cseq=2), now=1100.0)
    assert out.response.status == 200
    assert len(table) == 1
    (b,) = table.lookup(AOR, 1100.0)
    assert b.expires_at == 2000.0 and b.cseq == 2
    assert listed(out.response) == {"sip:1001@192.0.2.20:5062": "900"}


def test_remove_one_binding_with_expires_zero_param() -> None:
    table = BindingTable()
    run(table, register([C1, C2], expires=300, cseq=1))
    out = run(table, register([f"{C1};expires=0"], expires=300, cseq=2))
    assert out.response.status == 200
    assert [b.contact for b in out.removed] == ["sip:1001@192.0.2.20:5062"]
    assert listed(out.response) == {"sip:1001@192.0.2.21:5062": "300"}


def test_expiry() -> None:
    table = BindingTable()
    run(table, register([C1], expires=60))
    run(table, register([C2], expires=120, cseq=2))
    assert len(table.lookup(AOR, 1059.0)) == 2
    assert [b.contact for b in table.lookup(AOR, 1060.0)] == ["sip:1001@192.0.2.21:5062"]
    gone = table.expire(1120.0)
    assert [b.contact for b in gone] == ["sip:1001@192.0.2.21:5062"]
    assert len(table) == 0
    assert table.lookup(AOR, 1120.0) == []
    assert table.all_sources(1120.0) == set()


def test_expire_sweep_returns_expired_bindings() -> None:
    table = BindingTable()
    run(table, register([C1], expires=60))
    assert table.expire(1059.0) == []
    assert [b.contact for b in table.expire(1060.0)] == ["sip:1001@192.0.2.20:5062"]


def test_wildcard_with_expires_zero_removes_all() -> None:
    table = BindingTable()
    run(table, register([C1, C2], expires=300, cseq=1))
    out = run(table, register(["*"], expires=0, cseq=2))
    assert out.response.status == 200
    assert sorted(b.contact for b in out.removed) == ["sip:1001@192.0.2.20:5062", "sip:1001@192.0.2.21:5062"]
    assert listed(out.response) == {}
    assert len(table) == 0


@pytest.mark.parametrize("expires", [None, 300])
def test_wildcard_without_expires_zero_is_400(expires: int | None) -> None:
    table = BindingTable()
    run(table, register([C1], expires=300, cseq=1))
    out = run(table, register(["*"], expires=expires, cseq=2))
    assert out.response.status == 400
    assert len(table) == 1


def test_wildcard_with_other_contacts_is_400() -> None:
    table = BindingTable()
    out = run(table, register(["*", C1], expires=0))
    assert out.response.status == 400


def test_wildcard_out_of_order_cseq_is_500() -> None:
    table = BindingTable()
    run(table, register([C1], expires=300, cseq=5))
    out = run(table, register(["*"], expires=0, cseq=4))
    assert out.response.status == 500
    assert len(table) == 1


def test_contact_expires_param_wins_over_header() -> None:
    table = BindingTable()
    out = run(table, register([f"{C1};expires=120", C2], expires=300))
    assert listed(out.response) == {"sip:1001@192.0.2.20:5062": "120", "sip:1001@192.0.2.21:5062": "300"}


def test_interval_too_brief_is_423_with_min_expires() -> None:
    table = BindingTable()
    out = run(table, register([C1], expires=30), min_expires=60)
    assert out.response.status == 423
    assert out.response.headers.get("Min-Expires") == "60"
    assert len(table) == 0
    out = run(table, register([f"{C1};expires=10"], expires=3600), min_expires=60)
    assert out.response.status == 423


def test_423_leaves_the_table_untouched_even_after_a_valid_contact() -> None:
    """§10.3: updates are committed only if all of them succeed."""
    table = BindingTable()
    out = run(table, register([C1, f"{C2};expires=10"], expires=300), min_expires=60)
    assert out.response.status == 423
    assert len(table) == 0
    assert out.added == []


def test_max_expires_clamps() -> None:
    table = BindingTable()
    out = run(table, register([C1], expires=86400), max_expires=3600)
    assert out.response.status == 200
    assert listed(out.response) == {"sip:1001@192.0.2.20:5062": "3600"}
    assert out.added[0].expires_at == 1000.0 + 3600


def test_max_bindings_replaces_the_oldest() -> None:
    table = BindingTable()
    run(table, register([C1], expires=100, cseq=1), now=1000.0)
    run(table, register([C2], expires=300, cseq=2), now=1000.0)
    out = run(table, register([C3], expires=300, cseq=3), now=1010.0, max_bindings=2)
    assert out.response.status == 200
    assert [b.contact for b in out.removed] == ["sip:1001@192.0.2.20:5062"]
    assert set(listed(out.response)) == {"sip:1001@192.0.2.21:5062", "sip:1001@192.0.2.22:5062"}
    assert len(table) == 2


def test_refresh_does_not_count_against_max_bindings() -> None:
    table = BindingTable()
    run(table, register([C1, C2], expires=300, cseq=1))
    out = run(table, register([C1], expires=300, cseq=2), max_bindings=2)
    assert out.removed == []
    assert len(table) == 2


def test_same_call_id_lower_or_equal_cseq_is_500() -> None:
    table = BindingTable()
    run(table, register([C1], expires=300, cseq=5))
    for cseq in (5, 4):
        out = run(table, register([C1], expires=900, cseq=cseq))
        assert out.response.status == 500
    (b,) = table.lookup(AOR, 1000.0)
    assert b.expires_at == 1300.0


def test_other_call_id_may_use_any_cseq() -> None:
    table = BindingTable()
    run(table, register([C1], expires=300, cseq=5))
    out = run(table, register([C1], expires=900, cseq=1, call_id="reg-2@192.0.2.20"))
    assert out.response.status == 200
    (b,) = table.lookup(AOR, 1000.0)
    assert b.expires_at == 1900.0 and b.call_id == "reg-2@192.0.2.20"


def test_query_without_contact_lists_current_bindings_with_remaining_time() -> None:
    table = BindingTable()
    run(table, register([C1], expires=300, cseq=1), now=1000.0)
    run(table, register([C2], expires=600, cseq=2), now=1000.0)
    out = run(table, register([], cseq=3), now=1100.0)
    assert out.response.status == 200
    assert out.added == [] and out.removed == []
    assert listed(out.response) == {"sip:1001@192.0.2.21:5062": "500", "sip:1001@192.0.2.20:5062": "200"}
    # Ordered by expiry, latest first.
    assert [str(c.uri) for c in parse_message(bytes(out.response)).contacts][0] == "sip:1001@192.0.2.21:5062"


def test_non_sip_contact_is_400() -> None:
    table = BindingTable()
    out = run(table, register(["<tel:+8613800000000>"], expires=300))
    assert out.response.status == 400


@pytest.mark.parametrize("value", ["abc", "-5"])
def test_bad_expires_param_is_400(value: str) -> None:
    table = BindingTable()
    out = run(table, register([f"{C1};expires={value}"], expires=300))
    assert out.response.status == 400
    assert len(table) == 0


def test_binding_table_put_and_remove() -> None:
    table = BindingTable()
    b = Binding(aor=AOR, contact="sip:a@h", expires_at=2000.0, call_id="c", cseq=1, source=SOURCE)
    assert table.put(b) is None
    assert table.put(b) is b
    assert table.all_sources(1000.0) == {"192.0.2.20"}
    assert table.remove(AOR, "sip:other@h") == []
    assert table.remove(AOR) == [b]
    assert len(table) == 0
    assert b.remaining(1999.4) == 1
