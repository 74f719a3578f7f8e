"""Keeps trunks that need it registered with their carrier (REGISTER as a client, digest auth).

Re-registers before expiry (at 80 % of the granted time, at least 5 s before), retries failures
with a capped backoff, and tells the log (and the bus) when a trunk goes up or down.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import structlog

from callcenter.calls.trunks import Trunk
from callcenter.sip.dialog import new_call_id, new_tag
from callcenter.sip.digest import DigestError, authorization_for, challenge_header
from callcenter.sip.message import Headers, Request, Response
from callcenter.sip.uri import SipUri

log = structlog.get_logger("callcenter.trunks")

RETRY_MIN = 5.0
RETRY_MAX = 300.0


class TrunkRegistration:
    def __init__(self, ua: Any, trunk: Trunk, on_state: Callable[[Trunk, bool], None] | None = None) -> None:
        self.ua = ua
        self.trunk = trunk
        self.on_state = on_state
        host = ua.local(trunk.transport)[0]
        self.call_id = new_call_id(host if ":" not in host else "callcenter")
        self.tag = new_tag()
        self.cseq = 0
        self.retry = RETRY_MIN
        self.timer: Any = None
        self.stopped = False
        self.granted: int | None = None

    def start(self) -> None:
        self._send(auth=None)

    def stop(self, unregister: bool = True) -> None:
        """Cancel refreshes; optionally remove the binding at the carrier (Expires: 0)."""
        self.stopped = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if unregister and self.trunk.registered:
            self._send(auth=None, expires=0)

    def _request(self, expires: int, auth: tuple[str, str] | None) -> Request:
        t = self.trunk
        self.cseq += 1
        user = t.username or "callcenter"
        registrar = SipUri(host=t.host, port=t.port)
        if t.transport == "TCP":
            registrar.params["transport"] = "tcp"
        aor = f"<sip:{user}@{t.host}>"
        h = Headers()
        h.add("Via", str(self.ua.new_via(t.transport)))
        h.add("Max-Forwards", "70")
        h.add("From", f"{aor};tag={self.tag}")
        h.add("To", aor)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", self.ua.contact(user, t.transport))
        h.add("Expires", str(expires))
        h.add("User-Agent", self.ua.user_agent)
        if auth is not None:
            h.add(auth[0], auth[1])
        return Request(method="REGISTER", uri=registrar, headers=h)

    def _send(self, auth: tuple[str, str] | None, expires: int | None = None) -> None:
        wanted = self.trunk.register_expires if expires is None else expires
        request = self._request(wanted, auth)
        self.ua.txl.send_request(
            request,
            self.trunk.address,
            on_response=lambda resp: self._on_response(request, resp, wanted, retried=auth is not None),
            on_timeout=lambda: self._failed("timeout"),
        )

    def _on_response(self, request: Request, resp: Response, wanted: int, *, retried: bool) -> None:
        if resp.status < 200:
            return
        t = self.trunk
        if resp.status in (401, 407) and not retried and t.username and t.password:
            try:
                auth = authorization_for(
                    resp.status,
                    resp.headers.get_all(challenge_header(resp.status)),
                    method="REGISTER",
                    uri=str(request.uri),
                    username=t.username,
                    password=t.password,
                    cnonce=secrets.token_hex(8),
                )
            except DigestError as exc:
                self._failed(f"cannot answer challenge: {exc}")
                return
            self._send(auth=auth, expires=wanted)
            return
        if 200 <= resp.status < 300:
            if wanted == 0:
                self._set_state(False)
                return
            self.granted = self._granted_expires(resp, wanted)
            self.retry = RETRY_MIN
            self._set_state(True)
            refresh = max(1.0, min(self.granted * 0.8, self.granted - 5.0))
            self._schedule(refresh)
            return
        if resp.status == 423:
            minimum = resp.headers.get("Min-Expires")
            # Retry once with the carrier's minimum; a carrier that keeps answering 423 is a failure (backoff).
            if minimum and minimum.isdigit() and int(minimum) > self.trunk.register_expires:
                self.trunk.register_expires = int(minimum)
                self._send(auth=None)
                return
        self._failed(f"{resp.status} {resp.reason}")

    def _granted_expires(self, resp: Response, wanted: int) -> int:
        for contact in resp.contacts:
            expires = contact.params.get("expires")
            if expires and expires.isdigit() and isinstance(contact.uri, SipUri):
                host, port = self.ua.local(self.trunk.transport)
                if contact.uri.bare_host == host and (contact.uri.port or 5060) == port:
                    return int(expires)
        header = resp.headers.get("Expires")
        return int(header) if header and header.isdigit() else wanted

    def _failed(self, why: str) -> None:
        log.warning("trunk.register.failed", trunk=self.trunk.name, reason=why, retry_in=self.retry)
        self._set_state(False)
        self._schedule(self.retry)
        self.retry = min(self.retry * 2, RETRY_MAX)

    def _schedule(self, delay: float) -> None:
        if self.stopped:
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.ua.clock.callLater(delay, self._send, None)

    def _set_state(self, up: bool) -> None:
        if self.trunk.registered != up:
            self.trunk.registered = up
            log.info("trunk.register.state", trunk=self.trunk.name, registered=up, expires=self.granted)
            if self.on_state is not None:
                self.on_state(self.trunk, up)
