"""SIP dialogs (RFC 3261 §12): identifiers, route sets, CSeq ordering and in-dialog requests.

Sans-I/O: a :class:`Dialog` is built from the INVITE/2xx that created it and then makes requests
(BYE, re-INVITE, INFO, OPTIONS, ACK) with the right Route set, tags and CSeq, and checks incoming
in-dialog requests for ordering.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum

from callcenter.sip.headers import Via
from callcenter.sip.message import Headers, Request, Response
from callcenter.sip.uri import NameAddr, SipUri, Uri, parse_name_addr


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_TRANSITIONS: dict[DialogState, frozenset[DialogState]] = {
    DialogState.EARLY: frozenset({DialogState.CONFIRMED, DialogState.TERMINATED}),
    DialogState.CONFIRMED: frozenset({DialogState.TERMINATED}),
    DialogState.TERMINATED: frozenset(),
}


class DialogError(Exception):
    """An impossible dialog transition or an out-of-order request."""


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_party: NameAddr  # our From in requests we send
    remote_party: NameAddr  # our To in requests we send
    remote_target: Uri
    local_contact: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None
    state: DialogState = DialogState.EARLY
    is_uac: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uas(cls, request: Request, response: Response, local_contact: str) -> Dialog:
        """The dialog we hold as UAS after sending ``response`` (1xx with tag or 2xx) to ``request``."""
        to = parse_name_addr(response.headers.get("To") or "")
        target = request.contacts[0].uri if request.contacts else request.from_.uri
        return cls(
            call_id=request.call_id,
            local_tag=to.tag or "",
            remote_tag=request.from_.tag or "",
            local_party=to,
            remote_party=request.from_,
            remote_target=target,
            local_contact=local_contact,
            route_set=list(request.headers.get_all("Record-Route")),
            local_cseq=0,
            remote_cseq=request.cseq.number,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            is_uac=False,
        )

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog we hold as UAC after receiving ``response`` (with a To tag) to our ``request``."""
        target = response.contacts[0].uri if response.contacts else request.uri
        assert target is not None
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_party=request.from_,
            remote_party=response.to,
            remote_target=target,
            local_contact=request.headers.get("Contact") or "",
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_cseq=request.cseq.number,
            remote_cseq=None,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            is_uac=True,
        )

    def transition(self, new: DialogState) -> None:
        if new == self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise DialogError(f"dialog {self.call_id}: impossible transition {self.state.value} -> {new.value}")
        self.state = new

    def accept_remote_cseq(self, request: Request) -> bool:
        """RFC 3261 §12.2.2: a lower CSeq than the last one is out of order (answer 500).

        Retransmissions never get here (the transaction layer absorbs them), so an equal CSeq is a new
        request from a sloppy peer and is accepted, as the RFC only forbids lower ones."""
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def next_hop(self) -> Uri:
        """Where an in-dialog request goes first: the first loose route, else the remote target."""
        if self.route_set:
            first = parse_name_addr(self.route_set[0]).uri
            if isinstance(first, SipUri) and "lr" in first.params:
                return first
            # Strict router (RFC 3261 §12.2.1.1): Request-URI is the first route.
            return first
        return self.remote_target

    def create_request(
        self,
        method: str,
        via: Via,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Request:
        """A new in-dialog request (§12.2.1.1). ACK reuses the INVITE's CSeq via ``cseq``."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri: Uri = self.remote_target
        routes = list(self.route_set)
        if routes:
            first = parse_name_addr(routes[0]).uri
            if not (isinstance(first, SipUri) and "lr" in first.params):
                uri = first
                routes = routes[1:] + [f"<{self.remote_target}>"]
        headers = Headers()
        headers.add("Via", str(via))
        headers.add("Max-Forwards", "70")
        for route in routes:
            headers.add("Route", route)
        headers.add("From", str(self.local_party))
        headers.add("To", str(self.remote_party))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER") or (method == "ACK" and self.local_contact):
            headers.add("Contact", self.local_contact)
        for name, value in extra or []:
            headers.add(name, value)
        if content_type and body:
            headers.add("Content-Type", content_type)
        return Request(method=method, uri=uri, headers=headers, body=body)

    def update_target(self, request_or_response: Request | Response) -> None:
        """A target-refresh request or its 2xx may change the remote target (§12.2)."""
        contacts = request_or_response.contacts
        if contacts and not contacts[0].wildcard:
            self.remote_target = contacts[0].uri
