"""In-band DTMF detection (ITU-T Q.23 frequencies, Q.24 acceptance) on linear PCM.

Analysis windows of 104 samples (13 ms at 8 kHz, DFT bins 77 Hz wide) hop by 52 samples. Every window gets
two DFTs at the eight DTMF frequencies, both computed for all the windows of a block as one small matrix
product (what Goertzel filters compute, vectorised): a rectangular one, whose narrow main lobe separates the
row tones 73-89 Hz apart, and a Hann one, whose low leakage separates the columns (127 Hz or more apart)
even next to a loud row tone and gives clean levels and tone phases.

A window holds a digit when

* its energy is above the floor and both tones are above ``min_level_dbm0`` (default -34 dBm0 per tone),
* the best row and the best column tone are each :data:`RELATIVE_PEAK_DB` above the other tones of their group,
* its twist is roughly right (limits plus :data:`WINDOW_TWIST_SLACK_DB`; the exact check comes later),
* the two tones carry at least :data:`WINDOW_TONE_FRACTION` of the window's energy.

:data:`MIN_WINDOWS` consecutive windows with the same digit make a candidate: a 40 ms tone always makes one,
a tone of 27 ms or less never does. The candidate is verified on its inner windows (the outer ones may hold
the tone's edges):

* frequency: the phase advance of the Hann DFT from window to window measures each tone's frequency to a few
  Hz, and a tone more than :data:`FREQ_TOLERANCE` off nominal rejects the press (Q.24: +-1.5 % must be
  accepted, +-3.5 % rejected; a 13 ms window's bin is too wide to tell 3.5 % from 0 % at 697 Hz by level);
* twist, on levels averaged over the windows and corrected for the measured frequency offset: the row (low)
  tone at most ``normal_twist_db`` (8 dB) above the column (high) tone, the column tone at most
  ``reverse_twist_db`` (4 dB) above the row tone (spandsp/Asterisk naming); these limits are always accepted,
  twist :data:`TWIST_MARGIN_DB` beyond them is always rejected;
* purity, the talk-off guards: the two tones must carry :data:`FINAL_TONE_FRACTION` of the energy, and no third
  tone may stand out of the rest of the spectrum (:data:`TONAL_DB` above its median) within
  :data:`OTHER_TONE_DB` of the pair. Voiced speech whose harmonics happen to sit on a row and a column
  frequency still has its other harmonics, music its other notes and overtones; white noise has no peaks.

One digit is reported per key press, as soon as it is verified (``duration_ms`` is the tone length seen so
far, about 40 ms); the press ends after :data:`END_WINDOWS` windows without that digit, so a break of up to
10 ms inside a tone does not make a second digit and a 40 ms pause always does.

Cost (160-sample blocks): about 0.2 ms CPU per second of silence, 0.4 ms per second of speech, and 0.7 ms per
second of DTMF plus about 40 us per verified candidate.
"""

from __future__ import annotations

import cmath
import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from callcenter.media.dtmf import DtmfDigit

ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
"""KEYPAD[row][column]."""

HOP_8K = 52
"""Hop at 8 kHz; windows are two hops long (104 samples, bins 77 Hz apart)."""
MIN_WINDOWS = 5
"""At least 5: the checks need three inner windows."""
END_WINDOWS = 4
RELATIVE_PEAK_DB = 8.0
TWIST_MARGIN_DB = 1.0
"""Twist is rejected this far beyond the limits (which must be accepted), so noise does not reject 8 dB."""
WINDOW_TWIST_SLACK_DB = 3.0
"""Windows pass twist with this margin; the candidate's twist is then checked exactly on averaged levels."""
WINDOW_TONE_FRACTION = 0.70
FINAL_TONE_FRACTION = 0.90
FREQ_TOLERANCE = 0.025
TONE_MASK_HZ = 100.0
TONAL_DB = 16.0
OTHER_TONE_DB = 20.0
DBM0_FULL_SCALE_SINE = 3.14
"""A full-scale 16-bit sine is +3.14 dBm0 (G.711)."""


@dataclass
class InbandStats:
    """Counters for logs and metrics."""

    digits: int = 0
    off_frequency: int = 0
    """Candidates (long enough, right levels) rejected by the frequency check."""
    twisted: int = 0
    """Candidates rejected for twist (measured on the inner windows, corrected for frequency offset)."""
    impure: int = 0
    """Candidates rejected because the two tones carry too little of the energy (talk-off)."""
    other_tones: int = 0
    """Candidates rejected because a third tone (a voice's harmonics, a chord) came with the pair."""
    windows: int = 0


class _Window(NamedTuple):
    spectrum: np.ndarray
    """Rectangular cos, sin, Hann cos, sin parts of the DFT at the eight frequencies (32 values)."""
    energy: float
    samples: np.ndarray


class InbandDetector:
    """DTMF detector for one call leg: ``feed`` int16 mono PCM of any block size, get digits."""

    def __init__(
        self,
        sample_rate: int = 8000,
        min_level_dbm0: float = -34.0,
        normal_twist_db: float = 8.0,
        reverse_twist_db: float = 4.0,
    ) -> None:
        if sample_rate < 4000:
            raise ValueError(f"sample rate too low for DTMF: {sample_rate}")
        self.sample_rate = sample_rate
        self.stats = InbandStats()
        hop = self._hop = max(1, round(HOP_8K * sample_rate / 8000))
        size = self._size = 2 * hop
        self._omega, self._hann, self._kernel = _kernel(sample_rate, hop)
        amplitude = 32768.0 * 10 ** ((min_level_dbm0 - DBM0_FULL_SCALE_SINE) / 20)
        self._min_power = (amplitude * size / 2) ** 2
        self._min_energy = amplitude**2 * size
        self._normal_twist = 10 ** ((normal_twist_db + TWIST_MARGIN_DB) / 10)
        self._reverse_twist = 10 ** ((reverse_twist_db + TWIST_MARGIN_DB) / 10)
        self._window_normal_twist = self._normal_twist * 10 ** (WINDOW_TWIST_SLACK_DB / 10)
        self._window_reverse_twist = self._reverse_twist * 10 ** (WINDOW_TWIST_SLACK_DB / 10)
        self._peak = 10 ** (RELATIVE_PEAK_DB / 10)
        self._fraction = WINDOW_TONE_FRACTION * size / 2
        self._n = np.arange(size)
        # _other_tones looks at the inner windows of a candidate as one segment
        segment = (MIN_WINDOWS - 3) * hop + size
        self._taper = np.sin(np.pi * (np.arange(segment) + 0.5) / segment) ** 2
        self._nfft = 1 << (2 * segment - 1).bit_length()
        self._fft_freqs = np.arange(self._nfft // 2 + 1) * (sample_rate / self._nfft)
        self._fft_band = (self._fft_freqs > 60) & (self._fft_freqs < 4000)
        self._buf = np.zeros(0, dtype=np.float32)
        self._run_digit: int | None = None
        self._run_len = 0
        self._run: list[_Window] = []
        self._held: int | None = None
        self._misses = 0

    def reset(self) -> None:
        """Forget buffered samples and any press in progress."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._run_digit = None
        self._run_len = 0
        self._run = []
        self._held = None
        self._misses = 0

    def feed(self, pcm: np.ndarray) -> list[DtmfDigit]:
        """Analyse the next samples; returns the key presses recognised in them."""
        buf = np.concatenate((self._buf, pcm), dtype=np.float32)
        hop = self._hop
        halves = len(buf) // hop
        if halves < 2:
            self._buf = buf
            return []
        self._buf = buf[(halves - 1) * hop :]
        blocks = buf[: halves * hop].reshape(halves, hop)
        squares = np.einsum("ij,ij->i", blocks, blocks)
        window_energies = squares[:-1] + squares[1:]
        if window_energies.max() < self._min_energy:  # quiet: nothing to analyse, presses end
            self.stats.windows += len(window_energies)
            for _ in range(len(window_energies) if self._run_digit is not None or self._held is not None else 0):
                self._step(None, None)
            return []
        energies = window_energies.tolist()
        size = self._size
        parts = blocks @ self._kernel
        spectra = parts[:-1, :32] + parts[1:, 32:]
        powers = spectra * spectra
        rect = (powers[:, 0:8] + powers[:, 8:16]).tolist()
        hann = (powers[:, 16:24] + powers[:, 24:32]).tolist()
        self.stats.windows += len(energies)
        out: list[DtmfDigit] = []
        for index, energy in enumerate(energies):
            digit = self._classify(energy, rect[index], hann[index])
            if digit is None and self._run_digit is None and self._held is None:
                continue
            window = None
            if digit is not None and (digit != self._run_digit or self._run_len < MIN_WINDOWS):  # kept for _verify
                window = _Window(spectra[index], energy, buf[index * hop : index * hop + size])
            if self._step(digit, window):
                assert digit is not None
                row, col = divmod(digit, 4)
                self.stats.digits += 1
                out.append(DtmfDigit(KEYPAD[row][col], self._duration_ms(), "inband"))
        return out

    def _classify(self, energy: float, rect: list[float], hann: list[float]) -> int | None:
        """The digit (row * 4 + column) one window holds, or None."""
        if energy < self._min_energy:
            return None
        # Rows are 73-89 Hz apart: the rectangular DFT's narrow main lobe separates them. Columns are 127 Hz
        # or more apart, and the Hann DFT keeps a loud row tone from leaking into them. Levels, twist and
        # purity are read from the Hann DFT, which loses little off-centre and leaks nothing across groups.
        rows = rect[:4]
        cols = hann[4:]
        row_power = max(rows)
        col_level = max(cols)
        row = rows.index(row_power)
        col = cols.index(col_level)
        row_level = hann[row]
        if row_level + col_level < self._fraction * energy:
            return None
        if row_level < self._min_power or col_level < self._min_power:
            return None
        if row_level > col_level * self._window_normal_twist or col_level > row_level * self._window_reverse_twist:
            return None
        row_limit = row_power / self._peak
        col_limit = col_level / self._peak
        for i in range(4):
            if (i != row and rows[i] > row_limit) or (i != col and cols[i] > col_limit):
                return None
        return row * 4 + col

    def _step(self, digit: int | None, window: _Window | None) -> bool:
        """Advance the press state machine by one window; True when ``digit`` is to be reported now."""
        if digit is None or digit != self._run_digit:
            self._run_digit = digit
            self._run_len = 0
            self._run = []
        if digit is not None:
            self._run_len += 1
            if window is not None:
                self._run.append(window)
        if self._held is not None:
            if digit == self._held:
                self._misses = 0
                return False
            self._misses += 1
            if self._misses >= END_WINDOWS:
                self._held = None
        if digit is None or self._run_len < MIN_WINDOWS:
            return False
        self._held = digit  # reported or rejected, this press is decided
        self._misses = 0
        return self._verify(digit)

    def _verify(self, digit: int) -> bool:
        """Frequency and purity checks of a candidate on its inner windows (the outer ones may hold edges)."""
        inner = self._run[1:-1]
        energies = []
        frequencies = []
        for tone in divmod(digit, 4)[0], 4 + digit % 4:
            values = [complex(w.spectrum[16 + tone], -w.spectrum[24 + tone]) for w in inner]
            delta = self._offset(values, tone)
            if abs(delta) > FREQ_TOLERANCE * self._omega[tone]:
                self.stats.off_frequency += 1
                return False
            frequencies.append((self._omega[tone] + delta) * self.sample_rate / (2 * math.pi))
            gain = abs(np.exp(1j * delta * self._n) @ self._hann) / (self._size / 2)
            energies.append(sum(abs(v) ** 2 for v in values) / gain**2 * 2 / self._size)
        row_energy, col_energy = energies
        if row_energy > col_energy * self._normal_twist or col_energy > row_energy * self._reverse_twist:
            self.stats.twisted += 1
            return False
        if row_energy + col_energy < FINAL_TONE_FRACTION * sum(w.energy for w in inner):
            self.stats.impure += 1
            return False
        if self._other_tones(inner, frequencies):
            self.stats.other_tones += 1
            return False
        return True

    def _other_tones(self, inner: list[_Window], frequencies: list[float]) -> bool:
        """Whether the inner windows hold a third tone (a harmonic of a voice, a note) loud enough to matter.

        A peak counts when it stands :data:`TONAL_DB` above the spectrum's median (white noise does not) and is
        within :data:`OTHER_TONE_DB` of the DTMF tones' mean level.
        """
        hop = self._hop
        segment = np.concatenate([w.samples[:hop] for w in inner[:-1]] + [inner[-1].samples])
        spectrum = np.abs(np.fft.rfft(segment * self._taper, self._nfft)) ** 2
        freqs = self._fft_freqs
        rest = self._fft_band.copy()
        levels = []
        for frequency in frequencies:
            near = np.abs(freqs - frequency) < TONE_MASK_HZ
            levels.append(float(spectrum[near].max()))
            rest &= ~near
        others = spectrum[rest]
        peak = float(others.max())
        floor = float(np.partition(others, len(others) // 2)[len(others) // 2])  # the median
        tonal = peak > floor * 10 ** (TONAL_DB / 10)
        return tonal and peak > math.sqrt(levels[0] * levels[1]) * 10 ** (-OTHER_TONE_DB / 10)

    def _offset(self, values: list[complex], tone: int) -> float:
        """Frequency error (rad/sample) of ``tone``, from the Hann DFT's phase advance across windows."""
        omega = self._omega[tone]
        hop = self._hop
        lag1 = sum(b * a.conjugate() for a, b in zip(values, values[1:], strict=False))
        lag2 = sum(b * a.conjugate() for a, b in zip(values, values[2:], strict=False))
        coarse = cmath.phase(lag1 * cmath.exp(-1j * omega * hop)) / hop
        if lag2 == 0:
            return coarse
        fine = cmath.phase(lag2 * cmath.exp(-2j * omega * hop))
        turns = round((coarse * 2 * hop - fine) / (2 * math.pi))
        return (fine + 2 * math.pi * turns) / (2 * hop)

    def _duration_ms(self) -> int:
        return round((self._run_len + 1) * self._hop * 1000 / self.sample_rate)


@functools.lru_cache(maxsize=8)
def _kernel(sample_rate: int, hop: int) -> tuple[list[float], np.ndarray, np.ndarray]:
    """The detector's DFT kernel, computed once per sample rate (every leg of every call has a detector)."""
    size = 2 * hop
    omega = 2 * np.pi * np.array(ROW_FREQS + COL_FREQS) / sample_rate
    angle = np.outer(np.arange(size), omega)
    rect = np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
    hann = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    # Hann part scaled by 2 so that a tone of amplitude A reads A*size/2 in both parts.
    window = np.concatenate([rect, 2 * rect * hann[:, None]], axis=1)  # (size, 32)
    # A window is two hops: its DFT is the first hop's part plus the second hop's part.
    kernel = np.ascontiguousarray(np.concatenate([window[:hop], window[hop:]], axis=1), dtype=np.float32)
    hann.flags.writeable = False
    kernel.flags.writeable = False
    return omega.tolist(), hann, kernel
