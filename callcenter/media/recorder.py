"""Crash-safe stereo call recording: 8 kHz 16-bit WAV, caller on the LEFT channel, the other side on the RIGHT.

The media tick calls :meth:`StereoRecorder.write` once per 20 ms with 160 samples per side. Samples are
interleaved into a memory buffer; every ``header_interval_frames`` ticks (1 s by default) the buffer goes to
disk in ONE ``os.write`` and then the RIFF and data sizes in the header are patched with two 4-byte
``os.pwrite`` calls. Data is written before the header claims it, so the file on disk is always a valid WAV
up to the last flush; a kill -9 loses at most one interval. ``fsync`` runs at most every
``fsync_interval_seconds`` (a machine crash, not a process crash, can lose that much). :func:`recover`
repairs the header of a file whose writer died between the data write and the header patch.

Pause (e.g. while consent is asked or card numbers are read out): the paused ticks are dropped, not written
as silence, so the file is shorter than the call by the paused time. ``frames`` in :class:`RecordingInfo`
are WAV sample frames (one sample per channel), as :meth:`wave.Wave_read.getnframes` counts them.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callcenter.media.g711 import CLOCK_RATE, SAMPLES_PER_FRAME

CHANNELS = 2
SAMPLE_WIDTH = 2
BLOCK_ALIGN = CHANNELS * SAMPLE_WIDTH
HEADER_SIZE = 44
_RIFF_SIZE_AT, _DATA_SIZE_AT = 4, 40


class RecordingError(ValueError):
    """A recording file that cannot be written or repaired; the message names the file."""


@dataclass(frozen=True)
class RecordingInfo:
    path: Path
    frames: int  # WAV sample frames (samples per channel)
    seconds: float
    bytes: int  # size of the file on disk, header included


def wav_header(data_bytes: int) -> bytes:
    """The canonical 44-byte header of an 8 kHz stereo 16-bit PCM WAV holding ``data_bytes`` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, CHANNELS, CLOCK_RATE, CLOCK_RATE * BLOCK_ALIGN, BLOCK_ALIGN, SAMPLE_WIDTH * 8,
        b"data", data_bytes,
    )  # fmt: skip


class StereoRecorder:
    """Writes one call to a NEW file (an existing file is never overwritten: RecordingError).
    Not thread-safe: use it from the media tick only."""

    def __init__(
        self,
        path: Path,
        *,
        header_interval_frames: int = 50,
        fsync_interval_seconds: float | None = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if header_interval_frames < 1:
            raise ValueError("header_interval_frames must be at least 1")
        self.path = Path(path)
        self.header_interval_frames = header_interval_frames
        self.fsync_interval_seconds = fsync_interval_seconds
        self._clock = clock
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)  # never overwrite a recording
        try:
            self._fd: int | None = os.open(self.path, flags, 0o640)
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot create recording ({exc})") from exc
        self._buffer: list[bytes] = []
        self._buffered_ticks = 0
        self._data_bytes = 0  # on disk, as the header says
        self._paused = False
        self._last_fsync = clock()
        self._write_all(wav_header(0))

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def flushed_frames(self) -> int:
        """Sample frames on disk and covered by the header."""
        return self._data_bytes // BLOCK_ALIGN

    @property
    def frames(self) -> int:
        """Sample frames written so far, flushed or still buffered."""
        return (self._data_bytes + sum(map(len, self._buffer))) // BLOCK_ALIGN

    def pause(self) -> None:
        """Stop recording: ticks are dropped until :meth:`resume` (the gap is cut out, not silence)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def write(self, left: np.ndarray | None, right: np.ndarray | None) -> None:
        """One tick: ``left`` = caller, ``right`` = other side, int16 arrays (normally 160 samples each);
        None is silence for that side. A shorter side is padded with silence to the longer one."""
        if self._fd is None:
            raise RecordingError(f"{self.path}: recording is closed")
        if self._paused:
            return
        n = max(SAMPLES_PER_FRAME if left is None and right is None else 0,
                0 if left is None else len(left), 0 if right is None else len(right))  # fmt: skip
        stereo = np.zeros((n, CHANNELS), dtype="<i2")
        if left is not None:
            stereo[: len(left), 0] = left
        if right is not None:
            stereo[: len(right), 1] = right
        self._buffer.append(stereo.tobytes())
        self._buffered_ticks += 1
        if self._buffered_ticks >= self.header_interval_frames:
            self.flush()

    def flush(self) -> None:
        """Buffered samples to disk (one write), then the header sizes (two 4-byte pwrites); fsync if due."""
        fd = self._fd
        if fd is None:
            return
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered_ticks = 0
            self._write_all(data)
            self._data_bytes += len(data)
            os.pwrite(fd, struct.pack("<I", 36 + self._data_bytes), _RIFF_SIZE_AT)
            os.pwrite(fd, struct.pack("<I", self._data_bytes), _DATA_SIZE_AT)
        interval = self.fsync_interval_seconds
        if interval is not None and self._clock() - self._last_fsync >= interval:
            self._fsync()

    def close(self, *, sync: bool = True) -> RecordingInfo:
        """Flush, fsync and close; closing twice returns the same info. With ``sync=False`` the caller fsyncs
        (a duplicate of the descriptor taken before, in a thread: a close on the event loop never waits for
        the disk)."""
        if self._fd is not None:
            self.flush()
            if sync:
                self._fsync()
            os.close(self._fd)
            self._fd = None
        return _info(self.path, self._data_bytes)

    def duplicate_fd(self) -> int | None:
        """A duplicate of the file descriptor, for an fsync done elsewhere (a thread) without blocking the
        media tick; the caller closes it. None once the recording is closed."""
        return os.dup(self._fd) if self._fd is not None else None

    def _fsync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            self._last_fsync = self._clock()

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:  # a regular file takes it in one go; loop for the rare short write
            written = os.write(self._fd, view)
            view = view[written:]

    def __enter__(self) -> StereoRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:  # forgotten by its owner: keep what was recorded
            try:
                self.close()
            except Exception:  # nowhere to report it during garbage collection
                pass


def _info(path: Path, data_bytes: int) -> RecordingInfo:
    frames = data_bytes // BLOCK_ALIGN
    return RecordingInfo(path, frames, frames / CLOCK_RATE, HEADER_SIZE + data_bytes)


def recover(path: Path) -> RecordingInfo:
    """Repair a WAV left by a crashed writer: set the data size from the file size (dropping a trailing
    partial sample frame) and the RIFF size to match. A file that is already valid is left untouched."""
    path = Path(path)
    try:
        f = open(path, "r+b")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open recording ({exc})") from exc
    with f:
        head = f.read(HEADER_SIZE * 4)
        size = os.fstat(f.fileno()).st_size
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise RecordingError(f"{path}: not a WAV file")
        pos, block_align, rate, data_at = 12, 0, 0, -1
        while pos + 8 <= len(head):
            cid, csize = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            if cid == b"fmt " and pos + 8 + 16 <= len(head):
                rate, _, block_align = struct.unpack_from("<IIH", head, pos + 8 + 4)
            elif cid == b"data":
                data_at = pos + 8
                break
            pos += 8 + csize + (csize & 1)
        if block_align < 1 or rate < 1 or data_at < 0:
            raise RecordingError(f"{path}: WAV header without fmt or data chunk")
        riff_size = struct.unpack_from("<I", head, 4)[0]
        data_size = struct.unpack_from("<I", head, data_at - 4)[0]
        available = size - data_at
        if riff_size + 8 == size and data_size <= available and data_size % block_align == 0:
            return _recovered(path, data_size, block_align, rate, size)  # valid already: no-op
        data_size = available - available % block_align
        if data_at + data_size != size:
            f.truncate(data_at + data_size)
        f.seek(4)
        f.write(struct.pack("<I", data_at - 8 + data_size))
        f.seek(data_at - 4)
        f.write(struct.pack("<I", data_size))
        f.flush()
        os.fsync(f.fileno())
    return _recovered(path, data_size, block_align, rate, data_at + data_size)


def _recovered(path: Path, data_size: int, block_align: int, rate: int, size: int) -> RecordingInfo:
    frames = data_size // block_align
    return RecordingInfo(path, frames, frames / rate, size)
