"""StereoRecorder: caller left / other side right, valid WAV at every flush, survives kill -9 via recover()."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types
import wave
from pathlib import Path

import numpy as np
import pytest

import callcenter.media.recorder as recorder_module
from callcenter.media.recorder import RecordingError, RecordingInfo, StereoRecorder, recover, wav_header

ROOT = Path(__file__).resolve().parents[2]


def tick_tone(freq: float, tick: int, amp: float = 8000) -> np.ndarray:
    t = (tick * 160 + np.arange(160)) / 8000
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray, wave.Wave_read]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        assert len(data) == w.getnframes()
    return data[:, 0], data[:, 1], w


def peak_freq(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x.astype(float) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 8000)[np.argmax(spec)])


def test_three_seconds_caller_left_other_right(tmp_path):
    path = tmp_path / "call.wav"
    rec = StereoRecorder(path)
    for i in range(150):
        rec.write(tick_tone(440, i), tick_tone(1000, i))
    info = rec.close()
    assert info == RecordingInfo(path, 24000, 3.0, 44 + 24000 * 4)
    assert path.stat().st_size == info.bytes
    left, right, _ = read_stereo(path)
    assert len(left) == 24000
    assert peak_freq(left) == pytest.approx(440, abs=1)
    assert peak_freq(right) == pytest.approx(1000, abs=1)
    assert np.abs(np.fft.rfft(left.astype(float)))[3000] < 1e-3 * np.abs(np.fft.rfft(left.astype(float))).max()
    assert rec.close() == info  # idempotent


def test_file_is_a_valid_wav_at_every_flush_point(tmp_path):
    path = tmp_path / "live.wav"
    rec = StereoRecorder(path, header_interval_frames=10)
    with wave.open(str(path), "rb") as w:  # header claiming 0 bytes right away
        assert w.getnframes() == 0
    for i in range(57):
        rec.write(tick_tone(440, i), None)
        expected = ((i + 1) // 10) * 10 * 160
        assert rec.flushed_frames == expected
        left, right, _ = read_stereo(path)
        assert len(left) == expected
        assert not right.any()
        assert path.stat().st_size == 44 + expected * 4
    assert rec.frames == 57 * 160
    assert rec.close().frames == 57 * 160
    assert len(read_stereo(path)[0]) == 57 * 160


def test_one_write_and_two_header_patches_per_flush(tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    fake_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake_os.write = lambda fd, data: calls.append(("write", len(data))) or os.write(fd, data)
    fake_os.pwrite = lambda fd, data, off: calls.append(("pwrite", len(data))) or os.pwrite(fd, data, off)
    fake_os.fsync = lambda fd: calls.append(("fsync", 0))
    monkeypatch.setattr(recorder_module, "os", fake_os)
    now = [0.0]
    rec = StereoRecorder(tmp_path / "r.wav", fsync_interval_seconds=5.0, clock=lambda: now[0])
    calls.clear()
    for i in range(50):
        rec.write(tick_tone(440, i), tick_tone(1000, i))
    assert calls == [("write", 50 * 640), ("pwrite", 4), ("pwrite", 4)]
    calls.clear()
    now[0] = 5.5
    for _ in range(50):
        rec.write(None, None)
    assert calls == [("write", 50 * 640), ("pwrite", 4), ("pwrite", 4), ("fsync", 0)]


def test_pause_drops_ticks_and_none_is_silence(tmp_path):
    path = tmp_path / "consent.wav"
    rec = StereoRecorder(path)
    for i in range(50):
        rec.write(tick_tone(440, i), None)
    rec.pause()
    assert rec.paused
    for i in range(50):
        rec.write(tick_tone(2000, i), tick_tone(2000, i))
    rec.resume()
    for i in range(50):
        rec.write(None, tick_tone(1000, i))
    info = rec.close()
    assert info.seconds == pytest.approx(2.0)
    left, right, _ = read_stereo(path)
    assert peak_freq(left[:8000]) == pytest.approx(440, abs=1) and not right[:8000].any()
    assert not left[8000:].any() and peak_freq(right[8000:]) == pytest.approx(1000, abs=1)
    with pytest.raises(RecordingError, match="closed"):
        rec.write(None, None)


def test_short_side_is_padded(tmp_path):
    rec = StereoRecorder(tmp_path / "s.wav", header_interval_frames=1)
    rec.write(np.full(160, 7, np.int16), np.full(80, 9, np.int16))
    left, right, _ = read_stereo(tmp_path / "s.wav")
    assert left.tolist() == [7] * 160 and right.tolist() == [9] * 80 + [0] * 80
    rec.close()


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from callcenter.media.recorder import StereoRecorder

    path, mode = Path(sys.argv[1]), sys.argv[2]
    rec = StereoRecorder(path, header_interval_frames=50, fsync_interval_seconds=None)
    t = np.arange(160)
    tick = 0
    while True:
        phase = (tick * 160 + t) / 8000
        left = (8000 * np.sin(2 * np.pi * 440 * phase)).astype(np.int16)
        right = (8000 * np.sin(2 * np.pi * 1000 * phase)).astype(np.int16)
        if mode == "stuck" and rec.flushed_frames == 2 * 8000:
            def stuck(fd, data, offset):  # data of the 3rd second is written; die before the header says so
                print("stuck", flush=True)
                time.sleep(3600)
            os.pwrite = stuck
        rec.write(left, right)
        tick += 1
        if tick % 50 == 0:
            print(rec.flushed_frames, flush=True)
        time.sleep(0.002)
    """
)


def run_child_and_kill(tmp_path: Path, mode: str, stop_after: str) -> Path:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "crash.wav"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script), str(path), mode], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == stop_after:
                break
        else:
            pytest.fail(f"child exited early with {child.wait()}")
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    return path


def test_kill_9_mid_recording_then_recover(tmp_path):
    path = run_child_and_kill(tmp_path, "steady", stop_after=str(3 * 8000))  # 3 s flushed, still recording
    info = recover(path)
    assert 3.0 <= info.seconds <= 4.0 + 1e-9
    assert info.frames % 160 == 0 and info.bytes == path.stat().st_size
    left, right, _ = read_stereo(path)
    assert len(left) == info.frames
    assert peak_freq(left) == pytest.approx(440, abs=1) and peak_freq(right) == pytest.approx(1000, abs=1)


def test_kill_9_between_data_write_and_header_patch(tmp_path):
    path = run_child_and_kill(tmp_path, "stuck", stop_after="stuck")
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == 2 * 8000  # stale: the 3rd second is on disk but not in the header
    assert path.stat().st_size == 44 + 3 * 8000 * 4
    info = recover(path)
    assert info.seconds == pytest.approx(3.0)
    left, right, _ = read_stereo(path)
    assert len(left) == 3 * 8000
    assert peak_freq(left[16000:]) == pytest.approx(440, abs=1)
    assert peak_freq(right[16000:]) == pytest.approx(1000, abs=1)


def test_recover_zero_header_and_partial_sample_frame(tmp_path):
    path = tmp_path / "torn.wav"
    samples = np.arange(1000 * 2, dtype="<i2").tobytes()
    path.write_bytes(wav_header(0) + samples + b"\x01\x02\x03")  # killed mid-write: 3 stray bytes
    info = recover(path)
    assert info == RecordingInfo(path, 1000, 1000 / 8000, 44 + 4000)
    assert path.stat().st_size == 44 + 4000
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == 1000
        assert w.readframes(1000) == samples


def test_recover_on_a_valid_file_is_a_no_op(tmp_path):
    path = tmp_path / "ok.wav"
    rec = StereoRecorder(path)
    for i in range(75):
        rec.write(tick_tone(440, i), tick_tone(1000, i))
    closed = rec.close()
    before = path.read_bytes()
    st = path.stat()
    info = recover(path)
    assert info == closed
    assert path.read_bytes() == before and path.stat().st_mtime_ns == st.st_mtime_ns


def test_recover_refuses_what_is_not_a_wav(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"hello world, not a riff file")
    with pytest.raises(RecordingError, match="junk.wav: not a WAV"):
        recover(junk)
    with pytest.raises(RecordingError, match="nope.wav"):
        recover(tmp_path / "nope.wav")
    with pytest.raises(RecordingError, match="cannot create"):
        StereoRecorder(tmp_path / "no-such-dir" / "x.wav")


def test_existing_recording_is_never_overwritten(tmp_path):
    path = tmp_path / "evidence.wav"
    StereoRecorder(path).close()
    before = path.read_bytes()
    with pytest.raises(RecordingError, match="evidence.wav: cannot create"):
        StereoRecorder(path)
    assert path.read_bytes() == before
