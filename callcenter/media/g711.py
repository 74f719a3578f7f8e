"""G.711 µ-law (PCMU) and A-law (PCMA) with numpy lookup tables.

Bit-exact with the classic Sun/CCITT ``g711.c`` (``linear2ulaw``/``ulaw2linear``,
``linear2alaw``/``alaw2linear``) as CPython's ``audioop`` implements it for 16-bit samples:

* µ-law encodes the 14-bit value ``x >> 2`` with bias ``0x84 >> 2`` (audioop's CLIP of 32635 never
  bites on a 14-bit value; anything past segment 7 saturates to the loudest code);
* A-law encodes the 13-bit value ``x >> 3``;
* decoding yields the classic 16-bit reconstruction values (µ-law ±32124, A-law ±32256 at most).

Every table is computed once at import with vectorised numpy: an encoder is a 64 KiB ``uint8`` table
indexed by the ``uint16`` view of the int16 samples, a decoder is 256 ``int16`` values, and PCMU↔PCMA
transcoding is a 256-byte ``bytes.translate`` table per direction (equal to decode-then-encode).

Pure computation: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "CODECS",
    "FRAME_MS",
    "SAMPLES_PER_FRAME",
    "Codec",
    "alaw_decode",
    "alaw_encode",
    "codec_for",
    "transcode",
    "ulaw_decode",
    "ulaw_encode",
]

SAMPLES_PER_FRAME = 160
FRAME_MS = 20
CLOCK_RATE = 8000

_BIAS = 0x84
_CLIP = 32635
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)

Int16Array = npt.NDArray[np.int16]


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its uint16 bit pattern (so index == the uint16 view)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encoder() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 2  # 14-bit, arithmetic shift like C on a signed short
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -pcm, pcm), _CLIP) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, magnitude, side="left")  # first seg with magnitude <= end
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((magnitude >> (np.minimum(seg, 7) + 1)) & 0xF))
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decoder() -> Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0xF) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_alaw_encoder() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 3  # 13-bit
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_SEG_AEND, magnitude, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((magnitude >> shift) & 0xF))
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decoder() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0xF) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE = _build_ulaw_encoder()
_ULAW_DECODE = _build_ulaw_decoder()
_ALAW_ENCODE = _build_alaw_encoder()
_ALAW_DECODE = _build_alaw_decoder()
for _table in (_ULAW_ENCODE, _ULAW_DECODE, _ALAW_ENCODE, _ALAW_DECODE):
    _table.flags.writeable = False

# Direct byte-to-byte transcoding tables for bytes.translate: decode with one law, encode with the other.
ULAW_TO_ALAW: bytes = _ALAW_ENCODE[_ULAW_DECODE.view(np.uint16)].tobytes()
ALAW_TO_ULAW: bytes = _ULAW_ENCODE[_ALAW_DECODE.view(np.uint16)].tobytes()


def _as_uint16(pcm: np.ndarray) -> npt.NDArray[np.uint16]:
    """The uint16 view of int16 samples; other integer arrays are saturated to int16 first."""
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        if samples.dtype.kind not in "iu":
            raise TypeError(f"G.711 encodes integer PCM samples, not {samples.dtype}")
        samples = np.clip(samples, -32768, 32767).astype(np.int16)
    return samples.view(np.uint16)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """Encode 16-bit linear PCM (int16 array, any shape, read in C order) to µ-law bytes."""
    return _ULAW_ENCODE[_as_uint16(pcm)].tobytes()


def ulaw_decode(data: bytes) -> Int16Array:
    """Decode µ-law bytes to a new 1-D int16 array."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    """Encode 16-bit linear PCM (int16 array, any shape, read in C order) to A-law bytes."""
    return _ALAW_ENCODE[_as_uint16(pcm)].tobytes()


def alaw_decode(data: bytes) -> Int16Array:
    """Decode A-law bytes to a new 1-D int16 array."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


class Codec:
    """One G.711 variant as the media plane sees it: RTP payload type, clock rate, encode/decode."""

    __slots__ = ("_decode", "_encode", "clock_rate", "name", "payload_type", "silence")

    def __init__(
        self,
        name: str,
        payload_type: int,
        encode: Callable[[np.ndarray], bytes],
        decode: Callable[[bytes], Int16Array],
        clock_rate: int = CLOCK_RATE,
    ) -> None:
        self.name = name
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self._encode = encode
        self._decode = decode
        self.silence: bytes = encode(np.zeros(SAMPLES_PER_FRAME, dtype=np.int16))

    def encode(self, pcm: np.ndarray) -> bytes:
        return self._encode(pcm)

    def decode(self, payload: bytes) -> Int16Array:
        return self._decode(payload)

    def __repr__(self) -> str:
        return f"Codec({self.name!r}, payload_type={self.payload_type}, clock_rate={self.clock_rate})"


PCMU = Codec("PCMU", 0, ulaw_encode, ulaw_decode)
PCMA = Codec("PCMA", 8, alaw_encode, alaw_decode)
CODECS: dict[str, Codec] = {PCMU.name: PCMU, PCMA.name: PCMA}

_TRANSCODE: dict[tuple[str, str], bytes] = {("PCMU", "PCMA"): ULAW_TO_ALAW, ("PCMA", "PCMU"): ALAW_TO_ULAW}


def codec_for(name: str) -> Codec:
    """The codec called ``name`` (case-insensitive: "pcmu", "PCMA"); KeyError naming the known ones."""
    codec = CODECS.get(name.upper())
    if codec is None:
        raise KeyError(f"unknown G.711 codec {name!r} (known: {', '.join(CODECS)})")
    return codec


def transcode(payload: bytes, src: str, dst: str) -> bytes:
    """Re-encode a G.711 payload from codec ``src`` to codec ``dst`` (the same name returns it unchanged)."""
    source, target = codec_for(src).name, codec_for(dst).name
    if source == target:
        return bytes(payload)
    return bytes(payload).translate(_TRANSCODE[source, target])
