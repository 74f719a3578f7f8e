"""In-band DTMF detection (ITU-T Q.23 frequencies, Q.24 acceptance) on linear PCM.

Analysis windows of 104 samples (13 ms at 8 kHz) hop by 52 samples. Each window gets a rectangular-window
DFT at the eight DTMF frequencies (Goertzel's result, computed as one small matrix product for all windows
of a block) and a Hann-window DFT used to measure the tones' actual frequency.

A window holds a digit when

* its energy is above the floor and both the best row and best column tone are above ``min_level_dbm0``,
* the best row and column tones are each :data:`RELATIVE_PEAK_DB` above the other tones of their group,
* twist: the row tone is at most ``normal_twist_db`` above the column tone, the column tone at most
  ``reverse_twist_db`` above the row tone (spandsp/Asterisk naming),
* the two tones carry at least :data:`TONE_ENERGY_FRACTION` of the window's energy (speech, music and noise
  spread their energy; this is the main talk-off guard).

:data:`MIN_WINDOWS` consecutive windows with the same digit (a tone of 40 ms is always enough, one under
about 30 ms never is) make a candidate. The candidate is then checked for frequency: the phase advance of the
Hann DFT from window to window gives both tones' frequencies to within a few Hz, and a tone more than
:data:`FREQ_TOLERANCE` off nominal rejects the press (Q.24: +-1.5 % must be accepted, +-3.5 % rejected; a
104-sample window alone cannot tell 3.5 % from 0 % at 697 Hz). One digit is reported per key press; the
press ends after :data:`END_WINDOWS` windows without that digit (a break of up to ~10 ms is bridged).
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass

import numpy as np

from callcenter.media.dtmf import DtmfDigit

ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
"""KEYPAD[row][column]."""

HOP_8K = 52
"""Hop at 8 kHz; windows are two hops long (104 samples, bins 77 Hz apart)."""
MIN_WINDOWS = 5
END_WINDOWS = 4
RELATIVE_PEAK_DB = 8.0
WINDOW_TONE_FRACTION = 0.70
FINAL_TONE_FRACTION = 0.90
FREQ_TOLERANCE = 0.025
DBM0_FULL_SCALE_SINE = 3.14
"""A full-scale 16-bit sine is +3.14 dBm0 (G.711)."""


@dataclass
class InbandStats:
    """Counters for logs and metrics."""

    digits: int = 0
    off_frequency: int = 0
    """Candidates (long enough, right levels) rejected by the frequency check."""
    impure: int = 0
    """Candidates rejected because the two tones carry too little of the energy (talk-off)."""
    windows: int = 0


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
        omega = 2 * np.pi * np.array(ROW_FREQS + COL_FREQS) / sample_rate
        self._omega = omega.tolist()
        angle = np.outer(np.arange(size), omega)
        rect = np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
        self._hann = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
        # Hann part scaled by 2 so that a tone of amplitude A reads A*size/2 in both parts.
        window = np.concatenate([rect, 2 * rect * self._hann[:, None]], axis=1)  # (size, 32)
        # A window is two hops: its DFT is the first hop's part plus the second hop's part.
        self._kernel = np.ascontiguousarray(np.concatenate([window[:hop], window[hop:]], axis=1), dtype=np.float32)
        amplitude = 32768.0 * 10 ** ((min_level_dbm0 - DBM0_FULL_SCALE_SINE) / 20)
        self._min_power = (amplitude * size / 2) ** 2
        self._min_energy = amplitude**2 * size
        self._normal_twist = 10 ** (normal_twist_db / 10)
        self._reverse_twist = 10 ** (reverse_twist_db / 10)
        self._peak = 10 ** (RELATIVE_PEAK_DB / 10)
        self._fraction = WINDOW_TONE_FRACTION * size / 2
        self._buf = np.zeros(0, dtype=np.float32)
        self._run_digit: int | None = None
        self._run_len = 0
        self._run: list[tuple[np.ndarray, float]] = []
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
        buf = np.concatenate((self._buf, pcm.astype(np.float32, copy=False)))
        hop = self._hop
        halves = len(buf) // hop
        if halves < 2:
            self._buf = buf
            return []
        self._buf = buf[(halves - 1) * hop :]
        blocks = buf[: halves * hop].reshape(halves, hop)
        parts = blocks @ self._kernel
        spectra = parts[:-1, :32] + parts[1:, 32:]
        squares = np.einsum("ij,ij->i", blocks, blocks)
        energies = (squares[:-1] + squares[1:]).tolist()
        powers = spectra * spectra
        rect = (powers[:, 0:8] + powers[:, 8:16]).tolist()
        hann = (powers[:, 16:24] + powers[:, 24:32]).tolist()
        self.stats.windows += len(energies)
        out: list[DtmfDigit] = []
        for index, energy in enumerate(energies):
            digit = self._classify(energy, rect[index], hann[index])
            if self._step(digit, spectra[index], energy):
                assert digit is not None
                row, col = divmod(digit, 4)
                self.stats.digits += 1
                out.append(DtmfDigit(KEYPAD[row][col], self._duration_ms(), "inband"))
        return out

    def _classify(self, energy: float, rect: list[float], hann: list[float]) -> int | None:
        """The digit (row * 4 + column) one window holds, or None."""
        if energy < self._min_energy:
            return None
        rows = rect[:4]
        cols = rect[4:]
        row_power = max(rows)
        col_power = max(cols)
        row = rows.index(row_power)
        col = cols.index(col_power)
        # Level, twist and purity from the Hann DFT: no leakage between the groups, little loss off-centre.
        row_level = hann[row]
        col_level = hann[4 + col]
        if row_level + col_level < self._fraction * energy:
            return None
        if row_level < self._min_power or col_level < self._min_power:
            return None
        if row_level > col_level * self._normal_twist or col_level > row_level * self._reverse_twist:
            return None
        row_limit = row_power / self._peak
        col_limit = col_power / self._peak
        for i in range(4):
            if (i != row and rows[i] > row_limit) or (i != col and cols[i] > col_limit):
                return None
        return row * 4 + col

    def _step(self, digit: int | None, spectrum: np.ndarray, energy: float) -> bool:
        """Advance the press state machine by one window; True when ``digit`` is to be reported now."""
        if digit is None or digit != self._run_digit:
            self._run_digit = digit
            self._run_len = 0
            self._run = []
        if digit is not None:
            self._run_len += 1
            if self._run_len <= MIN_WINDOWS:
                self._run.append((spectrum, energy))
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
        """Frequency and purity check of a candidate on its inner windows (the outer ones may hold edges)."""
        inner = self._run[1:-1]
        tone_energy = 0.0
        for tone in divmod(digit, 4)[0], 4 + digit % 4:
            values = [complex(s[16 + tone], -s[24 + tone]) for s, _ in inner]
            delta = self._offset(values, tone)
            if abs(delta) > FREQ_TOLERANCE * self._omega[tone]:
                self.stats.off_frequency += 1
                return False
            gain = abs(np.exp(1j * delta * np.arange(self._size)) @ self._hann) / (self._size / 2)
            tone_energy += sum(abs(v) ** 2 for v in values) / gain**2
        tone_energy *= 2 / self._size
        if tone_energy < FINAL_TONE_FRACTION * sum(e for _, e in inner):
            self.stats.impure += 1
            return False
        return True

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
