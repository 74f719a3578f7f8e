"""Tests for callcenter.media.g711: bit-exact against the classic Sun/CCITT g711.c over every input.

The reference below is a plain-Python transcription of g711.c (``linear2ulaw``/``ulaw2linear``,
``linear2alaw``/``alaw2linear``, 16-bit in and out). audioop (gone in Python 3.13) is a second
reference only when it can still be imported.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.media.g711 import (
    CODECS,
    FRAME_MS,
    SAMPLES_PER_FRAME,
    alaw_decode,
    alaw_encode,
    codec_for,
    transcode,
    ulaw_decode,
    ulaw_encode,
)

# ---------------------------------------------------------------------------------------------
# Reference: g711.c, transcribed line by line (C ``short`` arithmetic; >> on negatives is arithmetic).

SIGN_BIT = 0x80
QUANT_MASK = 0xF
SEG_SHIFT = 4
SEG_MASK = 0x70
BIAS = 0x84
CLIP = 8159
SEG_AEND = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]
SEG_UEND = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]


def search(val: int, table: list[int]) -> int:
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def linear2alaw(pcm_val: int) -> int:
    pcm_val = pcm_val >> 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm_val = -pcm_val - 1
    seg = search(pcm_val, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << SEG_SHIFT
    if seg < 2:
        aval |= (pcm_val >> 1) & QUANT_MASK
    else:
        aval |= (pcm_val >> seg) & QUANT_MASK
    return aval ^ mask


def alaw2linear(a_val: int) -> int:
    a_val ^= 0x55
    t = (a_val & QUANT_MASK) << 4
    seg = (a_val & SEG_MASK) >> SEG_SHIFT
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if a_val & SIGN_BIT else -t


def linear2ulaw(pcm_val: int) -> int:
    pcm_val = pcm_val >> 2
    if pcm_val < 0:
        pcm_val = -pcm_val
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm_val > CLIP:
        pcm_val = CLIP
    pcm_val += BIAS >> 2
    seg = search(pcm_val, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    uval = (seg << 4) | ((pcm_val >> (seg + 1)) & 0xF)
    return uval ^ mask


def ulaw2linear(u_val: int) -> int:
    u_val = ~u_val & 0xFF
    t = ((u_val & QUANT_MASK) << 3) + BIAS
    t <<= (u_val & SEG_MASK) >> SEG_SHIFT
    return BIAS - t if u_val & SIGN_BIT else t - BIAS


ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = bytes(range(256))


def load_audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


AUDIOOP = load_audioop()


# ---------------------------------------------------------------------------------------------
# Bit-exactness


def g711c_reference() -> tuple[bytes, bytes, list[int], list[int]]:
    """µ-law and A-law encodings of every int16 sample, decodings of every code, per the transcription."""
    return (
        bytes(linear2ulaw(int(x)) for x in ALL_SAMPLES),
        bytes(linear2alaw(int(x)) for x in ALL_SAMPLES),
        [ulaw2linear(c) for c in ALL_CODES],
        [alaw2linear(c) for c in ALL_CODES],
    )


def audioop_reference() -> tuple[bytes, bytes, list[int], list[int]]:
    assert AUDIOOP is not None
    pcm = ALL_SAMPLES.tobytes()
    return (
        AUDIOOP.lin2ulaw(pcm, 2),
        AUDIOOP.lin2alaw(pcm, 2),
        np.frombuffer(AUDIOOP.ulaw2lin(ALL_CODES, 2), dtype=np.int16).tolist(),
        np.frombuffer(AUDIOOP.alaw2lin(ALL_CODES, 2), dtype=np.int16).tolist(),
    )


# The transcription always runs; audioop joins as a second reference while Python still ships it.
REFERENCES = {"g711.c": g711c_reference} | ({"audioop": audioop_reference} if AUDIOOP is not None else {})


@pytest.mark.parametrize("reference", list(REFERENCES))
def test_encoders_match_reference_for_every_int16(reference: str) -> None:
    ulaw, alaw, _, _ = REFERENCES[reference]()
    assert ulaw_encode(ALL_SAMPLES) == ulaw
    assert alaw_encode(ALL_SAMPLES) == alaw


@pytest.mark.parametrize("reference", list(REFERENCES))
def test_decoders_match_reference_for_every_code(reference: str) -> None:
    _, _, ulaw, alaw = REFERENCES[reference]()
    assert ulaw_decode(ALL_CODES).tolist() == ulaw
    assert alaw_decode(ALL_CODES).tolist() == alaw


def test_known_values() -> None:
    # Classic landmarks: silence, full scale and the smallest steps.
    assert ulaw_encode(np.array([0, 32767, -32768, -1], dtype=np.int16)) == bytes([0xFF, 0x80, 0x00, 0x7E])
    assert alaw_encode(np.array([0, 32767, -32768, -1], dtype=np.int16)) == bytes([0xD5, 0xAA, 0x2A, 0x55])
    assert ulaw_decode(bytes([0x00, 0x80, 0x7F, 0xFF])).tolist() == [-32124, 32124, 0, 0]
    assert alaw_decode(bytes([0x2A, 0xAA, 0xD5, 0x55])).tolist() == [-32256, 32256, 8, -8]


# ---------------------------------------------------------------------------------------------
# Transcoding


def test_transcode_tables_equal_decode_then_encode() -> None:
    assert transcode(ALL_CODES, "PCMU", "PCMA") == alaw_encode(ulaw_decode(ALL_CODES))
    assert transcode(ALL_CODES, "PCMA", "PCMU") == ulaw_encode(alaw_decode(ALL_CODES))
    assert g711.ULAW_TO_ALAW == bytes(linear2alaw(ulaw2linear(c)) for c in ALL_CODES)
    assert g711.ALAW_TO_ULAW == bytes(linear2ulaw(alaw2linear(c)) for c in ALL_CODES)


def test_transcode_names_are_case_insensitive_and_same_codec_is_identity() -> None:
    frame = bytes(range(160))
    assert transcode(frame, "pcmu", "pcma") == transcode(frame, "PCMU", "PCMA")
    assert transcode(frame, "PCMA", "pcma") == frame
    assert transcode(b"", "PCMU", "PCMA") == b""
    with pytest.raises(KeyError, match="G722"):
        transcode(frame, "G722", "PCMU")


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize(
    ("encode", "decode", "peak"), [(ulaw_encode, ulaw_decode, 32124), (alaw_encode, alaw_decode, 32256)]
)
def test_round_trip_error_is_bounded(encode, decode, peak: int) -> None:
    x = ALL_SAMPLES.astype(np.int64)
    y = decode(encode(ALL_SAMPLES)).astype(np.int64)
    magnitude = np.abs(x)
    error = np.abs(y - x)
    in_range = magnitude <= 32000
    # Logarithmic companding: error stays below one quantisation step, about 1/16 of the magnitude.
    assert np.all(error[in_range] <= 8 + magnitude[in_range] / 16)
    assert np.all(np.sign(y[magnitude >= 16]) == np.sign(x[magnitude >= 16]))
    # Beyond the top segment the codec saturates at its loudest reconstruction value.
    assert np.abs(y).max() == peak
    assert np.all(np.abs(y[magnitude > 32500]) == peak)


def test_decode_then_encode_is_identity_on_codes() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES
    # µ-law has two zeros (0x7F is "negative zero"); everything else maps back to itself.
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    assert again == ALL_CODES.replace(b"\x7f", b"\xff")


def test_encoding_is_monotonic() -> None:
    decoded_u = ulaw_decode(ulaw_encode(ALL_SAMPLES)).astype(np.int32)
    decoded_a = alaw_decode(alaw_encode(ALL_SAMPLES)).astype(np.int32)
    assert np.all(np.diff(decoded_u) >= 0)
    assert np.all(np.diff(decoded_a) >= 0)


def test_encode_accepts_shapes_and_other_integer_types() -> None:
    frame = (np.sin(np.arange(SAMPLES_PER_FRAME) / 8) * 12000).astype(np.int16)
    assert len(ulaw_encode(frame)) == SAMPLES_PER_FRAME
    assert ulaw_encode(frame.reshape(2, 80)) == ulaw_encode(frame)
    assert alaw_encode(frame[::2]) == alaw_encode(frame[::2].copy())
    assert ulaw_encode(frame.astype(np.int32)) == ulaw_encode(frame)
    assert ulaw_encode(np.array([100000, -100000])) == ulaw_encode(np.array([32767, -32768], dtype=np.int16))
    assert ulaw_encode(np.zeros(0, dtype=np.int16)) == b""
    with pytest.raises(TypeError, match="float"):
        ulaw_encode(frame.astype(np.float32))


def test_decode_returns_fresh_int16_arrays() -> None:
    out = ulaw_decode(bytearray(b"\x00\x80"))
    assert out.dtype == np.int16
    out[0] = 1  # a copy, not a view of the table
    assert ulaw_decode(b"\x00")[0] == -32124
    assert alaw_decode(memoryview(b"\xd5")).tolist() == [8]


# ---------------------------------------------------------------------------------------------
# Codec objects


def test_codec_registry() -> None:
    assert SAMPLES_PER_FRAME == 160
    assert FRAME_MS == 20
    pcmu, pcma = codec_for("pcmu"), codec_for("PCMA")
    assert (pcmu.name, pcmu.payload_type, pcmu.clock_rate) == ("PCMU", 0, 8000)
    assert (pcma.name, pcma.payload_type, pcma.clock_rate) == ("PCMA", 8, 8000)
    assert CODECS == {"PCMU": pcmu, "PCMA": pcma}
    assert pcmu.silence == b"\xff" * 160
    assert pcma.silence == b"\xd5" * 160
    assert pcmu.decode(pcmu.silence).tolist() == [0] * 160
    assert pcma.decode(pcma.silence).tolist() == [8] * 160
    assert pcmu.encode(ALL_SAMPLES[:160]) == ulaw_encode(ALL_SAMPLES[:160])
    assert pcma.decode(ALL_CODES).tolist() == alaw_decode(ALL_CODES).tolist()
    assert "PCMU" in repr(pcmu)


def test_unknown_codec_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match=r"unknown G\.711 codec 'opus' \(known: PCMU, PCMA\)"):
        codec_for("opus")


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError):
        g711._ULAW_DECODE[0] = 0
