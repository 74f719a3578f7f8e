"""The user-agent core: every request the transaction layer hands up lands here first.

It authenticates (trunks by address, devices by digest or by their live registration), runs the
registrar, answers OPTIONS, and hands INVITE/ACK/BYE/CANCEL/INFO to the inbound and outbound call
handlers. It owns the call table and tells observers (CDR writer, bus) about call life cycles.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from callcenter.calls.model import Call, EndReason
from callcenter.calls.trunks import TrunkSet
from callcenter.net.flood import FloodGuard
from callcenter.sip.clock import Clock
from callcenter.sip.dialog import new_tag
from callcenter.sip.digest_server import AccountSecret, AuthStatus, DigestServer
from callcenter.sip.headers import Via
from callcenter.sip.message import Request, Response, response_for
from callcenter.sip.registrar import BindingTable, process_register
from callcenter.sip.transaction import ServerTransaction, TransactionLayer, new_branch
from callcenter.sip.uri import SipUri, parse_uri

log = structlog.get_logger("callcenter.sip")

Address = tuple[str, str, int]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER"


class CallObserver(Protocol):
    def call_started(self, call: Call) -> None: ...
    def call_answered(self, call: Call) -> None: ...
    def call_ended(self, call: Call) -> None: ...
    def registration_changed(self, aor: str, contact: str, expires: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    secret: AccountSecret
    kind: str  # "phone" | "terminal"
    display_name: str | None
    max_bindings: int
    contact: str | None = None  # a phone at a fixed address that does not register (sip:1001@10.0.0.5:5060)


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 600


class UserAgentCore:
    def __init__(
        self,
        clock: Clock,
        send: Callable[[bytes, Address], None],
        *,
        domain: str,
        realm: str,
        accounts: list[Account],
        trunks: TrunkSet,
        flood: FloodGuard,
        local_addresses: dict[str, tuple[str, int]],
        user_agent: str = "callcenter",
        authenticate_unknown: bool = True,
        trust_registered_source: bool = True,
        registration: RegistrationPolicy | None = None,
        nonce_lifetime: float = 300.0,
        secret: bytes | None = None,
        digest_algorithms: tuple[str, ...] = ("MD5", "SHA-256"),
    ) -> None:
        self.clock = clock
        self.send = send
        self.domain = domain
        self.accounts = {a.username: a for a in accounts}
        self.trunks = trunks
        self.flood = flood
        self.local_addresses = local_addresses
        self.user_agent = user_agent
        self.authenticate_unknown = authenticate_unknown
        self.trust_registered_source = trust_registered_source
        self.registration = registration or RegistrationPolicy()
        self.digest_algorithms = digest_algorithms
        self.digest = DigestServer(realm, secret or secrets.token_bytes(32), nonce_lifetime)
        self.bindings = BindingTable()
        self.txl = TransactionLayer(
            clock, send, on_request=self.on_request, on_stray_response=self.on_stray_response
        )
        self.calls: dict[str, Call] = {}
        self.observers: list[CallObserver] = []
        self.accepting = True
        self.counters: dict[str, int] = {
            "auth_challenges": 0,
            "auth_failures": 0,
            "registrations": 0,
            "rejected_shutdown": 0,
            "trunk_seized": 0,
        }
        # Set by the composition root: the call handlers.
        from callcenter.calls.inbound import InboundCalls
        from callcenter.calls.outbound import OutboundCalls

        self.inbound = InboundCalls(self)
        self.outbound = OutboundCalls(self)
        for host in trunks.hosts():
            flood.add_exempt(host)
        self._expiry_timer = clock.callLater(30, self._expire_bindings)

    # -- entry points from the transport ------------------------------------------------------------
    def receive(self, msg: Request | Response, source: Address) -> None:
        self.txl.receive(msg, source)

    def on_request(self, request: Request, stx: ServerTransaction | None, source: Address) -> None:
        method = request.method
        if method == "ACK":
            self._route_in_dialog(request, stx, source)
            return
        assert stx is not None
        if request.to.tag:
            self._route_in_dialog(request, stx, source)
        elif method == "INVITE":
            self.inbound.on_invite(request, stx, source)
        elif method == "REGISTER":
            self._on_register(request, stx, source)
        elif method == "OPTIONS":
            resp = self.response(request, 200)
            resp.headers.add("Allow", ALLOW)
            resp.headers.add("Accept", "application/sdp")
            stx.respond(resp)
        elif method in ("BYE", "INFO"):
            stx.respond(self.response(request, 481))
        else:
            resp = self.response(request, 405 if method in ("MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER") else 501)
            resp.headers.add("Allow", ALLOW)
            stx.respond(resp)

    def on_stray_response(self, response: Response, source: Address) -> None:
        self.outbound.on_stray_response(response, source)

    def _route_in_dialog(self, request: Request, stx: ServerTransaction | None, source: Address) -> None:
        call = self.calls.get(request.call_id)
        if call is None:
            if stx is not None:
                stx.respond(self.response(request, 481))
            return
        if call.direction == "inbound":
            self.inbound.on_in_dialog(call, request, stx, source)
        else:
            self.outbound.on_in_dialog(call, request, stx, source)

    # -- helpers for the call handlers ------------------------------------------------------------
    def response(self, request: Request, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
        resp = response_for(request, status, reason, to_tag=to_tag)
        resp.headers.add("Server", self.user_agent)
        return resp

    def local(self, transport: str) -> tuple[str, int]:
        return self.local_addresses.get(transport) or next(iter(self.local_addresses.values()))

    def new_via(self, transport: str) -> Via:
        host, port = self.local(transport)
        host = f"[{host}]" if ":" in host else host
        return Via(transport=transport, host=host, port=port, params={"branch": new_branch(), "rport": None})

    def contact(self, user: str, transport: str) -> str:
        host, port = self.local(transport)
        host = f"[{host}]" if ":" in host else host
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:{user}@{host}:{port}{suffix}>"

    def is_trusted_source(self, source: Address) -> bool:
        return self.trunks.by_source(source[1]) is not None

    def registered_account(self, source: Address) -> str | None:
        """The account whose live registration came from exactly this address, if any."""
        if not self.trust_registered_source:
            return None
        now = self.clock.seconds()
        for username in self.accounts:
            for b in self.bindings.lookup(f"sip:{username}@{self.domain}", now):
                if b.source[1:] == source[1:]:
                    return username
        return None

    def authenticate(self, request: Request, stx: ServerTransaction) -> str | None:
        """Digest-check ``request``; on failure answer it (401/403/400) and return None."""
        now = self.clock.seconds()
        header = request.headers.get("Authorization") or request.headers.get("Proxy-Authorization")
        if header is None:
            self._challenge(request, stx, stale=False)
            return None
        result = self.digest.verify_header(header, request.method, now, self._secret_for, body=request.body)
        if result.status is AuthStatus.OK:
            return result.username
        if result.status is AuthStatus.STALE:
            self._challenge(request, stx, stale=True)
            return None
        self.counters["auth_failures"] += 1
        log.warning(
            "sip.auth.failed",
            call_id=request.call_id,
            method=request.method,
            reason=result.reason,
            source=request.top_via.params.get("received") or request.top_via.host,
        )
        if result.status is AuthStatus.MALFORMED:
            stx.respond(self.response(request, 400, "Bad Request (malformed Authorization)"))
        else:
            stx.respond(self.response(request, 403, "Forbidden (bad credentials)", to_tag=new_tag()))
        return None

    def _secret_for(self, username: str) -> AccountSecret | None:
        account = self.accounts.get(username)
        return account.secret if account else None

    def _challenge(self, request: Request, stx: ServerTransaction, stale: bool) -> None:
        self.counters["auth_challenges"] += 1
        resp = self.response(request, 401, to_tag=new_tag())
        for challenge in self.digest.challenges(self.clock.seconds(), stale=stale, algorithms=self.digest_algorithms):
            resp.headers.add("WWW-Authenticate", challenge.to_header())
        stx.respond(resp)

    # -- registrar ------------------------------------------------------------------------------------
    def _on_register(self, request: Request, stx: ServerTransaction, source: Address) -> None:
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri) or to_uri.user is None:
            stx.respond(self.response(request, 404, "Not Found (To must name an account)"))
            return
        username = to_uri.user_unescaped or ""
        account = self.accounts.get(username)
        if account is None:
            # Challenge anyway: do not reveal which accounts exist.
            if request.headers.get("Authorization") is None:
                self._challenge(request, stx, stale=False)
            else:
                self.counters["auth_failures"] += 1
                stx.respond(self.response(request, 403, "Forbidden (bad credentials)", to_tag=new_tag()))
            return
        authed = self.authenticate(request, stx)
        if authed is None:
            return
        if authed != username:
            stx.respond(self.response(request, 403, "Forbidden (credentials are for another account)"))
            return
        aor = f"sip:{username}@{self.domain}"
        now = self.clock.seconds()
        policy = self.registration
        outcome = process_register(
            request,
            self.bindings,
            aor,
            now,
            source,
            min_expires=policy.min_expires,
            max_expires=policy.max_expires,
            default_expires=policy.default_expires,
            max_bindings=account.max_bindings,
            to_tag=new_tag,
        )
        outcome.response.headers.add("Server", self.user_agent)
        stx.respond(outcome.response)
        for b in outcome.added:
            self.counters["registrations"] += 1
            self.flood.add_exempt(b.source[1])
            log.info("sip.registration.added", aor=aor, contact=b.contact, expires=b.remaining(now))
            self._notify("registration_changed", aor, b.contact, b.remaining(now))
        for b in outcome.removed:
            log.info("sip.registration.removed", aor=aor, contact=b.contact)
            self._notify("registration_changed", aor, b.contact, 0)
            self._refresh_exemption(b.source[1])

    def _refresh_exemption(self, host: str) -> None:
        if host not in self.bindings.all_sources(self.clock.seconds()) and host not in self.trunks.hosts():
            self.flood.remove_exempt(host)

    def _expire_bindings(self) -> None:
        for b in self.bindings.expire(self.clock.seconds()):
            log.info("sip.registration.expired", aor=b.aor, contact=b.contact)
            self._notify("registration_changed", b.aor, b.contact, 0)
            self._refresh_exemption(b.source[1])
        self._expiry_timer = self.clock.callLater(30, self._expire_bindings)

    def trunk_seize_victim(self, trunk: Any) -> Call | None:
        """The call an emergency would take the channel of: the newest outbound non-emergency call (a
        callback, a campaign call), never one helping an emergency caller."""
        # a transfer or third party of an emergency caller (family, care station) is help for that emergency
        helping = {id(p) for c in self.calls.values() if c.emergency for p in [c.linked, *c.parties] if p is not None}
        victims = [c for c in (self.calls.get(cid) for cid in trunk.active_calls)
                   if c is not None and c.direction == "outbound" and not c.emergency and c.active
                   and id(c) not in helping and not (c.linked is not None and c.linked.emergency)]
        return max(victims, key=lambda c: c.started_at) if victims else None

    def seize_trunk_channel(self, trunk: Any, for_call: str) -> bool:
        """Line seize on a trunk: an emergency needs a channel and every one is taken, so the newest outbound
        non-emergency call is ended and its channel handed over now."""
        victim = self.trunk_seize_victim(trunk)
        if victim is None:
            return False
        trunk.active_calls.discard(victim.call_id)
        self.counters["trunk_seized"] += 1
        log.warning("trunk.channel.seized", call_id=victim.call_id, trunk=trunk.name, for_call=for_call,
                    number=victim.dialled)
        self.outbound.hangup(victim, EndReason.LOCAL_BYE)
        return True

    def lookup_contacts(self, username: str) -> list[tuple[str, Address]]:
        """Where to reach a registered phone or terminal: (contact URI, signalling address)."""
        now = self.clock.seconds()
        found = [(b.contact, b.source) for b in self.bindings.lookup(f"sip:{username}@{self.domain}", now)]
        account = self.accounts.get(username)
        if not found and account is not None and account.contact is not None:
            uri = parse_uri(account.contact)
            if isinstance(uri, SipUri):
                transport = uri.params.get("transport", "udp") or "udp"
                found = [(account.contact, (transport.upper(), uri.bare_host, uri.default_port()))]
        return found

    # -- observers -------------------------------------------------------------------------------------
    def _notify(self, event: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.exception("calls.observer_failed", observer_event=event)

    def call_started(self, call: Call) -> None:
        self.calls[call.call_id] = call
        self._notify("call_started", call)

    def call_answered(self, call: Call) -> None:
        self._notify("call_answered", call)

    def call_ended(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        self.trunks.release(call.call_id)
        self._notify("call_ended", call)

    # -- life cycle -------------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        self.accepting = False

    def hangup_all(self, reason: Any) -> None:
        for call in list(self.calls.values()):
            if call.direction == "inbound":
                self.inbound.hangup(call, reason)
            else:
                self.outbound.hangup(call, reason)

    def close(self) -> None:
        if self._expiry_timer.active():
            self._expiry_timer.cancel()
        self.txl.close()
