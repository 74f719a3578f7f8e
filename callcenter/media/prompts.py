"""Prompts: audio converted once to 8 kHz mono int16, cached, and pre-encoded into 20 ms G.711 frames.

WAV files of any rate, sample width (8/16/24/32-bit PCM, also 32/64-bit float) and channel count are read,
mixed down to mono (channel average) and resampled with a Kaiser-windowed-sinc polyphase FIR (anti-aliased:
everything above ~3.6 kHz is removed before decimation). The result is cached in memory and on disk; the
disk file name is a hash of (resolved path, size, mtime_ns), never a caller string, so editing the WAV
invalidates it. :meth:`Prompt.frames` encodes once per codec and keeps the frames, so the media tick only
indexes a list.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import struct
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from callcenter.media.g711 import SAMPLES_PER_FRAME, codec_for

RATE = 8000
_CONVERTER_VERSION = 1  # part of the disk-cache key: bump when the conversion changes
_ZERO_CROSSINGS = 32  # filter half-length, in periods of the lower of the two rates
_ROLLOFF = 0.9  # cut-off as a fraction of the lower Nyquist (3.6 kHz for 8 kHz output)
_KAISER_BETA = 8.6  # ~80 dB stop band
_EXTENSIBLE = 0xFFFE
_PCM, _FLOAT = 1, 3


class PromptError(ValueError):
    """A prompt file that cannot be used; the message names the file."""


class Prompt:
    """8 kHz mono int16 audio plus its pre-encoded 20 ms frames, one list per codec (built on first use)."""

    def __init__(self, pcm: np.ndarray, name: str) -> None:
        pcm = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
        pcm.setflags(write=False)  # shared by every call that plays it
        self.pcm = pcm
        self.name = name
        self._frames: dict[str, list[bytes]] = {}

    @classmethod
    def from_pcm(cls, pcm: np.ndarray, name: str) -> Prompt:
        """Generated 8 kHz audio: int16 as is, floats taken as full scale ±1.0 (clipped)."""
        arr = np.asarray(pcm)
        if arr.ndim != 1:
            raise PromptError(f"{name}: PCM must be one-dimensional (mono), got shape {arr.shape}")
        if arr.dtype.kind == "f":
            arr = np.round(np.clip(arr, -1.0, 1.0) * 32767.0)
        elif arr.dtype.kind not in "iu":
            raise PromptError(f"{name}: PCM must be integers or floats, got {arr.dtype}")
        return cls(np.clip(arr, -32768, 32767).astype(np.int16), name)

    @property
    def duration(self) -> float:
        return len(self.pcm) / RATE

    def frames(self, codec_name: str) -> list[bytes]:
        """The prompt as 160-byte frames in ``codec_name`` ("PCMU"/"PCMA"); the last one padded with silence."""
        codec = codec_for(codec_name)
        cached = self._frames.get(codec.name)
        if cached is None:
            n = -(-len(self.pcm) // SAMPLES_PER_FRAME)
            padded = np.zeros(n * SAMPLES_PER_FRAME, dtype=np.int16)
            padded[: len(self.pcm)] = self.pcm
            encoded = codec.encode(padded)
            step = len(encoded) // n if n else 0
            cached = [encoded[i * step : (i + 1) * step] for i in range(n)]
            self._frames[codec.name] = cached
        return cached

    def __repr__(self) -> str:
        return f"Prompt({self.name!r}, {self.duration:.2f}s)"


class PromptCache:
    """Loads WAV prompts once: memory first, then ``cache_dir``, then a real conversion."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self._memory: dict[str, Prompt] = {}
        self.conversions = 0  # real conversions done (the tests check the disk cache with it)

    def load(self, path: Path) -> Prompt:
        """The prompt for the WAV at ``path``. A first conversion costs ~0.2 s per minute of 48 kHz audio:
        load prompts at start-up or through a thread, not inside the media tick."""
        path = Path(path)
        try:
            resolved = path.resolve(strict=True)
            st = resolved.stat()
        except (OSError, RuntimeError) as exc:
            raise PromptError(f"{path}: cannot open prompt ({exc.__class__.__name__}: {exc})") from exc
        if not resolved.is_file():
            raise PromptError(f"{path}: not a regular file")
        key = hashlib.sha256(f"{_CONVERTER_VERSION}\0{resolved}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
        prompt = self._memory.get(key)
        if prompt is not None:
            return prompt
        cache_file = self.cache_dir / f"{key}.npy"
        pcm = _read_cache(cache_file)
        if pcm is None:
            pcm = convert_wav(resolved)
            self.conversions += 1
            _write_cache(cache_file, pcm)
        prompt = Prompt(pcm, path.name)
        self._memory[key] = prompt
        return prompt


def _read_cache(cache_file: Path) -> np.ndarray | None:
    try:
        pcm = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # absent or damaged: convert again
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        return None
    return pcm


def _write_cache(cache_file: Path, pcm: np.ndarray) -> None:
    """Atomic (temp file + rename) so a crash never leaves a half-written cache entry; failures are not fatal."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, pcm.astype("<i2"), allow_pickle=False)
            os.replace(tmp, cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # read-only cache directory: still works, just converts again next start


# --------------------------------------------------------------------------------------------- WAV reading


def convert_wav(path: Path) -> np.ndarray:
    """Read any PCM WAV and return 8 kHz mono int16."""
    mono, rate = read_wav(path)
    out = resample(mono, rate, RATE)
    return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(mono float64 samples in [-1, 1), sample rate). Raises :class:`PromptError` naming the file."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
            kind = _PCM
    except FileNotFoundError as exc:
        raise PromptError(f"{path}: file not found") from exc
    except OSError as exc:
        raise PromptError(f"{path}: cannot read ({exc})") from exc
    except EOFError as exc:
        raise PromptError(f"{path}: truncated WAV header") from exc
    except wave.Error as exc:
        # The 3.11 wave module only knows plain PCM; WAVE_FORMAT_EXTENSIBLE (sox/Audacity for 24-bit or
        # multichannel) and IEEE float are read by the small chunk walker below, the rest is refused.
        channels, width, rate, kind, raw = _read_other_wav(path, str(exc))
    if channels < 1 or rate < 1000 or width not in (1, 2, 3, 4, 8):
        raise PromptError(f"{path}: unsupported WAV ({channels} channels, {width * 8}-bit, {rate} Hz)")
    frame = channels * width
    raw = raw[: len(raw) - len(raw) % frame]
    if not raw:
        raise PromptError(f"{path}: WAV has no audio data")
    samples = _samples(raw, width, kind, path)
    return samples.reshape(-1, channels).mean(axis=1), rate


def _samples(raw: bytes, width: int, kind: int, path: Path) -> np.ndarray:
    if kind == _FLOAT:
        if width not in (4, 8):
            raise PromptError(f"{path}: {width * 8}-bit float WAV is not supported")
        return np.frombuffer(raw, dtype=f"<f{width}").astype(np.float64)
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2") / 32768.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - 0x1000000, v)
        return v / 8388608.0
    if width == 4:
        return np.frombuffer(raw, dtype="<i4") / 2147483648.0
    raise PromptError(f"{path}: {width * 8}-bit integer WAV is not supported")


def _read_other_wav(path: Path, reason: str) -> tuple[int, int, int, int, bytes]:
    """Chunk walker for what ``wave`` refuses: returns (channels, width, rate, kind, data) or raises."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptError(f"{path}: cannot read ({exc})") from exc
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PromptError(f"{path}: not a WAV file ({reason})")
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = chunk
        elif cid == b"data":
            body = chunk
            break
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16 or body is None:
        raise PromptError(f"{path}: WAV without fmt or data chunk ({reason})")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
    if tag not in (_PCM, _FLOAT):
        raise PromptError(
            f"{path}: compressed WAV format 0x{tag:04x} is not supported; convert it to PCM "
            f"(e.g. sox in.wav -e signed-integer -b 16 out.wav)"
        )
    if bits % 8:
        raise PromptError(f"{path}: {bits}-bit samples are not supported")
    return channels, bits // 8, rate, tag, body


# --------------------------------------------------------------------------------------------- resampling


@functools.lru_cache(maxsize=16)
def _polyphase(up: int, down: int) -> np.ndarray:
    """Low-pass prototype split into ``up`` phases, each reversed so a phase is a dot product with a window."""
    m = max(up, down)
    half = _ZERO_CROSSINGS * m
    n = np.arange(-half, half + 1, dtype=np.float64)
    h = (_ROLLOFF / m) * np.sinc(_ROLLOFF * n / m) * np.kaiser(len(n), _KAISER_BETA) * up
    taps = -(-len(h) // up)
    h = np.concatenate([h, np.zeros(taps * up - len(h))])
    return np.ascontiguousarray(h.reshape(taps, up).T[:, ::-1])  # [phase, tap]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Rational resampling ``rate_in`` → ``rate_out`` with a windowed-sinc polyphase FIR (zero-phase delay)."""
    x = np.asarray(x, dtype=np.float64)
    if rate_in == rate_out or len(x) == 0:
        return x.copy()
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    poly = _polyphase(up, down)
    taps = poly.shape[1]
    delay = _ZERO_CROSSINGS * max(up, down)  # centre of the prototype, in up-sampled samples
    n_out = -(-len(x) * up // down)
    xp = np.concatenate([np.zeros(taps - 1), x, np.zeros(delay // up + taps + 2)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, taps)
    out = np.empty(n_out)
    block = max(1, 2_000_000 // taps)
    # Output n = q*up + r reads the window starting at q*down + c_r with phase p_r: one strided matmul per r.
    for r in range(min(up, n_out)):
        c, p = divmod(r * down + delay, up)
        count = len(range(r, n_out, up))
        for q0 in range(0, count, block):
            q1 = min(count, q0 + block)
            out[r + q0 * up : r + q1 * up : up] = windows[c + q0 * down : c + q1 * down : down] @ poly[p]
    return out


# --------------------------------------------------------------------------------------------- generated audio


def _fade(sig: np.ndarray, seconds: float) -> np.ndarray:
    n = min(len(sig) // 2, int(seconds * RATE))
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        sig[:n] *= ramp
        sig[-n:] *= ramp[::-1]
    return sig


def tone(freqs: Sequence[float], seconds: float, level_dbfs: float = -12) -> Prompt:
    """Sum of sines (e.g. ring-back 440+480) whose peak is ``level_dbfs``, with 5 ms fades against clicks."""
    if seconds <= 0 or not freqs:
        raise PromptError(f"tone: need frequencies and a positive duration, got {list(freqs)} / {seconds}")
    if any(not 0 < f < RATE / 2 for f in freqs):
        raise PromptError(f"tone: frequencies must be between 0 and {RATE // 2} Hz, got {list(freqs)}")
    t = np.arange(int(round(seconds * RATE))) / RATE
    sig = np.sum([np.sin(2 * np.pi * f * t) for f in freqs], axis=0)
    peak = float(np.max(np.abs(sig))) or 1.0
    sig = _fade(sig * (10 ** (level_dbfs / 20) / peak), 0.005)
    return Prompt.from_pcm(sig, "tone:" + "+".join(f"{f:g}" for f in freqs))


def _note(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


@functools.lru_cache(maxsize=1)
def hold_music() -> Prompt:
    """An 8 s seamless loop: soft pad chords (C, Am, F, G) with a slow music-box arpeggio, about -20 dBFS peak.

    Pure sines inside the telephone band, raised-cosine cross-fades between chords and gently decaying
    arpeggio notes so nothing clicks or buzzes; it is generated here, so no audio file and no rights issue.
    """
    chords = [(60, 64, 67), (60, 64, 69), (60, 65, 69), (62, 67, 71)]  # C, Am, F, G; nothing under 260 Hz
    bar = 2 * RATE
    total = bar * len(chords)
    out = np.zeros(total)
    xfade = int(0.4 * RATE)
    t_pad = np.arange(bar + xfade) / RATE
    env = np.ones(bar + xfade)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, xfade))
    env[:xfade], env[-xfade:] = ramp, ramp[::-1]
    step = bar // 4
    t_note = np.arange(bar) / RATE  # each arpeggio note rings for a whole bar, decaying
    decay = np.exp(-t_note * 2.2) * np.minimum(1.0, t_note / 0.01)
    for i, chord in enumerate(chords):
        pad = sum(np.sin(2 * np.pi * _note(m) * t_pad) + 0.15 * np.sin(4 * np.pi * _note(m) * t_pad) for m in chord)
        start = i * bar - xfade // 2
        idx = (start + np.arange(len(pad))) % total  # wrap around so the loop point is seamless
        np.add.at(out, idx, 0.22 * pad * env)
        for j, m in enumerate((chord[0] + 12, chord[1] + 12, chord[2] + 12, chord[1] + 12)):
            idx = (i * bar + j * step + np.arange(bar)) % total
            np.add.at(out, idx, 0.35 * np.sin(2 * np.pi * _note(m) * t_note) * decay)
    out *= 10 ** (-20 / 20) / float(np.max(np.abs(out)))
    return Prompt.from_pcm(out, "hold-music")
