"""In-band DTMF detector: Q.24 acceptance (frequency, twist, level, duration) and no talk-off on speech/music."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from callcenter.media.dtmf import DIGITS
from callcenter.media.g711 import ulaw_decode, ulaw_encode
from callcenter.media.inband import COL_FREQS, KEYPAD, ROW_FREQS, InbandDetector

FS = 8000


def amplitude(dbm0: float) -> float:
    return 32768 * 10 ** ((dbm0 - 3.14) / 20)


def tone(
    digit: str,
    ms: float,
    rng: np.random.Generator,
    level: float = -10.0,
    twist_db: float = 0.0,
    row_off: float = 0.0,
    col_off: float = 0.0,
    fs: int = FS,
) -> np.ndarray:
    """A DTMF pair, ``level`` dBm0 per tone; ``twist_db`` > 0 makes the row (low) tone the louder one."""
    row = next(r for r, keys in enumerate(KEYPAD) if digit in keys)
    col = KEYPAD[row].index(digit)
    t = np.arange(round(ms * fs / 1000)) / fs
    low = amplitude(level + twist_db / 2) * np.sin(2 * np.pi * ROW_FREQS[row] * (1 + row_off) * t + rng.uniform(0, 7))
    high = amplitude(level - twist_db / 2) * np.sin(2 * np.pi * COL_FREQS[col] * (1 + col_off) * t + rng.uniform(0, 7))
    return low + high


def silence(ms: float, fs: int = FS) -> np.ndarray:
    return np.zeros(round(ms * fs / 1000))


def noisy(x: np.ndarray, dbm0: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0, amplitude(dbm0) / np.sqrt(2), len(x))


def pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def detect(x: np.ndarray, block: int = 160, detector: InbandDetector | None = None) -> str:
    detector = detector or InbandDetector()
    samples = pcm16(x) if x.dtype != np.int16 else x
    return "".join(d.digit for i in range(0, len(samples), block) for d in detector.feed(samples[i : i + block]))


def press(digit: str, rng: np.random.Generator, ms: float = 60, noise_dbm0: float = -50, **kwargs: float) -> str:
    """One key press at a random position in the first block, with white noise around it."""
    x = np.concatenate([silence(rng.uniform(0, 20)), tone(digit, ms, rng, **kwargs), silence(60)])
    return detect(noisy(x, noise_dbm0, rng))


# --- acceptance ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("digit", list(DIGITS))
def test_every_digit_in_noise(digit: str) -> None:
    rng = np.random.default_rng(DIGITS.index(digit))
    for level, noise_dbm0 in [(-5, -40), (-20, -37), (-28, -45)]:  # S/N 20+ dB, 15 dB (two tones), 15+ dB
        for _ in range(3):
            found = press(digit, rng, ms=50, level=level, noise_dbm0=noise_dbm0)
            assert found == digit, (level, noise_dbm0)


def test_digit_reports_source_and_duration() -> None:
    rng = np.random.default_rng(1)
    detector = InbandDetector()
    samples = pcm16(np.concatenate([tone("5", 200, rng), silence(60)]))
    digits = [d for i in range(0, len(samples), 160) for d in detector.feed(samples[i : i + 160])]
    assert len(digits) == 1
    assert (digits[0].digit, digits[0].source) == ("5", "inband")
    assert 35 <= digits[0].duration_ms <= 60
    assert detector.stats.digits == 1


@pytest.mark.parametrize("offset", [0.015, -0.015])
def test_frequency_within_1_5_percent_is_accepted(offset: float) -> None:
    rng = np.random.default_rng(2)
    for digit in DIGITS:
        assert press(digit, rng, row_off=offset) == digit
        assert press(digit, rng, col_off=offset) == digit
        assert press(digit, rng, row_off=offset, col_off=-offset) == digit


@pytest.mark.parametrize("offset", [0.035, -0.035, 0.05])
def test_frequency_off_by_3_5_percent_is_rejected(offset: float) -> None:
    rng = np.random.default_rng(3)
    for digit in DIGITS:
        assert press(digit, rng, ms=100, row_off=offset) == ""
        assert press(digit, rng, ms=100, col_off=offset) == ""
        assert press(digit, rng, ms=100, row_off=offset, col_off=offset) == ""


@pytest.mark.parametrize("twist", [7.0, -3.0])
def test_twist_within_limits_is_accepted(twist: float) -> None:
    rng = np.random.default_rng(4)
    for digit in DIGITS:
        assert press(digit, rng, level=-15, twist_db=twist) == digit


@pytest.mark.parametrize("twist", [10.0, -6.0])
def test_twist_beyond_limits_is_rejected(twist: float) -> None:
    """Normal twist (row louder) up to 8 dB, reverse twist (column louder) up to 4 dB."""
    rng = np.random.default_rng(5)
    for digit in DIGITS:
        assert press(digit, rng, level=-15, twist_db=twist) == ""


def test_minimum_level() -> None:
    rng = np.random.default_rng(6)
    for digit in "1590*#":
        assert press(digit, rng, level=-30, noise_dbm0=-55) == digit
        assert press(digit, rng, level=-40, noise_dbm0=-65) == ""
        assert press(digit, rng, level=-3.5, noise_dbm0=-40) == digit  # the pair peaks just below full scale


def test_40_ms_is_accepted_at_every_alignment() -> None:
    rng = np.random.default_rng(7)
    for lead in range(0, 104, 3):
        digit = DIGITS[lead % 16]
        x = np.concatenate([silence(20), np.zeros(lead), tone(digit, 40, rng), silence(60)])
        assert detect(noisy(x, -45, rng)) == digit, lead


@pytest.mark.parametrize("ms", [20, 23, 25])
def test_short_tones_are_rejected_at_every_alignment(ms: int) -> None:
    rng = np.random.default_rng(8)
    for lead in range(0, 104, 3):
        x = np.concatenate([silence(20), np.zeros(lead), tone(DIGITS[lead % 16], ms, rng), silence(60)])
        assert detect(noisy(x, -55, rng)) == "", lead


def test_sequence_with_50_ms_gaps() -> None:
    rng = np.random.default_rng(9)
    x = np.concatenate([part for d in "1234567890*#" for part in (tone(d, 50, rng, level=-12), silence(50))])
    assert detect(noisy(x, -45, rng)) == "1234567890*#"


def test_same_digit_repeated_with_short_pauses() -> None:
    rng = np.random.default_rng(10)
    x = np.concatenate([part for _ in range(4) for part in (tone("1", 45, rng), silence(40))])
    assert detect(noisy(x, -45, rng)) == "1111"


def test_a_10_ms_break_does_not_make_a_second_digit() -> None:
    rng = np.random.default_rng(11)
    for digit in DIGITS:
        x = np.concatenate([tone(digit, 100, rng), silence(10), tone(digit, 100, rng), silence(60)])
        assert detect(noisy(x, -45, rng)) == digit


def test_long_press_is_one_digit() -> None:
    rng = np.random.default_rng(12)
    assert detect(noisy(np.concatenate([tone("0", 3000, rng), silence(60)]), -40, rng)) == "0"


def test_any_block_size() -> None:
    rng = np.random.default_rng(13)
    x = pcm16(np.concatenate([part for d in DIGITS for part in (tone(d, 45, rng), silence(45))]))
    assert detect(x) == DIGITS
    assert detect(x, block=1) == DIGITS
    assert detect(x, block=1000) == DIGITS
    detector, digits, i = InbandDetector(), "", 0
    while i < len(x):
        size = int(rng.integers(1, 400))
        digits += "".join(d.digit for d in detector.feed(x[i : i + size]))
        i += size
    assert digits == DIGITS


def test_through_g711_ulaw() -> None:
    rng = np.random.default_rng(14)
    x = np.concatenate([part for d in DIGITS for part in (tone(d, 50, rng, level=-20), silence(50))])
    assert detect(ulaw_decode(ulaw_encode(pcm16(noisy(x, -50, rng))))) == DIGITS


def test_16_khz() -> None:
    rng = np.random.default_rng(15)
    x = np.concatenate([part for d in "159#D" for part in (tone(d, 45, rng, fs=16000), silence(50, 16000))])
    assert detect(x, block=320, detector=InbandDetector(16000)) == "159#D"


def test_reset_forgets_the_press() -> None:
    rng = np.random.default_rng(16)
    detector = InbandDetector()
    samples = pcm16(tone("7", 300, rng))
    assert detect(samples[:800], detector=detector) == "7"
    detector.reset()
    assert detect(samples[800:], detector=detector) == "7"


# --- no talk-off -------------------------------------------------------------------------------------------

VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (660, 1720, 2410), (300, 870, 2240)]
VOWELS += [(640, 1190, 2390), (490, 1350, 1690), (700, 1220, 2600), (400, 1000, 2500), (600, 1300, 2500)]


def resonance(f: np.ndarray, centre: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gain of a two-pole formant resonator (unity at 0 Hz)."""
    s, sigma, omega = 2j * np.pi * f, np.pi * bandwidth, 2 * np.pi * centre
    return np.abs((sigma**2 + omega**2) / ((s + sigma) ** 2 + omega**2))


def speech_like(seconds: float, rng: np.random.Generator, level: float, bandwidths: tuple[int, ...]) -> np.ndarray:
    """Harmonics of a 120-220 Hz gliding F0 through three moving formants, syllable envelope, white noise."""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    f0 = np.interp(t, np.linspace(0, seconds, int(seconds * 4) + 2), rng.uniform(120, 220, int(seconds * 4) + 2))
    phase = 2 * np.pi * np.cumsum(f0) / FS
    starts = np.cumsum(rng.uniform(0.08, 0.25, int(seconds / 0.08) + 1))
    targets = np.array([VOWELS[i] for i in rng.integers(len(VOWELS), size=len(starts))], dtype=float)
    formants = [np.interp(t, starts, targets[:, j]) for j in range(3)]
    x = np.zeros(n)
    for k in range(1, 33):
        gain = (k * f0 < 3900) / k  # -6 dB/octave source + radiation
        for centre, bandwidth in zip(formants, bandwidths, strict=True):
            gain = gain * resonance(k * f0, centre, bandwidth)
        x += gain * np.sin(k * phase)
    x *= np.clip(1.3 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 7)), 0, 1)
    x *= amplitude(level) / np.sqrt(2) / np.sqrt(np.mean(x**2))
    return noisy(x, level - 25, rng)


def chords(seconds: float, rng: np.random.Generator, level: float) -> np.ndarray:
    """Triads and sevenths over four octaves (including notes near DTMF tones), five harmonics, decaying."""
    shapes = [(0, 4, 7), (0, 3, 7), (0, 4, 7, 10), (0, 4, 7, 11), (0, 3, 7, 10), (0, 5, 7), (0, 4, 8)]
    parts = []
    while sum(map(len, parts)) < seconds * FS:
        t = np.arange(int(rng.uniform(0.2, 0.8) * FS)) / FS
        root = int(rng.integers(48, 80))
        part = np.zeros(len(t))
        for interval in shapes[rng.integers(len(shapes))]:
            f = 440 * 2 ** ((root + interval - 69) / 12)
            for h in range(1, 6):
                if h * f < 3900:
                    part += 0.6 ** (h - 1) * np.sin(2 * np.pi * h * f * t + rng.uniform(0, 7))
        parts.append(part * np.exp(-t * rng.uniform(0.5, 4)))
    x = np.concatenate(parts)
    return x * amplitude(level) / np.sqrt(2) / np.sqrt(np.mean(x**2))


@pytest.mark.parametrize("bandwidths", [(70, 90, 150), (40, 50, 80)])
def test_speech_like_signal_makes_no_digits(bandwidths: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(bandwidths))
    detector = InbandDetector()
    for level in (-25, -15, -5):
        assert detect(speech_like(20, rng, level, bandwidths), detector=detector) == ""
    assert detector.stats.windows > 3 * 20 * 150


def test_music_chords_make_no_digits() -> None:
    rng = np.random.default_rng(21)
    for level in (-25, -15, -5):
        assert detect(chords(20, rng, level)) == ""


def test_digits_right_after_speech_are_found() -> None:
    rng = np.random.default_rng(22)
    x = np.concatenate([speech_like(3, rng, -15, (70, 90, 150)), silence(100), tone("3", 60, rng), silence(60)])
    assert detect(x) == "3"


def espeak(tmp_path: Path, voice: str, text: str) -> np.ndarray:
    """Real synthetic speech at 8 kHz (espeak-ng and sox come with tools/setup --test)."""
    assert shutil.which("espeak-ng") and shutil.which("sox"), "run tools/setup --test (espeak-ng, sox)"
    wide, narrow = tmp_path / f"{voice}.wav", tmp_path / f"{voice}-8k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wide), text], check=True, capture_output=True)
    subprocess.run(["sox", "-v", "0.8", str(wide), "-r", "8000", "-c", "1", "-b", "16", str(narrow)], check=True)
    with wave.open(str(narrow)) as w:
        assert w.getframerate() == FS
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


@pytest.mark.parametrize(
    ("voice", "text"),
    [
        ("cmn", "一二三四五六七八九十。您好，请按一号键呼叫护理员，按二号键联系家人。零，星号，井号。"),
        ("en", "Hello, please press one to call the nurse. Seven, eight, nine, zero, star, pound."),
    ],
)
def test_synthetic_speech_makes_no_digits(tmp_path: Path, voice: str, text: str) -> None:
    speech = espeak(tmp_path, voice, text)
    assert len(speech) > 5 * FS
    for gain in (0.1, 0.4, 1.0):
        assert detect(pcm16(speech * gain)) == ""
    rng = np.random.default_rng(23)
    assert detect(np.concatenate([speech, silence(100), tone("8", 60, rng), silence(60)])) == "8"
