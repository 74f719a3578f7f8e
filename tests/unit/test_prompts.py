"""Prompts: WAV of any rate/width/channels → 8 kHz mono int16, anti-aliased, cached on disk, pre-encoded."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from callcenter.media.g711 import codec_for
from callcenter.media.prompts import Prompt, PromptCache, PromptError, hold_music, resample, tone


def write_wav(path: Path, signal: np.ndarray, rate: int, width: int) -> Path:
    """``signal``: float in [-1, 1], shape (n,) or (n, channels)."""
    sig = signal.reshape(len(signal), -1) if len(signal) else signal.reshape(0, 1)
    if width == 1:
        raw = np.round(sig * 127 + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = np.round(sig * 32767).astype("<i2").tobytes()
    elif width == 3:
        v = np.round(sig * 8388607).astype("<i4").reshape(-1)
        raw = v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = np.round(sig * 2147483647).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(sig.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


def rms_db(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return 20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-9)


def peak_freq(pcm: np.ndarray, rate: int = 8000) -> float:
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(np.abs(np.fft.rfft(x)))])


@pytest.mark.parametrize(
    ("rate", "channels", "width", "seconds"),
    [(44100, 2, 2, 1.5), (48000, 1, 3, 2.0), (8000, 1, 1, 1.0), (16000, 2, 4, 0.75), (11025, 1, 2, 0.5)],
)
def test_formats_convert_to_8k_mono_int16(tmp_path, rate, channels, width, seconds):
    sig = sine(1000, seconds, rate)
    path = write_wav(tmp_path / "in.wav", np.stack([sig] * channels, axis=1), rate, width)
    prompt = PromptCache(tmp_path / "cache").load(path)
    assert prompt.pcm.dtype == np.int16 and prompt.pcm.ndim == 1
    assert prompt.duration == pytest.approx(seconds, abs=1 / 8000)
    assert len(prompt.pcm) == pytest.approx(seconds * 8000, abs=1)
    middle = prompt.pcm[400:-400]
    assert peak_freq(middle) == pytest.approx(1000, abs=2)
    expected = rms_db(sig * 32768)
    tolerance = 0.6 if width == 1 else 0.1  # 8-bit input quantises at -48 dB
    assert abs(rms_db(middle) - expected) < tolerance


def test_1khz_tone_keeps_frequency_and_level_within_half_db(tmp_path):
    sig = sine(1000, 2.0, 44100, amp=10 ** (-6 / 20))
    path = write_wav(tmp_path / "tone.wav", np.stack([sig, sig], axis=1), 44100, 2)
    pcm = PromptCache(tmp_path / "c").load(path).pcm[800:-800]
    assert peak_freq(pcm) == pytest.approx(1000, abs=1)
    amplitude_db = 20 * np.log10(np.sqrt(2) * np.sqrt(np.mean(pcm.astype(float) ** 2)) / 32768)
    assert abs(amplitude_db - (-6)) < 0.5


def test_6khz_in_48k_is_removed_not_aliased_to_2khz(tmp_path):
    sig = sine(6000, 2.0, 48000, amp=0.5)
    pcm = PromptCache(tmp_path / "c").load(write_wav(tmp_path / "hi.wav", sig, 48000, 2)).pcm
    attenuation = rms_db(sig * 32768) - rms_db(pcm[800:-800])
    assert attenuation > 40
    # and specifically nothing at the alias frequency 8000 - 6000 = 2000 Hz
    spec = np.abs(np.fft.rfft(pcm[800:-800].astype(float)))
    ref = np.abs(np.fft.rfft(sine(2000, 2.0, 8000, amp=0.5)[800:-800] * 32768))
    assert 20 * np.log10(spec.max() / ref.max() + 1e-12) < -40


def test_stereo_is_averaged_to_mono(tmp_path):
    sig = sine(500, 0.5, 22050)
    path = write_wav(tmp_path / "anti.wav", np.stack([sig, -sig], axis=1), 22050, 2)
    assert np.abs(PromptCache(tmp_path / "c").load(path).pcm).max() <= 2


def test_resampler_keeps_timing():
    x = np.zeros(44100)
    x[4410] = 1.0
    assert int(np.argmax(resample(x, 44100, 8000))) == 800
    up = resample(sine(1000, 1.0, 6000), 6000, 8000)
    assert len(up) == 8000 and peak_freq(up[400:-400]) == pytest.approx(1000, abs=2)


def test_disk_cache_is_reused_and_named_by_hash_only(tmp_path):
    src = write_wav(tmp_path / "welcome; rm -rf ~.wav", sine(440, 1.0, 48000), 48000, 2)
    cache_dir = tmp_path / "cache"
    first = PromptCache(cache_dir)
    p1 = first.load(src)
    assert first.conversions == 1
    assert first.load(src) is p1  # memory cache
    files = list(cache_dir.iterdir())
    assert len(files) == 1 and len(files[0].stem) == 64 and set(files[0].stem) <= set("0123456789abcdef")
    mtime = files[0].stat().st_mtime_ns

    second = PromptCache(cache_dir)  # a restart: memory empty, disk warm
    p2 = second.load(src)
    assert second.conversions == 0
    assert np.array_equal(p1.pcm, p2.pcm)
    assert files[0].stat().st_mtime_ns == mtime  # not rewritten


def test_cache_invalidated_when_file_changes(tmp_path):
    src = write_wav(tmp_path / "menu.wav", sine(440, 1.0, 16000), 16000, 2)
    cache = PromptCache(tmp_path / "cache")
    old = cache.load(src)
    st = src.stat()
    write_wav(src, sine(880, 1.0, 16000), 16000, 2)  # same size: only mtime differs
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    new = cache.load(src)
    assert cache.conversions == 2
    assert peak_freq(old.pcm) == pytest.approx(440, abs=2) and peak_freq(new.pcm) == pytest.approx(880, abs=2)
    assert PromptCache(tmp_path / "cache").load(src).pcm.tobytes() == new.pcm.tobytes()


def test_damaged_cache_entry_is_reconverted(tmp_path):
    src = write_wav(tmp_path / "a.wav", sine(440, 0.5, 8000), 8000, 2)
    PromptCache(tmp_path / "cache").load(src)
    (entry,) = (tmp_path / "cache").iterdir()
    entry.write_bytes(b"garbage")
    cache = PromptCache(tmp_path / "cache")
    assert cache.load(src).duration == pytest.approx(0.5)
    assert cache.conversions == 1


def _alaw_wav(path: Path) -> Path:
    data = bytes(800)
    fmt = struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_bad_files_raise_prompt_error_naming_the_file(tmp_path):
    cache = PromptCache(tmp_path / "cache")
    with pytest.raises(PromptError, match="missing-prompt.wav"):
        cache.load(tmp_path / "missing-prompt.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(PromptError, match="notes.wav.*not a WAV"):
        cache.load(text)
    with pytest.raises(PromptError, match=r"alaw.wav: compressed WAV format 0x0006"):
        cache.load(_alaw_wav(tmp_path / "alaw.wav"))
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0), 8000, 2)
    with pytest.raises(PromptError, match="empty.wav: WAV has no audio"):
        cache.load(empty)
    with pytest.raises(PromptError, match="a-dir"):
        (tmp_path / "a-dir").mkdir()
        cache.load(tmp_path / "a-dir")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("encoding", [["-e", "signed-integer", "-b", "24"], ["-e", "floating-point", "-b", "32"]])
def test_sox_extensible_and_float_wavs(tmp_path, encoding):
    sox = shutil.which("sox")
    assert sox, "sox is part of the dev setup"
    out = tmp_path / "sox.wav"
    cmd = [sox, "-n", "-r", "44100", "-c", "2", *encoding, str(out), "synth", "1.0", "sine", "1000", "vol", "0.5"]
    subprocess.run(cmd, check=True)
    prompt = PromptCache(tmp_path / "c").load(out)
    assert prompt.duration == pytest.approx(1.0, abs=1 / 8000)
    assert peak_freq(prompt.pcm[400:-400]) == pytest.approx(1000, abs=2)
    assert abs(rms_db(prompt.pcm[400:-400]) - rms_db(sine(1000, 1.0, 8000) * 32768)) < 0.2


def test_frames_are_encoded_once_per_codec_and_padded():
    pcm = np.round(sine(1000, 0.05, 8000) * 32767).astype(np.int16)  # 400 samples = 2.5 frames
    prompt = Prompt.from_pcm(pcm, "short")
    ulaw = prompt.frames("pcmu")
    assert len(ulaw) == 3 and all(len(f) == 160 for f in ulaw)
    assert prompt.frames("PCMU") is ulaw
    codec = codec_for("PCMU")
    assert ulaw[2][80:] == codec.silence[80:]
    assert np.abs(codec.decode(b"".join(ulaw))[:400].astype(int) - pcm).max() < 600
    alaw = prompt.frames("PCMA")
    assert alaw != ulaw and len(alaw) == 3
    assert alaw[2][80:] == codec_for("PCMA").silence[80:]
    assert Prompt.from_pcm(np.zeros(0, np.int16), "empty").frames("PCMU") == []


def test_from_pcm_validates_and_protects():
    p = Prompt.from_pcm(np.array([0.5, -2.0, 1.0]), "floats")
    assert p.pcm.tolist() == [16384, -32767, 32767]
    with pytest.raises(ValueError):
        p.pcm[0] = 1
    with pytest.raises(PromptError, match="bad"):
        Prompt.from_pcm(np.zeros((2, 2)), "bad")


def test_tone_level_and_frequency():
    t = tone([440, 480], 2.0)
    assert t.duration == pytest.approx(2.0)
    assert 20 * np.log10(np.abs(t.pcm).max() / 32768) == pytest.approx(-12, abs=0.1)
    spec = np.abs(np.fft.rfft(t.pcm.astype(float)))
    freqs = np.fft.rfftfreq(len(t.pcm), 1 / 8000)
    top = sorted(freqs[np.argsort(spec)[-2:]])
    assert top == pytest.approx([440, 480], abs=1)
    assert abs(int(t.pcm[0])) < 50 and abs(int(t.pcm[-1])) < 50  # faded: no click
    single = tone([1000], 0.5, level_dbfs=-3)
    assert peak_freq(single.pcm) == pytest.approx(1000, abs=2)
    with pytest.raises(PromptError):
        tone([5000], 1.0)
    with pytest.raises(PromptError):
        tone([440], 0)


def test_hold_music_is_soft_in_band_and_loops_seamlessly():
    music = hold_music()
    assert music is hold_music()
    assert 4 <= music.duration <= 15
    pcm = music.pcm.astype(np.float64)
    assert np.abs(pcm).max() / 32768 < 10 ** (-18 / 20)  # low level
    assert rms_db(pcm / 32768) > -40  # but audible
    spec = np.abs(np.fft.rfft(pcm)) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    assert spec[(freqs >= 250) & (freqs <= 3400)].sum() / spec.sum() > 0.99  # telephone band
    steps = np.abs(np.diff(pcm))
    assert abs(pcm[0] - pcm[-1]) <= steps.max()  # the loop point is no louder a jump than any other sample
    assert len(music.frames("PCMU")) == int(np.ceil(len(pcm) / 160))
