"""SDP (RFC 4566) parsing/serialisation and RFC 3264 offer/answer for G.711 + RFC 4733 DTMF.

Sans-I/O: pure dataclasses and functions, no sockets and no clock (callers pass session ids).
The parser is tolerant where real phones are sloppy (CRLF or bare LF, trailing whitespace, blank
lines, missing ``t=``, unknown line types and attributes, which are kept so they round-trip) and
strict where it matters (``v=``/``o=``/``s=`` header, ``m=``/``c=``/``o=`` fields, ``rtpmap``).
Every problem is reported as :class:`SdpError` naming the offending line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, field

__all__ = [
    "DIRECTIONS", "STATIC_PAYLOAD_TYPES", "Answer", "Attribute", "Connection", "MediaDescription",
    "NegotiatedMedia", "NoCommonCodec", "Origin", "RtpMap", "SdpError", "SessionDescription",
    "build_offer", "negotiate", "parse_answer",
]  # fmt: skip

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: Static RTP/AVP payload types (RFC 3551) that may appear without an ``a=rtpmap``.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000),
    9: ("G722", 8000), 13: ("CN", 8000), 18: ("G729", 8000),
}  # fmt: skip
TELEPHONE_EVENT = "telephone-event"
DEFAULT_PTIME = 20

_LINE = re.compile(r"([a-z])=(.*)")
_DIGITS = re.compile(r"[0-9]+")
_SESSION_ORDER = "iuepcbtzk"  # RFC 4566 §5 order between s= and a= ("r" travels with "t")
_MEDIA_ORDER = "icbk"  # between m= and a=
_SESSION_ONLY = frozenset("vosuepztr")
_DIRECTION_SETS: dict[str, frozenset[str]] = {
    "sendrecv": frozenset({"send", "recv"}), "sendonly": frozenset({"send"}),
    "recvonly": frozenset({"recv"}), "inactive": frozenset(),
}  # fmt: skip


class SdpError(ValueError):
    """Malformed or unacceptable SDP. ``line`` is the 1-based line number when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


class NoCommonCodec(SdpError):
    """No audio stream could be agreed (the UAS answers 488 Not Acceptable Here)."""


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _int(text: str, what: str, line: int | None, maximum: int | None = None) -> int:
    if not _DIGITS.fullmatch(text):
        raise SdpError(f"{what} must be a non-negative integer, got {_short(text)}", line)
    try:
        value = int(text)
    except ValueError:  # more digits than int() accepts
        raise SdpError(f"{what} is too long", line) from None
    if maximum is not None and value > maximum:
        raise SdpError(f"{what} must be 0-{maximum}, got {value}", line)
    return value


def _addrtype(address: str) -> str:
    try:
        return "IP6" if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address) else "IP4"
    except ValueError:
        return "IP6" if ":" in address else "IP4"


@dataclass
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    sess_id: int
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            fields = "username sess-id sess-version nettype addrtype address"
            raise SdpError(f"o= line needs 6 fields ({fields}), got {len(parts)}", line)
        user, sess_id, sess_version, nettype, addrtype, address = parts
        return cls(
            user, _int(sess_id, "o= sess-id", line), _int(sess_version, "o= sess-version", line),
            nettype, addrtype, address,
        )

    def __str__(self) -> str:
        return " ".join(map(str, astuple(self)))


@dataclass
class Connection:
    """``c=<nettype> <addrtype> <connection-address>``."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"c= line needs 3 fields (nettype addrtype address), got {_short(value)}", line)
        return cls(*parts)

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4``/``IN IP6`` connection for a local address."""
        return cls("IN", _addrtype(address), address)

    @property
    def is_ipv6(self) -> bool:
        return self.addrtype.upper() == "IP6"

    @property
    def is_hold(self) -> bool:
        """Legacy RFC 2543 hold: ``c=IN IP4 0.0.0.0`` (RFC 3264 §8.4)."""
        return self.addrtype.upper() == "IP4" and self.address == "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True)
class Attribute:
    """``a=<name>`` (``value`` None) or ``a=<name>:<value>``."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str, line: int | None = None) -> Attribute:
        name, sep, value = text.partition(":")
        if not name:
            raise SdpError(f"attribute without a name: {_short('a=' + text)}", line)
        attribute = cls(name, value if sep else None)
        if name == "rtpmap":
            RtpMap.parse(value, line)
        return attribute

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> RtpMap:
        pieces = value.split(None, 1)
        parts = pieces[1].strip().split("/") if len(pieces) == 2 else []
        if len(parts) not in (2, 3) or not parts[0]:
            expected = "'<payload type> <encoding>/<clock rate>[/<channels>]'"
            raise SdpError(f"bad rtpmap {_short(value)}: expected {expected}", line)
        channels = _int(parts[2], "rtpmap channels", line) if len(parts) == 3 else None
        return cls(_int(pieces[0], "rtpmap payload type", line, 127), parts[0],
                   _int(parts[1], "rtpmap clock rate", line), channels)

    def is_named(self, encoding: str) -> bool:
        return self.encoding.lower() == encoding.lower()

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"


def _direction(attributes: Iterable[Attribute]) -> str | None:
    return next((a.name for a in attributes if a.name in DIRECTIONS), None)


def _rank(letter: str, order: str) -> int:
    index = order.find("t" if letter == "r" else letter)
    return index if index >= 0 else len(order)


def _section(fixed: list[tuple[str, str]], other: list[tuple[str, str]], order: str) -> list[str]:
    merged = sorted([*fixed, *other], key=lambda item: _rank(item[0], order))  # stable: fixed first
    return [f"{letter}={value}" for letter, value in merged]


@dataclass
class MediaDescription:
    """One ``m=`` section. ``formats`` are kept as text (RTP payload types, or e.g. ``webrtc-datachannel``)."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)  # i=, b=, k=, unknown

    @classmethod
    def parse_m_line(cls, value: str, line: int | None = None) -> MediaDescription:
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(f"bad m= line {_short(value)}: expected '<media> <port> <proto> <fmt> ...'", line)
        media, port_text, proto, *formats = parts
        port_part, slash, count_part = port_text.partition("/")
        port = _int(port_part, "m= port", line, 65535)
        count = _int(count_part, "m= port count", line) if slash else None
        if not formats and port != 0:
            raise SdpError(f"bad m= line {_short(value)}: no media formats", line)
        if "RTP/" in proto.upper():
            for fmt in formats:
                _int(fmt, "m= RTP payload type", line, 127)
        return cls(media, port, proto, formats, count)

    @property
    def rejected(self) -> bool:
        """Port 0: the stream is disabled/rejected (RFC 3264 §6)."""
        return self.port == 0

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def payload_types(self) -> list[int]:
        return [int(fmt) for fmt in self.formats if _DIGITS.fullmatch(fmt)] if self.is_rtp else []

    @property
    def direction(self) -> str | None:
        """Media-level direction attribute, if any (see :meth:`SessionDescription.media_direction`)."""
        return _direction(self.attributes)

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value is not None and _DIGITS.fullmatch(value) and len(value) < 6 else None

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=<name>:...`` ('' for a flag attribute), or None when absent."""
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute.value if attribute.value is not None else ""
        return None

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """Explicit ``a=rtpmap`` for a payload type, else the RFC 3551 static mapping, else None."""
        for attribute in self.attributes:
            if attribute.name == "rtpmap" and attribute.value is not None:
                rtpmap = RtpMap.parse(attribute.value)
                if rtpmap.payload_type == payload_type:
                    return rtpmap
        if payload_type in STATIC_PAYLOAD_TYPES:
            return RtpMap(payload_type, *STATIC_PAYLOAD_TYPES[payload_type])
        return None

    @property
    def codecs(self) -> list[RtpMap]:
        """Known mappings of the m= line's payload types, in the m= line's (preference) order."""
        return [m for m in (self.rtpmap(pt) for pt in self.payload_types) if m is not None]

    def fmtp(self, payload_type: int) -> str | None:
        """Parameters of ``a=fmtp:<payload type> <params>``, or None."""
        for attribute in self.attributes:
            if attribute.name == "fmtp" and attribute.value is not None:
                pieces = attribute.value.split(None, 1)
                if pieces and pieces[0] == str(payload_type):
                    return pieces[1].strip() if len(pieces) == 2 else ""
        return None

    def find_codec(self, encoding: str, clock_rate: int | None = None) -> RtpMap | None:
        """First offered payload type with this encoding name (case-insensitive)."""
        for rtpmap in self.codecs:
            if rtpmap.is_named(encoding) and clock_rate in (None, rtpmap.clock_rate):
                return rtpmap
        return None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        m_line = " ".join([f"m={self.media}", port, self.proto, *self.formats])
        fixed = [("c", str(self.connection))] if self.connection is not None else []
        return [m_line, *_section(fixed, self.other_lines, _MEDIA_ORDER), *(f"a={a}" for a in self.attributes)]


@dataclass(kw_only=True)
class SessionDescription:
    """A whole SDP body. ``other_lines`` keeps i=/u=/e=/p=/b=/r=/z=/k=/extra t= and unknown lines."""

    version: int = 0
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: tuple[int, int] = (0, 0)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        if isinstance(text, bytes | bytearray):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SdpError(f"SDP is not valid UTF-8 (byte {exc.start})") from None
        entries: list[tuple[int, str, str]] = []
        for number, raw in enumerate(text.split("\n"), 1):
            line = raw.rstrip("\r").rstrip(" \t")
            if not line:
                continue
            if "\r" in line or "\x00" in line:
                raise SdpError("stray CR or NUL character inside the line", number)
            match = _LINE.fullmatch(line)
            if match is None:
                raise SdpError(f"expected '<letter>=<value>', got {_short(line)}", number)
            entries.append((number, match[1], match[2]))
        if not entries:
            raise SdpError("empty SDP body")
        header: list[tuple[int, str]] = []
        for index, (letter, what) in enumerate((("v", "version"), ("o", "origin"), ("s", "session name"))):
            if index >= len(entries):
                raise SdpError(f"missing {letter}= line ({what}): SDP ends too early", entries[-1][0] + 1)
            line_no, got, value = entries[index]
            if got != letter:
                raise SdpError(f"expected {letter}= line ({what}), got {_short(got + '=' + value)}", line_no)
            header.append((line_no, value))
        version = _int(header[0][1], "SDP version", header[0][0])
        if version != 0:
            raise SdpError(f"unsupported SDP version {version} (expected 0)", header[0][0])
        sdp = cls(version=version, origin=Origin.parse(header[1][1], header[1][0]), session_name=header[2][1])
        seen_timing = False
        current: MediaDescription | None = None
        for line_no, letter, value in entries[3:]:
            if letter == "m":
                current = MediaDescription.parse_m_line(value, line_no)
                sdp.media.append(current)
            elif letter in "vos" or (current is not None and letter in _SESSION_ONLY):
                where = "more than once" if letter in "vos" else "inside a media section"
                raise SdpError(f"{letter}= line not allowed {where}", line_no)
            elif letter == "a":
                (current or sdp).attributes.append(Attribute.parse(value, line_no))
            elif letter == "c":
                target = current or sdp
                if target.connection is not None:
                    raise SdpError("duplicate c= line", line_no)
                target.connection = Connection.parse(value, line_no)
            elif letter == "t" and not seen_timing:
                parts = value.split()
                if len(parts) != 2:
                    raise SdpError(f"t= line needs '<start> <stop>', got {_short(value)}", line_no)
                sdp.timing = (_int(parts[0], "t= start", line_no), _int(parts[1], "t= stop", line_no))
                seen_timing = True
            else:
                (current or sdp).other_lines.append((letter, value))
        sdp.other_lines.sort(key=lambda item: _rank(item[0], _SESSION_ORDER))
        for media in sdp.media:
            media.other_lines.sort(key=lambda item: _rank(item[0], _MEDIA_ORDER))
        return sdp

    def serialise(self) -> str:
        """RFC 4566 text with CRLF line endings (including after the last line)."""
        fixed = [("c", str(self.connection))] if self.connection is not None else []
        fixed.append(("t", f"{self.timing[0]} {self.timing[1]}"))
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        lines += _section(fixed, self.other_lines, _SESSION_ORDER)
        lines += [f"a={a}" for a in self.attributes]
        for media in self.media:
            lines += media.lines()
        return "\r\n".join(lines) + "\r\n"

    def __bytes__(self) -> bytes:
        return self.serialise().encode("utf-8")

    @property
    def direction(self) -> str | None:
        """Session-level direction attribute (the default for every stream), if any."""
        return _direction(self.attributes)

    def media_direction(self, media: MediaDescription | int) -> str:
        """Effective direction of a stream: media-level, else session-level, else sendrecv."""
        media = self.media[media] if isinstance(media, int) else media
        return media.direction or self.direction or "sendrecv"

    def connection_for(self, media: MediaDescription | int) -> Connection | None:
        """Media-level c= if present, else the session-level one."""
        media = self.media[media] if isinstance(media, int) else media
        return media.connection or self.connection

    def is_on_hold(self, media: MediaDescription | int) -> bool:
        """The peer holds this stream: sendonly/inactive, or legacy ``c=IN IP4 0.0.0.0``."""
        connection = self.connection_for(media)
        return self.media_direction(media) in ("sendonly", "inactive") or bool(connection and connection.is_hold)


@dataclass(frozen=True)
class NegotiatedMedia:
    """Outcome of offer/answer for the (single) audio stream we use.

    ``payload_type``/``telephone_event_pt`` are the numbers to put in RTP we *send*; ``direction`` is
    our own direction (e.g. ``recvonly`` when the peer holds us); ``ptime`` is what the peer asked for.
    """

    codec: str
    payload_type: int
    clock_rate: int
    telephone_event_pt: int | None
    remote_address: str
    remote_port: int
    direction: str
    ptime: int
    media_index: int


@dataclass(frozen=True)
class Answer(NegotiatedMedia):
    """Result of :func:`negotiate`: the negotiated media plus the answer SDP to send."""

    sdp: SessionDescription


def _our_direction(peer_direction: str, peer_holds: bool, wanted: str | None) -> str:
    """RFC 3264 §6.1: mirror the peer's direction, intersected with what we want."""
    peer = _DIRECTION_SETS.get(peer_direction, _DIRECTION_SETS["sendrecv"])
    if peer_holds:  # c=0.0.0.0: the peer cannot receive, so we must not send
        peer -= {"recv"}
    ours = frozenset("send" if cap == "recv" else "recv" for cap in peer) & _DIRECTION_SETS[wanted or "sendrecv"]
    return next(name for name, caps in _DIRECTION_SETS.items() if caps == ours)


def _is_auxiliary(rtpmap: RtpMap) -> bool:
    """telephone-event and comfort noise ride along with a codec; they are not one."""
    return rtpmap.is_named(TELEPHONE_EVENT) or rtpmap.is_named("CN")


def _check_local(local_port: int, direction: str | None) -> None:
    if not 0 < local_port <= 65535:
        raise ValueError(f"local_port must be 1-65535, got {local_port}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def _audio_media(port: int, formats: list[int], attributes: list[Attribute]) -> MediaDescription:
    return MediaDescription("audio", port, "RTP/AVP", [str(pt) for pt in formats], attributes=attributes)


def negotiate(
    offer: SessionDescription,
    *,
    local_address: str,
    local_port: int,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    session_id: int,
    session_version: int = 1,
    direction_override: str | None = None,
) -> Answer:
    """Answer an offer (RFC 3264 §6).

    The first ``m=audio`` RTP/AVP stream sharing a codec is accepted, picking the first codec in the
    *offerer's* order that is in ``supported`` plus telephone-event at the same clock rate (the
    offerer's PT and fmtp). Every other stream is answered with port 0, keeping m= count and order.
    ``direction_override`` (e.g. ``sendonly`` to hold the caller) narrows the mirrored direction.
    Raises :class:`NoCommonCodec` when no audio stream can be accepted.
    """
    _check_local(local_port, direction_override)
    wanted = {name.upper() for name in supported}
    answer = SessionDescription(
        origin=Origin("-", session_id, session_version, "IN", _addrtype(local_address), local_address),
        connection=Connection.for_address(local_address),
        timing=offer.timing,  # RFC 3264 §6: the answer's t= equals the offer's
    )
    chosen: Answer | None = None
    for index, media in enumerate(offer.media):
        usable = chosen is None and media.media == "audio" and not media.rejected
        codec = None
        if usable and media.proto.upper() == "RTP/AVP":
            codec = next((c for c in media.codecs if c.encoding.upper() in wanted), None)
        if codec is None:
            answer.media.append(MediaDescription(media.media, 0, media.proto, list(media.formats)))
            continue
        connection = offer.connection_for(media)
        if connection is None:
            raise SdpError(f"offered audio stream #{index + 1} has no c= line (session or media level)")
        event = media.find_codec(TELEPHONE_EVENT, codec.clock_rate)
        direction = _our_direction(offer.media_direction(media), connection.is_hold, direction_override)
        attributes = [Attribute("rtpmap", str(codec))]
        if event is not None:
            attributes.append(Attribute("rtpmap", str(event)))
            params = media.fmtp(event.payload_type)
            if params is not None:
                attributes.append(Attribute("fmtp", f"{event.payload_type} {params}"))
        attributes += [Attribute("ptime", str(DEFAULT_PTIME)), Attribute(direction)]
        formats = [codec.payload_type] + ([event.payload_type] if event is not None else [])
        answer.media.append(_audio_media(local_port, formats, attributes))
        chosen = Answer(
            codec.encoding.upper(), codec.payload_type, codec.clock_rate,
            event.payload_type if event is not None else None, connection.address, media.port,
            direction, media.ptime or DEFAULT_PTIME, index, answer,
        )
    if chosen is None:
        streams = [m for m in offer.media if m.media == "audio" and not m.rejected and m.proto.upper() == "RTP/AVP"]
        offered = [c.encoding for m in streams for c in m.codecs if not _is_auxiliary(c)]
        if not offered:
            raise NoCommonCodec("offer has no usable RTP/AVP audio stream")
        raise NoCommonCodec(f"no common codec: offered {', '.join(offered)}; supported {', '.join(supported)}")
    return chosen


def build_offer(
    local_address: str,
    local_port: int,
    *,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    telephone_event_pt: int | None = 101,
    session_id: int,
    session_version: int = 1,
    direction: str = "sendrecv",
) -> SessionDescription:
    """Offer for an outbound call: one audio stream with static-PT codecs and telephone-event 0-16."""
    _check_local(local_port, direction)
    by_name = {name: pt for pt, (name, _) in STATIC_PAYLOAD_TYPES.items()}
    if not codecs:
        raise ValueError("build_offer needs at least one codec")
    attributes, formats = [], []
    for name in codecs:
        if name.upper() not in by_name:
            raise ValueError(f"codec {name!r} has no static payload type (known: {', '.join(by_name)})")
        pt = by_name[name.upper()]
        formats.append(pt)
        attributes.append(Attribute("rtpmap", str(RtpMap(pt, *STATIC_PAYLOAD_TYPES[pt]))))
    if telephone_event_pt is not None:
        if not 96 <= telephone_event_pt <= 127:
            raise ValueError(f"telephone_event_pt must be a dynamic payload type 96-127, got {telephone_event_pt}")
        formats.append(telephone_event_pt)
        attributes += [Attribute("rtpmap", str(RtpMap(telephone_event_pt, TELEPHONE_EVENT, 8000))),
                       Attribute("fmtp", f"{telephone_event_pt} 0-16")]
    attributes += [Attribute("ptime", str(DEFAULT_PTIME)), Attribute(direction)]
    return SessionDescription(
        origin=Origin("-", session_id, session_version, "IN", _addrtype(local_address), local_address),
        connection=Connection.for_address(local_address),
        media=[_audio_media(local_port, formats, attributes)],
    )


def parse_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedMedia:
    """Check an answer against our offer (RFC 3264 §6/§7) and extract the audio stream to use.

    Raises :class:`SdpError` when the answer does not match the offer (m= count or types, a codec
    we never offered, no c=), :class:`NoCommonCodec` when every audio stream was rejected.
    """
    if len(answer.media) != len(offer.media):
        raise SdpError(f"answer has {len(answer.media)} m= lines but the offer had {len(offer.media)}")
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        label = f"answer m= line #{index + 1}"
        if ours.media != theirs.media:
            raise SdpError(f"{label} is {theirs.media!r} but the offer had {ours.media!r}")
        if theirs.media != "audio" or theirs.rejected or ours.rejected:
            continue
        offered = {c.encoding.upper() for c in ours.codecs}
        codec = None
        for pt in theirs.payload_types:
            rtpmap = theirs.rtpmap(pt)
            if rtpmap is None:
                raise SdpError(f"{label}: payload type {pt} has no rtpmap")
            if _is_auxiliary(rtpmap):
                continue
            if rtpmap.encoding.upper() not in offered:
                raise SdpError(f"{label} chose codec {rtpmap.encoding} (PT {pt}) which was not offered")
            codec = rtpmap
            break
        if codec is None:
            raise NoCommonCodec(f"{label} contains no audio codec")
        connection = answer.connection_for(theirs)
        if connection is None:
            raise SdpError(f"{label} has no c= line (session or media level)")
        event = None
        if ours.find_codec(TELEPHONE_EVENT) is not None:
            event = theirs.find_codec(TELEPHONE_EVENT, codec.clock_rate)
        direction = _our_direction(answer.media_direction(theirs), connection.is_hold,
                                   offer.media_direction(ours))
        return NegotiatedMedia(
            codec.encoding.upper(), codec.payload_type, codec.clock_rate,
            event.payload_type if event is not None else None, connection.address, theirs.port,
            direction, theirs.ptime or DEFAULT_PTIME, index,
        )
    raise NoCommonCodec("the answer rejected every audio stream")
