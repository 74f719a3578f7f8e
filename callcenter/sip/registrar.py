"""Registrar bindings (RFC 3261 §10.3), sans-I/O: the caller passes ``now``.

:func:`process_register` turns an authenticated REGISTER into binding changes and the response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callcenter.sip.message import Request, Response, response_for
from callcenter.sip.uri import SipUri


@dataclass(slots=True)
class Binding:
    aor: str
    contact: str  # the contact URI as registered
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, str, int]  # (transport, host, port) the REGISTER came from (for NAT'd devices)
    user_agent: str = ""

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class BindingTable:
    """Contacts per address-of-record, with expiry."""

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}

    def lookup(self, aor: str, now: float) -> list[Binding]:
        bindings = self._by_aor.get(aor)
        if not bindings:
            return []
        live = [b for b in bindings.values() if b.expires_at > now]
        if len(live) != len(bindings):
            for b in list(bindings.values()):
                if b.expires_at <= now:
                    del bindings[b.contact]
            if not bindings:
                del self._by_aor[aor]
        return sorted(live, key=lambda b: -b.expires_at)

    def all_sources(self, now: float) -> set[str]:
        """Hosts of live bindings (exempt from flood limits)."""
        return {b.source[1] for bs in self._by_aor.values() for b in bs.values() if b.expires_at > now}

    def put(self, binding: Binding) -> Binding | None:
        previous = self._by_aor.setdefault(binding.aor, {}).get(binding.contact)
        self._by_aor[binding.aor][binding.contact] = binding
        return previous

    def remove(self, aor: str, contact: str | None = None) -> list[Binding]:
        bindings = self._by_aor.get(aor, {})
        if contact is None:
            removed = list(bindings.values())
            self._by_aor.pop(aor, None)
            return removed
        b = bindings.pop(contact, None)
        if not bindings:
            self._by_aor.pop(aor, None)
        return [b] if b else []

    def expire(self, now: float) -> list[Binding]:
        gone: list[Binding] = []
        for aor in list(self._by_aor):
            for b in list(self._by_aor[aor].values()):
                if b.expires_at <= now:
                    gone.extend(self.remove(aor, b.contact))
        return gone

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_aor.values())


@dataclass(slots=True)
class RegisterOutcome:
    response: Response
    added: list[Binding]
    removed: list[Binding]


def process_register(
    request: Request,
    table: BindingTable,
    aor: str,
    now: float,
    source: tuple[str, str, int],
    *,
    min_expires: int,
    max_expires: int,
    default_expires: int,
    max_bindings: int,
    to_tag: Callable[[], str],
) -> RegisterOutcome:
    """Apply a REGISTER for ``aor`` (already authenticated and authorised) and build the response."""
    header_expires = request.headers.get("Expires")
    default = int(header_expires) if header_expires is not None else default_expires
    contacts = request.contacts
    added: list[Binding] = []
    removed: list[Binding] = []
    call_id, cseq = request.call_id, request.cseq.number
    if any(c.wildcard for c in contacts):
        if len(contacts) != 1 or default != 0:
            return RegisterOutcome(response_for(request, 400, "Bad Request (Contact: * needs Expires: 0)"), [], [])
        for b in table.lookup(aor, now):
            if b.call_id == call_id and cseq <= b.cseq:
                return RegisterOutcome(response_for(request, 500, "Server Internal Error (CSeq out of order)"), [], [])
        removed = table.remove(aor)
        contacts = []
    existing = {b.contact: b for b in table.lookup(aor, now)}
    # Validate every contact before changing anything: the update is atomic (§10.3 step 8).
    changes: list[tuple[str, int]] = []
    for c in contacts:
        if not isinstance(c.uri, SipUri):
            return RegisterOutcome(response_for(request, 400, "Bad Request (Contact must be a sip URI)"), [], [])
        text = c.params.get("expires")
        if text is not None and not (text.isascii() and text.isdigit() and len(text) <= 10):
            return RegisterOutcome(response_for(request, 400, "Bad Request (bad expires parameter)"), [], [])
        expires = int(text) if text is not None else default
        if 0 < expires < min_expires:
            resp = response_for(request, 423, to_tag=to_tag())
            resp.headers.add("Min-Expires", str(min_expires))
            return RegisterOutcome(resp, [], [])
        key = str(c.uri)
        old = existing.get(key)
        if old is not None and old.call_id == call_id and cseq <= old.cseq:
            return RegisterOutcome(response_for(request, 500, "Server Internal Error (CSeq out of order)"), [], [])
        changes.append((key, min(expires, max_expires)))
    for key, expires in changes:
        old = existing.get(key)
        if expires == 0:
            removed.extend(table.remove(aor, key))
            existing.pop(key, None)
            continue
        if old is None and len(existing) >= max_bindings:
            # Replace the oldest binding rather than refusing a phone that rebooted with a new port.
            oldest = min(existing.values(), key=lambda b: b.expires_at)
            removed.extend(table.remove(aor, oldest.contact))
            existing.pop(oldest.contact, None)
        binding = Binding(
            aor=aor,
            contact=key,
            expires_at=now + expires,
            call_id=call_id,
            cseq=cseq,
            source=source,
            user_agent=request.headers.get("User-Agent") or "",
        )
        table.put(binding)
        existing[key] = binding
        added.append(binding)
    resp = response_for(request, 200, to_tag=to_tag())
    for b in table.lookup(aor, now):
        resp.headers.add("Contact", f"<{b.contact}>;expires={b.remaining(now)}")
    return RegisterOutcome(resp, added, removed)
