"""Offline TTS: pinyin/digit/punctuation conversion, espeak-ng phonemes without English fallback, real renders
(8 kHz, plausible length, not silent, trimmed), the memory and disk caches, rate, threads and Deferreds."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callcenter.ivr import tts
from callcenter.ivr.tts import LANGUAGE_VOICES, SpeechSynthesizer, TtsError, speakable
from callcenter.media.prompts import RATE, Prompt

CMN_CORPUS = [
    "早上好，欢迎致电养老服务热线。",
    "咨询请按1，投诉请按2，返回主菜单请按0。",
    "您好，王奶奶，我们已经收到您的紧急呼叫，正在为您接通。",
    "现在是非工作时间，请在提示音后留言，按井号键结束。",
    "如需我们回电，请按1。",
    "您前面还有3位，预计等待2分钟。",
    "紧急呼叫请拨打120。",
    "请拨打12349或者010-88886666，下载APP后按#号键。",
    "“请稍候”……（谢谢）😀",
]
YUE_CORPUS = ["你好，歡迎致電長者服務熱線。", "請按一字。", "請按1字，緊急請撥打120，App，按#號鍵。"]
ESPEAK = "espeak-ng"  # installed by tools/setup (the engine speaks with it); a missing one fails loudly
SYLLABLE = re.compile(r"^[a-z]+[1-5][,.?!]?$")


@pytest.fixture
def synth(tmp_path: Path) -> Iterator[SpeechSynthesizer]:
    s = SpeechSynthesizer(tmp_path / "tts")
    yield s
    s.close()


@pytest.fixture
def synth_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts real syntheses (still calling the real espeak-ng)."""
    calls: list[str] = []
    real = tts._synthesize

    def counting(said: str, voice: str, rate: int) -> np.ndarray:
        calls.append(said)
        return real(said, voice, rate)

    monkeypatch.setattr(tts, "_synthesize", counting)
    return calls


def phonemes(text: str, language: str) -> str:
    """espeak-ng's phoneme transcription; an argument list and stdin, never a shell."""
    done = subprocess.run(
        [ESPEAK, "-v", LANGUAGE_VOICES[language], "-q", "-x", "--stdin"],
        input=text, capture_output=True, text=True, timeout=10, check=True,
    )
    return done.stdout


def rms(prompt: Prompt) -> float:
    return float(np.sqrt(np.mean(prompt.pcm.astype(np.float64) ** 2)))


# ------------------------------------------------------------------------------------- speakable()


def test_mandarin_becomes_tone_numbered_pinyin() -> None:
    said = speakable("早上好，欢迎致电养老服务热线。", "cmn")
    assert said == "zao3 shang4 hao3, huan1 ying2 zhi4 dian4 yang3 lao3 fu2 wu4 re4 xian4."
    assert speakable("我们的", "cmn") == "wo3 men5 de5"  # neutral tone as 5
    for text in CMN_CORPUS:
        assert all(SYLLABLE.match(word) for word in speakable(text, "cmn").split()), text


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("紧急呼叫请拨打120。", "jin3 ji2 hu1 jiao4 qing3 bo1 da3 yao1 er4 ling2."),
        ("12349", "yao1 er4 san1 si4 jiu3"),
        ("010-88886666", "ling2 yao1 ling2 ba1 ba1 ba1 ba1 liu4 liu4 liu4 liu4"),
        ("请按2", "qing3 an4 er4"),
        ("请按1", "qing3 an4 yi1"),
        ("按0", "an4 ling2"),
        ("还有3位", "hai2 you3 san1 wei4"),
        ("15分钟", "shi2 wu3 fen1 zhong1"),
        ("10", "shi2"),
        ("20", "er4 shi2"),
        ("99", "jiu3 shi2 jiu3"),
        ("05", "ling2 wu3"),
        ("3.5元", "san1 dian3 wu3 yuan2"),
        ("１２０", "yao1 er4 ling2"),  # full-width digits
    ],
)
def test_mandarin_digits(text: str, said: str) -> None:
    assert speakable(text, "cmn") == said


def test_chinese_punctuation_becomes_pauses() -> None:
    assert speakable("好，好。好？好！好、好：好；好", "cmn") == "hao3, hao3. hao3? hao3! hao3, hao3, hao3, hao3"
    assert speakable("好，。！", "cmn") == "hao3,"  # one mark per gap
    assert speakable("。，好", "cmn") == "hao3"  # nothing to pause after


def test_latin_letters_are_spelled_in_mandarin_and_dropped_in_cantonese() -> None:
    assert speakable("打开APP", "cmn") == "da3 kai1 ei1 pi4 pi4"
    assert speakable("Wi", "cmn") == "da2 bu5 liu5 ai4"
    assert speakable("請用App下載", "yue") == "請用下載"


def test_signs_and_symbols() -> None:
    assert speakable("按#号键，按*号键", "cmn") == "an4 jing3 hao4 jian4, an4 xing1 hao4 jian4"
    assert speakable("按＃", "yue") == "按井"
    assert speakable("“请稍候”（谢谢）😀", "cmn") == "qing3 shao1 hou4 xie4 xie4"


def test_cantonese_keeps_characters_and_converts_digits() -> None:
    assert speakable("你好，歡迎致電長者服務熱線。", "yue") == "你好, 歡迎致電長者服務熱線."
    assert speakable("請按1字", "yue") == "請按一字"
    assert speakable("撥打120，等15分鐘，3.5元", "yue") == "撥打一二零, 等十五分鐘, 三點五元"


def test_unknown_language_is_a_tts_error() -> None:
    with pytest.raises(TtsError, match=r"'你好'.*'eng'.*unknown language"):
        speakable("你好", "eng")


@pytest.mark.parametrize(("language", "text"), [("cmn", t) for t in CMN_CORPUS] + [("yue", t) for t in YUE_CORPUS])
def test_espeak_never_falls_back_to_english(language: str, text: str) -> None:
    said = phonemes(speakable(text, language), language)
    assert said.strip()
    assert "(en)" not in said, said


# ------------------------------------------------------------------------------------- rendering


def test_render_is_8khz_speech_of_plausible_length(synth: SpeechSynthesizer, capfd: pytest.CaptureFixture[str]) -> None:
    prompt = synth.render("如需我们回电，请按1。", "cmn")
    assert prompt.name == "say:cmn:如需我们回电，请按1。"
    assert prompt.pcm.dtype == np.int16 and prompt.pcm.ndim == 1
    assert 0.5 < prompt.duration < 6
    assert rms(prompt) > 1000  # about -30 dBFS: speech, not silence
    loud = np.flatnonzero(np.abs(prompt.pcm) > 164)
    assert loud[0] <= 0.11 * RATE and len(prompt.pcm) - loud[-1] <= 0.11 * RATE  # silence trimmed to ~100 ms
    assert len(prompt.frames("PCMU")) == -(-len(prompt.pcm) // 160)
    assert "Audio saved" not in capfd.readouterr().out  # pyttsx3's print is silenced


def test_cantonese_render(synth: SpeechSynthesizer) -> None:
    prompt = synth.render("請按一字。", "yue")
    assert 0.3 < prompt.duration < 4 and rms(prompt) > 1000


def test_slower_rate_is_longer(synth: SpeechSynthesizer) -> None:
    # Alternating rates and voices: a rate change lost inside espeak's command queue would show here.
    order = [(100, "cmn"), (200, "cmn"), (120, "yue"), (120, "cmn"), (250, "cmn"), (200, "yue"), (300, "cmn")]
    text = {"cmn": "早上好，欢迎致电养老服务热线。", "yue": "你好，歡迎致電長者服務熱線。"}
    seconds = {(rate, lang): synth.render(text[lang], lang, rate).duration for rate, lang in order}
    assert seconds[100, "cmn"] > 1.5 * seconds[200, "cmn"]
    assert seconds[100, "cmn"] > seconds[120, "cmn"] > seconds[200, "cmn"] > seconds[250, "cmn"] > seconds[300, "cmn"]
    assert seconds[120, "yue"] > 1.4 * seconds[200, "yue"]


def test_memory_and_disk_cache(tmp_path: Path, synth_calls: list[str]) -> None:
    cache_dir = tmp_path / "tts"
    first = SpeechSynthesizer(cache_dir)
    try:
        assert first.cached("紧急呼叫请拨打120。", "cmn") is None  # lookup only
        assert synth_calls == []
        prompt = first.render("紧急呼叫请拨打120。", "cmn")
        assert first.render("紧急呼叫请拨打120。", "cmn") is prompt
        assert first.cached("紧急呼叫请拨打120。", "cmn") is prompt
        assert len(synth_calls) == 1
        assert first.stats == {"renders": 1, "memory_hits": 2, "disk_hits": 0, "failures": 0}
        first.render("紧急呼叫请拨打120。", "cmn", 120)  # another rate is another prompt
        assert len(synth_calls) == 2
    finally:
        first.close()
    files = sorted(p.name for p in cache_dir.iterdir())
    assert len(files) == 2 and all(re.fullmatch(r"[0-9a-f]{64}\.npy", name) for name in files)

    second = SpeechSynthesizer(cache_dir)
    try:
        again = second.render("紧急呼叫请拨打120。", "cmn")
        assert np.array_equal(again.pcm, prompt.pcm)
        assert second.cached("紧急呼叫请拨打120。", "cmn", 120) is not None
        assert len(synth_calls) == 2  # no synthesis: both from disk
        assert second.stats == {"renders": 0, "memory_hits": 0, "disk_hits": 2, "failures": 0}
    finally:
        second.close()


def test_damaged_disk_entry_is_synthesized_again(tmp_path: Path, synth_calls: list[str]) -> None:
    s = SpeechSynthesizer(tmp_path)
    try:
        s.render("您好", "cmn")
        (entry,) = tmp_path.glob("*.npy")
        entry.write_bytes(b"garbage")
    finally:
        s.close()
    s = SpeechSynthesizer(tmp_path)
    try:
        assert s.cached("您好", "cmn") is None
        assert s.render("您好", "cmn").duration > 0.3
        assert len(synth_calls) == 2
    finally:
        s.close()


def test_render_many_in_order(synth: SpeechSynthesizer) -> None:
    items: list[tuple[str, str, int | None]] = [("您好", "cmn", None), ("請按一字。", "yue", 120)]
    items.append(("您好", "cmn", None))
    prompts = synth.render_many(items)
    assert [p.name for p in prompts] == ["say:cmn:您好", "say:yue:請按一字。", "say:cmn:您好"]
    assert prompts[0] is prompts[2]


def test_failures_are_tts_errors(synth: SpeechSynthesizer) -> None:
    with pytest.raises(TtsError, match=r"'😀'.*nothing speakable"):
        synth.render("😀", "cmn")
    with pytest.raises(TtsError, match="rate must be 80..450"):
        synth.render("您好", "cmn", 20)
    with pytest.raises(TtsError, match="unknown language"):
        synth.cached("您好", "en")
    assert synth.stats["failures"] == 1
    with pytest.raises(ValueError, match="default_rate"):
        SpeechSynthesizer(Path("unused"), default_rate=1000)


def test_closed_synthesizer_refuses(tmp_path: Path) -> None:
    s = SpeechSynthesizer(tmp_path)
    s.close()
    with pytest.raises(TtsError, match="closed"):
        s.render("您好", "cmn")


# ------------------------------------------------------------------------------------- render_async


class QueueReactor:
    """callFromThread hands the call to the test's thread, like a reactor thread would run it."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def run_one(self) -> None:
        f, args = self.calls.get(timeout=10)
        f(*args)


def test_render_async_delivers_on_the_reactor_thread(tmp_path: Path) -> None:
    reactor = QueueReactor()
    s = SpeechSynthesizer(tmp_path, reactor=reactor)
    try:
        results: list[tuple[Any, int]] = []
        d = s.render_async("您前面还有3位，预计等待2分钟。", "cmn")
        d.addBoth(lambda r: results.append((r, threading.get_ident())))
        assert results == []  # not before the reactor runs the delivery
        reactor.run_one()
        (prompt, thread), = results
        assert isinstance(prompt, Prompt) and thread == threading.get_ident()
        hit = s.render_async("您前面还有3位，预计等待2分钟。", "cmn")  # memory hit: already fired
        hit.addCallback(results.append)
        assert results[-1] is prompt and reactor.calls.empty()
    finally:
        s.close()


def test_render_async_failure_is_a_tts_error(tmp_path: Path) -> None:
    reactor = QueueReactor()
    s = SpeechSynthesizer(tmp_path, reactor=reactor)
    try:
        errors: list[Any] = []
        s.render_async("😀", "cmn").addErrback(errors.append)
        reactor.run_one()
        assert errors[0].check(TtsError)
        s.render_async("您好", "xx").addErrback(errors.append)  # bad arguments fail at once
        assert errors[1].check(TtsError)
    finally:
        s.close()


def test_an_empty_file_from_pyttsx3_is_tried_again(synth: SpeechSynthesizer, monkeypatch: pytest.MonkeyPatch) -> None:
    real, attempts = tts._synthesize_once, []

    def flaky(said: str, voice: str, rate: int) -> np.ndarray:
        attempts.append(said)
        if len(attempts) == 1:
            raise tts._NoAudio("pyttsx3 wrote no audio")
        return real(said, voice, rate)

    monkeypatch.setattr(tts, "_synthesize_once", flaky)
    assert synth.render("正在为您接通。", "cmn", 190).duration > 0.5
    assert len(attempts) == 2

    monkeypatch.setattr(tts, "_synthesize_once", lambda *a: (_ for _ in ()).throw(tts._NoAudio("no audio")))
    with pytest.raises(TtsError, match="no audio"):
        synth.render("再见。", "cmn", 190)
