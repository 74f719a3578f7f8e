"""SIP/SIPS/tel URIs and name-addr values (RFC 3261 §19.1, §25.1; RFC 3966).

Pure data and parsing: no I/O. ``SipUri.parse("sip:alice@[::1]:5060;transport=tcp")``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from callcenter.sip.errors import UriError

# All patterns are used with fullmatch() (``$`` would also match before a trailing newline) and are
# written so that no two quantified sub-patterns can match the same text (no backtracking blow-up).
_HOST_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Characters allowed (unescaped) in the user part: unreserved / escaped / user-unreserved.
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_PARAM_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HEADER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
_GEN_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
# RFC 3966: global numbers are '+' then digits with visual separators; at least one digit is
# checked separately (a "[sep]*DIGIT[sep]*" pattern backtracks quadratically on long inputs).
_TEL_GLOBAL_RE = re.compile(r"\+[0-9\-.()]+")
_TEL_LOCAL_RE = re.compile(r"[0-9A-Fa-f*#\-.()pw]+")
# RFC 3986/2396 URI characters for schemes we keep verbatim (mailto:, urn:, http:, ...).
_ABSOLUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:(?:[A-Za-z0-9\-_.!~*'();/?:@&=+$,\[\]#]|%[0-9A-Fa-f]{2})*")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
_LWS_CHARS = frozenset(" \t\r\n")


def _has_lws(text: str) -> bool:
    return not _LWS_CHARS.isdisjoint(text)


def _check_port(text: str, source: str) -> int:
    if not text or len(text) > 5 or not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise UriError(f"bad port {text[:20]!r} in URI {source[:120]!r}")
    return int(text)


def check_host(host: str, source: str) -> str:
    """Validate a hostname, IPv4 address or ``[IPv6]`` reference; returns it unchanged."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise UriError(f"unterminated IPv6 reference in URI {source[:120]!r}")
        inner = host[1:-1]
        if "%" in inner:  # zone ids are not part of SIP URIs; '%' would be an escape here
            raise UriError(f"bad IPv6 address {host!r} in URI {source[:120]!r}")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise UriError(f"bad IPv6 address {host[:60]!r} in URI {source[:120]!r}") from None
        return host
    if not host or _HOST_RE.fullmatch(host) is None:
        raise UriError(f"bad host {host[:60]!r} in URI {source[:120]!r}")
    return host


_check_host = check_host  # backwards-compatible private name


def _parse_params(text: str, source: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item:
            raise UriError(f"empty parameter in URI {source[:120]!r}")
        name, eq, value = item.partition("=")
        if _PARAM_RE.fullmatch(name) is None or (eq and _PARAM_RE.fullmatch(value) is None):
            raise UriError(f"bad parameter {item[:60]!r} in URI {source[:120]!r}")
        key = name.lower()
        if key in params:  # RFC 3261 §19.1.1: a parameter name MUST NOT appear more than once
            raise UriError(f"duplicate parameter {name[:60]!r} in URI {source[:120]!r}")
        params[key] = value if eq else None
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
        if _has_lws(text):
            raise UriError(f"whitespace inside URI {source[:120]!r}")
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise UriError(f"not a sip or sips URI: {source[:120]!r}")
        headers: dict[str, str] = {}
        if "?" in rest:
            # '?' may appear in the user part (but '@' may not), so only a '?' after the host
            # starts the headers.
            at = rest.find("@")
            qpos = rest.find("?", at + 1 if at >= 0 else 0)
            if qpos >= 0:
                rest, htext = rest[:qpos], rest[qpos + 1 :]
                for item in htext.split("&"):
                    hname, eq, hvalue = item.partition("=")
                    if not (hname and eq and _HEADER_RE.fullmatch(hname) and _HEADER_RE.fullmatch(hvalue)):
                        raise UriError(f"bad header {item[:60]!r} in URI {source[:120]!r}")
                    headers[unquote(hname)] = unquote(hvalue)
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            if "@" in userinfo:
                raise UriError(f"unescaped '@' in user part of URI {source[:120]!r}")
            user, pcolon, pw = userinfo.partition(":")
            if not user or _USER_RE.fullmatch(user) is None:
                raise UriError(f"bad user part {user[:60]!r} in URI {source[:120]!r}")
            if pcolon:
                if _PASSWORD_RE.fullmatch(pw) is None:
                    raise UriError(f"bad password in URI {source[:120]!r}")
                password = pw
        hostport, semi, ptext = rest.partition(";")
        params = _parse_params(ptext, source) if semi else {}
        port: int | None = None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise UriError(f"unterminated IPv6 reference in URI {source[:120]!r}")
            host, tail = hostport[: end + 1], hostport[end + 1 :]
            if tail:
                if not tail.startswith(":"):
                    raise UriError(f"junk after IPv6 host in URI {source[:120]!r}")
                port = _check_port(tail[1:], source)
        else:
            host, pc, ptxt = hostport.partition(":")
            if pc:
                port = _check_port(ptxt, source)
        return cls(
            host=check_host(host, source).lower(),
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
            raise UriError(f"not a tel URI: {text[:120]!r}")
        number, semi, ptext = rest.partition(";")
        if number.startswith("+"):
            ok = _TEL_GLOBAL_RE.fullmatch(number) is not None and any(ch.isdigit() for ch in number)
        else:
            ok = _TEL_LOCAL_RE.fullmatch(number) is not None
        if not ok:
            raise UriError(f"bad telephone number {number[:60]!r} in URI {text[:120]!r}")
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
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")


def parse_uri(text: str) -> Uri:
    """Parse any URI; sip/sips/tel get structure, other schemes are kept verbatim."""
    m = _SCHEME_RE.match(text)
    if not m:
        raise UriError(f"not a URI: {text[:120]!r}")
    scheme = m.group(0)[:-1].lower()
    if scheme in ("sip", "sips"):
        return SipUri.parse(text)
    if scheme == "tel":
        return TelUri.parse(text)
    if _ABSOLUTE_RE.fullmatch(text) is None:
        raise UriError(f"bad characters in URI {text[:120]!r}")
    return AbsoluteUri(text)


def _quote_display(name: str) -> str:
    if _TOKEN_RE.fullmatch(name.replace(" ", "")) and name.strip() == name and "  " not in name:
        return name
    # CR and LF cannot be carried even as quoted-pairs (RFC 3261 §25.1): never emit them.
    name = name.replace("\r", " ").replace("\n", " ")
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


def _scan_quoted(text: str, start: int, source: str) -> int:
    """Index of the closing '"' of the quoted-string opening at ``text[start]``.

    qdtext excludes control characters other than HT; quoted-pairs may escape any octet except
    CR and LF (RFC 3261 §25.1).
    """
    k, n = start + 1, len(text)
    while k < n:
        ch = text[k]
        if ch == '"':
            return k
        if ch == "\\":
            if k + 1 < n and text[k + 1] in "\r\n":
                break
            k += 2
            continue
        if (ch < " " and ch != "\t") or ch == "\x7f":
            raise UriError(f"control character in quoted string in {source[:120]!r}")
        k += 1
    raise UriError(f"unterminated quoted string in {source[:120]!r}")


def parse_header_params(text: str, source: str) -> dict[str, str | None]:
    """Parse ``;a=b;c;d="quoted"`` (leading ';' optional) keeping quotes on quoted values.

    A parameter name may appear only once (a second ``tag`` or ``branch`` would make the value
    ambiguous between implementations).
    """
    if '"' not in text:
        return _parse_unquoted_params(text, source)
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
            raise UriError(f"empty parameter in {source[:120]!r}")
        j = i
        while j < n and text[j] not in "=; \t":
            j += 1
        name = text[i:j]
        if not name or _TOKEN_RE.fullmatch(name) is None:
            raise UriError(f"bad parameter name {name[:60]!r} in {source[:120]!r}")
        while j < n and text[j] in " \t":
            j += 1
        value: str | None = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] == '"':
                k = _scan_quoted(text, j, source)
                value = text[j : k + 1]
                j = k + 1
            else:
                k = j
                while k < n and text[k] not in "; \t":
                    k += 1
                value = text[j:k]
                if _GEN_VALUE_RE.fullmatch(value) is None:
                    raise UriError(f"bad value for parameter {name[:60]!r} in {source[:120]!r}")
                j = k
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] != ";":
            raise UriError(f"junk {text[j : j + 40]!r} after parameter {name[:60]!r} in {source[:120]!r}")
        key = name.lower()
        if key in params:
            raise UriError(f"duplicate parameter {name[:60]!r} in {source[:120]!r}")
        params[key] = value
        i = j
    return params


def _parse_unquoted_params(text: str, source: str) -> dict[str, str | None]:
    """Fast path of :func:`parse_header_params` for text without quoted strings (same results)."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    parts = text.split(";")
    if not parts[0].strip(" \t"):
        if len(parts) == 1:
            raise UriError(f"empty parameter in {source[:120]!r}")
        del parts[0]  # the optional leading ';'
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(" \t")
        if not name:
            raise UriError(f"empty parameter in {source[:120]!r}")
        if _TOKEN_RE.fullmatch(name) is None:
            raise UriError(f"bad parameter {name[:60]!r} in {source[:120]!r}")
        key = name.lower()
        if key in params:
            raise UriError(f"duplicate parameter {name[:60]!r} in {source[:120]!r}")
        if eq:
            value = value.strip(" \t")
            if _GEN_VALUE_RE.fullmatch(value) is None:
                raise UriError(f"bad value for parameter {name[:60]!r} in {source[:120]!r}")
            params[key] = value
        else:
            params[key] = None
    return params


def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20, §20.39)."""
    source = text
    text = text.strip(" \t")
    if text == "*":
        return NameAddr(uri=AbsoluteUri("*"), wildcard=True)
    display: str | None = None
    if text.startswith('"'):
        end = _scan_quoted(text, 0, source)
        display = _QUOTED_PAIR_RE.sub(r"\1", text[1:end])
        text = text[end + 1 :].lstrip(" \t")
        if not text.startswith("<"):
            raise UriError(f"display name without <URI> in {source[:120]!r}")
    lt = text.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            candidate = text[:lt].strip(" \t")
            if not all(_TOKEN_RE.fullmatch(w) for w in candidate.replace("\t", " ").split(" ") if w):
                raise UriError(f"display name {candidate[:60]!r} must be quoted in {source[:120]!r}")
            display = candidate or None
        gt = text.find(">", lt)
        if gt < 0:
            raise UriError(f"missing '>' in {source[:120]!r}")
        uri = parse_uri(text[lt + 1 : gt])
        rest = text[gt + 1 :].lstrip(" \t")
        if rest and rest[0] != ";":
            raise UriError(f"junk {rest[:40]!r} after '>' in {source[:120]!r}")
    else:
        # addr-spec: URI parameters would be ambiguous, so everything after ';' is a header parameter
        # and the URI must not contain '?' headers or commas (RFC 3261 §20).
        uri_text, semi, ptext = text.partition(";")
        uri_text = uri_text.strip(" \t")
        if "?" in uri_text or "," in uri_text or _has_lws(uri_text):
            raise UriError(f"URI with headers or spaces must be enclosed in <> in {source[:120]!r}")
        uri = parse_uri(uri_text)
        rest = semi + ptext
    params = parse_header_params(rest, source) if rest.strip(" \t") else {}
    return NameAddr(uri=uri, display_name=display, params=params)
