"""SIP/SIPS/tel URIs and name-addr values (RFC 3261 §19.1, §25.1; RFC 3966).

Pure data and parsing: no I/O. ``SipUri.parse("sip:alice@[::1]:5060;transport=tcp")``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from callcenter.sip.errors import UriError

_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
# Characters allowed (unescaped) in the user part: unreserved / escaped / user-unreserved.
_USER_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSWORD_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
_PARAM_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
_HEADER_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*$")
_GEN_VALUE_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~:\[\]]+$")
_TEL_RE = re.compile(r"^(?:\+[0-9\-.()]*[0-9][0-9\-.()]*|[0-9A-Fa-f*#\-.()pw]+)$")
_LWS_RE = re.compile(r"[ \t\r\n]")


def _check_port(text: str, source: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise UriError(f"bad port {text!r} in URI {source!r}")
    return int(text)


def _check_host(host: str, source: str) -> str:
    if host.startswith("["):
        if not host.endswith("]"):
            raise UriError(f"unterminated IPv6 reference in URI {source!r}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UriError(f"bad IPv6 address {host!r} in URI {source!r}") from None
        return host
    if not host or not _HOST_RE.match(host):
        raise UriError(f"bad host {host!r} in URI {source!r}")
    return host


def _parse_params(text: str, source: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item:
            raise UriError(f"empty parameter in URI {source!r}")
        name, eq, value = item.partition("=")
        if not _PARAM_RE.match(name) or (eq and not _PARAM_RE.match(value)):
            raise UriError(f"bad parameter {item!r} in URI {source!r}")
        params[name.lower()] = value if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI. ``host`` keeps IPv6 brackets; ``user`` is kept escaped as received."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        source = text
        if _LWS_RE.search(text):
            raise UriError(f"whitespace inside URI {source!r}")
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise UriError(f"not a sip or sips URI: {source!r}")
        headers: dict[str, str] = {}
        if "?" in rest:
            # '?' may appear in the user part, so only a '?' after the host starts the headers.
            at = rest.find("@")
            qpos = rest.find("?", at + 1 if at >= 0 else 0)
            if qpos >= 0:
                rest, htext = rest[:qpos], rest[qpos + 1 :]
                for item in htext.split("&"):
                    hname, eq, hvalue = item.partition("=")
                    if not hname or not eq or not _HEADER_RE.match(hname) or not _HEADER_RE.match(hvalue):
                        raise UriError(f"bad header {item!r} in URI {source!r}")
                    headers[unquote(hname)] = unquote(hvalue)
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            if "@" in userinfo:
                raise UriError(f"unescaped '@' in user part of URI {source!r}")
            user, pcolon, pw = userinfo.partition(":")
            if not user or not _USER_RE.match(user):
                raise UriError(f"bad user part {user!r} in URI {source!r}")
            if pcolon:
                if not _PASSWORD_RE.match(pw):
                    raise UriError(f"bad password in URI {source!r}")
                password = pw
        hostport, semi, ptext = rest.partition(";")
        params = _parse_params(ptext, source) if semi else {}
        port: int | None = None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise UriError(f"unterminated IPv6 reference in URI {source!r}")
            host, tail = hostport[: end + 1], hostport[end + 1 :]
            if tail:
                if not tail.startswith(":"):
                    raise UriError(f"junk after IPv6 host in URI {source!r}")
                port = _check_port(tail[1:], source)
        else:
            host, pc, ptxt = hostport.partition(":")
            if pc:
                port = _check_port(ptxt, source)
        return cls(
            host=_check_host(host, source).lower(),
            user=user,
            port=port,
            scheme=scheme,
            password=password,
            params=params,
            headers=headers,
        )

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(_format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def user_unescaped(self) -> str | None:
        return unquote(self.user) if self.user is not None else None

    @property
    def bare_host(self) -> str:
        """Host without IPv6 brackets, usable as a socket address."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        return (t or ("tls" if self.scheme == "sips" else "udp")).lower()

    def default_port(self) -> int:
        return self.port if self.port is not None else (5061 if self.scheme == "sips" else 5060)

    def address_of_record(self) -> str:
        """``sip:user@host`` without port or parameters: the key used by the registrar."""
        user = f"{self.user_unescaped}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host}"


@dataclass(slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966): global (+86...) or local number with parameters."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)
    scheme: str = "tel"

    @classmethod
    def parse(cls, text: str) -> TelUri:
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() != "tel":
            raise UriError(f"not a tel URI: {text!r}")
        number, semi, ptext = rest.partition(";")
        if not _TEL_RE.match(number):
            raise UriError(f"bad telephone number {number!r} in URI {text!r}")
        return cls(number=number, params=_parse_params(ptext, text) if semi else {})

    def __str__(self) -> str:
        return f"tel:{self.number}{_format_params(self.params)}"

    @property
    def digits(self) -> str:
        return "".join(ch for ch in self.number if ch.isdigit() or ch in "+*#")


@dataclass(slots=True)
class AbsoluteUri:
    """Any other URI scheme (``mailto:``, ``urn:``…): kept verbatim."""

    text: str

    @property
    def scheme(self) -> str:
        return self.text.partition(":")[0].lower()

    def __str__(self) -> str:
        return self.text


Uri = SipUri | TelUri | AbsoluteUri
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:")


def parse_uri(text: str) -> Uri:
    """Parse any URI; sip/sips/tel get structure, other schemes are kept verbatim."""
    m = _SCHEME_RE.match(text)
    if not m:
        raise UriError(f"not a URI: {text!r}")
    scheme = m.group(0)[:-1].lower()
    if scheme in ("sip", "sips"):
        return SipUri.parse(text)
    if scheme == "tel":
        return TelUri.parse(text)
    if _LWS_RE.search(text) or "<" in text or ">" in text:
        raise UriError(f"bad characters in URI {text!r}")
    return AbsoluteUri(text)


def _quote_display(name: str) -> str:
    if _TOKEN_RE.match(name.replace(" ", "")) and name.strip() == name and "  " not in name:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class NameAddr:
    """``"Display" <uri>;tag=x`` as in From, To, Contact, Route, Record-Route."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    wildcard: bool = False  # Contact: *

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        dn = f"{_quote_display(self.display_name)} " if self.display_name else ""
        return f"{dn}<{self.uri}>{_format_header_params(self.params)}"


def _format_header_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def parse_header_params(text: str, source: str) -> dict[str, str | None]:
    """Parse ``;a=b;c;d="quoted"`` (leading ';' optional) keeping quotes on quoted values."""
    params: dict[str, str | None] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ";":
            i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            raise UriError(f"empty parameter in {source!r}")
        j = i
        while j < n and text[j] not in "=; \t":
            j += 1
        name = text[i:j]
        if not name or not _TOKEN_RE.match(name):
            raise UriError(f"bad parameter name {name!r} in {source!r}")
        while j < n and text[j] in " \t":
            j += 1
        value: str | None = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] == '"':
                k = j + 1
                while k < n and text[k] != '"':
                    k += 2 if text[k] == "\\" else 1
                if k >= n:
                    raise UriError(f"unterminated quoted string in {source!r}")
                value = text[j : k + 1]
                j = k + 1
            else:
                k = j
                while k < n and text[k] not in "; \t":
                    k += 1
                value = text[j:k]
                if not _GEN_VALUE_RE.match(value):
                    raise UriError(f"bad value for parameter {name!r} in {source!r}")
                j = k
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] != ";":
            raise UriError(f"junk {text[j:]!r} after parameter {name!r} in {source!r}")
        params[name.lower()] = value
        i = j
    return params


def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20, §20.39)."""
    source = text
    text = text.strip()
    if text == "*":
        return NameAddr(uri=AbsoluteUri("*"), wildcard=True)
    display: str | None = None
    if text.startswith('"'):
        i = 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise UriError(f"unterminated quoted display name in {source!r}")
        display = re.sub(r"\\(.)", r"\1", text[1:i])
        text = text[i + 1 :].lstrip()
        if not text.startswith("<"):
            raise UriError(f"display name without <URI> in {source!r}")
    lt = text.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            candidate = text[:lt].strip()
            if not all(_TOKEN_RE.match(w) for w in candidate.split()):
                raise UriError(f"display name {candidate!r} must be quoted in {source!r}")
            display = candidate or None
        gt = text.find(">", lt)
        if gt < 0:
            raise UriError(f"missing '>' in {source!r}")
        uri = parse_uri(text[lt + 1 : gt])
        rest = text[gt + 1 :]
    else:
        # addr-spec: URI parameters would be ambiguous, so everything after ';' is a header parameter
        # and the URI must not contain '?' headers or commas (RFC 3261 §20).
        uri_text, semi, ptext = text.partition(";")
        uri_text = uri_text.strip()
        if "?" in uri_text or "," in uri_text or " " in uri_text:
            raise UriError(f"URI with headers or spaces must be enclosed in <> in {source!r}")
        uri = parse_uri(uri_text)
        rest = semi + ptext
    params = parse_header_params(rest, source) if rest.strip() else {}
    return NameAddr(uri=uri, display_name=display, params=params)
