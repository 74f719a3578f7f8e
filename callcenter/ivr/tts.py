"""Offline text-to-speech for IVR ``say`` texts: pyttsx3 driving espeak-ng, rendered to 8 kHz :class:`Prompt`\\ s.

Why pinyin: espeak-ng 1.51's ``cmn`` voice reads many Chinese characters through its English rules. Mandarin text
is therefore turned into tone-numbered pinyin with pypinyin (``Style.TONE3``, neutral tone as 5, pypinyin's
一/不 sandhi) and spoken with ``sit/cmn-Latn-pinyin``, which reads Latin text as pinyin. Cantonese keeps its
characters and uses ``sit/yue``. :func:`speakable` returns exactly what espeak receives.

What real prompts contain: punctuation (，。？！、：；) becomes ``,`` ``.`` ``?`` ``!`` and a space, which espeak
reads as a pause. Numbers of 3+ digits (phone numbers, 120, 12349) or with a leading 0 are read digit by digit
(Mandarin 1 = yao1); numbers of 1–2 digits are read as numbers (2 → er4, 15 → shi2 wu3); decimals use 点/點. For
Cantonese, digits become the characters 零一二三四五六七八九 (十 for 1–2 digit numbers). ``#`` and ``*`` are read as
井 and 星. Latin letters would make espeak switch to English: in Mandarin they are spelled one by one with
Chinese letter names (APP → ei1 pi4 pi4); in Cantonese they are dropped (sit/yue has no Latin reading without
English). Anything else (emoji, brackets, quotes) is dropped. Full-width forms are folded first (NFKC).

Caching: key = (text, language, rate); in memory (bounded LRU) and on disk as ``<sha256 of the key>.npy``
(8 kHz int16, written atomically). The disk key also holds :data:`CONVERTER_VERSION` and pypinyin's version:
bump the constant when :func:`speakable` or the audio processing changes.

Threading: espeak-ng is one process-wide C library and pyttsx3 is not thread-safe. Every synthesis runs on the
synthesizer's single worker thread, and the one pyttsx3 engine of the process is guarded by a module lock,
should two synthesizers exist. The engine is reused for every file (one ``save_to_file`` + ``runAndWait`` each):
a second engine's finaliser would unset espeak's callback under the first. pyttsx3 runs espeak in
AUDIO_OUTPUT_RETRIEVAL mode (espeak's own thread, fed by a command queue), so the queue is drained around the
property changes, or pyttsx3 may cancel a queued rate change (see :func:`_synthesize`). The WAV pyttsx3 writes
(22050 Hz) is resampled to 8 kHz and leading/trailing silence is cut to 100 ms.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import tempfile
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pypinyin
import structlog
from pypinyin import Style, lazy_pinyin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from callcenter.media.prompts import RATE, Prompt, read_wav, resample

log = structlog.get_logger("callcenter.ivr")

LANGUAGE_VOICES = {"cmn": "sit/cmn-Latn-pinyin", "yue": "sit/yue"}
MIN_RATE, MAX_RATE = 80, 450  # espeak-ng's range, words per minute
CONVERTER_VERSION = 1  # part of the disk-cache key: bump when speakable() or the audio processing changes
_MEMORY_ENTRIES = 1024  # templated texts (names) are unbounded; keep the most recent prompts in memory
_KEEP_SILENCE = int(0.1 * RATE)  # at most 100 ms of silence before and after the speech
_SILENCE = 0.005  # |sample| at or below this (about -46 dBFS) counts as silence when trimming

_TOKEN = re.compile(
    r"(?P<han>[\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+)"
    r"|(?P<number>[0-9]+(?:\.[0-9]+)?)|(?P<latin>[A-Za-z]+)|(?P<sign>[#*])"
    r"|(?P<pause>[,、;:]+)|(?P<stop>[。.!?]+)"
)
_CMN_DIGITS = ("ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3")
_YUE_DIGITS = "零一二三四五六七八九"
_SIGNS = {"cmn": {"#": "jing3", "*": "xing1"}, "yue": {"#": "井", "*": "星"}}
_LETTERS = dict(zip("abcdefghijklmnopqrstuvwxyz", (  # letter names as Chinese speakers say them, in pinyin
    "ei1/bi4/xi1/di4/yi4/ai2 fu1/ji4/ai2 qi1/ai4/zhei4/kai4/ai2 lu5/ai2 mu5/en1/ou1/pi4/kiu1/a4 er5/ai2 si1/ti4/"
    "you1/wei1/da2 bu5 liu5/ai2 ke4 si1/wai4/zei4").split("/"), strict=True))


class TtsError(Exception):
    """A text that could not be spoken; the message names the (shortened) text and the reason."""


def _error(text: str, language: str, reason: str) -> TtsError:
    short = text if len(text) <= 30 else text[:29] + "…"
    return TtsError(f"cannot say {short!r} in {language!r}: {reason}")


def speakable(text: str, language: str) -> str:
    """The text actually given to espeak-ng: tone-numbered pinyin for ``cmn``, characters for ``yue``."""
    if language not in LANGUAGE_VOICES:
        raise _error(text, language, f"unknown language, expected one of {', '.join(LANGUAGE_VOICES)}")
    cmn = language == "cmn"
    parts: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text)):
        kind, token = match.lastgroup, match.group()
        if kind in ("pause", "stop"):
            mark = "," if kind == "pause" else "?" if "?" in token else "!" if "!" in token else "."
            if parts and parts[-1][-1] not in ",.?! ":
                parts[-1] += mark if cmn else mark + " "
        elif kind == "han":
            if not cmn:
                parts.append(token)
                continue
            parts += lazy_pinyin(token, style=Style.TONE3, neutral_tone_with_five=True, tone_sandhi=True,
                                 errors=lambda _chars: [])
        elif kind == "number":
            parts += _number(token, cmn)
        elif kind == "sign":
            parts.append(_SIGNS[language][token])
        elif kind == "latin" and cmn:
            parts += [_LETTERS[c] for c in token.lower()]
    return (" " if cmn else "").join(parts).strip()


def _number(token: str, cmn: bool) -> list[str]:
    whole, _, fraction = token.partition(".")
    digits: tuple[str, ...] | str = _CMN_DIGITS if cmn else _YUE_DIGITS
    ten, point = ("shi2", "dian3") if cmn else ("十", "點")
    if len(whole) >= 3 or (len(whole) == 2 and whole[0] == "0"):  # phone numbers, 120, 12349: digit by digit
        out = ["yao1" if cmn and d == "1" else digits[int(d)] for d in whole]
    else:
        n = int(whole)
        out = [digits[n // 10]] if n >= 20 else []
        out += [ten] if n >= 10 else []
        out += [digits[n % 10]] if n % 10 or n < 10 else []
    if fraction:
        out += [point, *(digits[int(d)] for d in fraction)]
    return out


_ENGINE_LOCK = threading.Lock()
_engine: Any = None
_espeak_sync: Any = None
_engine_errors: list[BaseException] = []


def _get_engine() -> tuple[Any, Any]:
    """(the pyttsx3 engine, espeak_Synchronize), made once per process."""
    global _engine, _espeak_sync
    if _engine is None:
        import pyttsx3
        import pyttsx3.drivers._espeak as espeak_lib
        import pyttsx3.drivers.espeak as espeak_driver

        espeak_driver.print = lambda *args, **kwargs: None  # its "Audio saved to …" on stdout, for every file
        engine = pyttsx3.init("espeak")  # kept for the life of the process (see the module docstring)
        engine.connect("error", lambda name=None, exception=None: _engine_errors.append(exception))
        engine.runAndWait()  # empty run: from now on setProperty applies at once instead of queueing
        _engine, _espeak_sync = engine, espeak_lib.dll.espeak_Synchronize
        atexit.register(_release_engine)
    return _engine, _espeak_sync


def _release_engine() -> None:
    """Drop the engine while modules still exist: pyttsx3's finaliser fails noisily during interpreter teardown."""
    global _engine
    _engine = None


def _synthesize(said: str, voice: str, rate: int) -> np.ndarray:
    """espeak-ng through pyttsx3 → float samples at 8 kHz, silence trimmed. Raises ValueError with a reason.

    Rarely (seen once in eight runs of the TTS and flow tests, never in 600 renders in a row) pyttsx3 returns
    from runAndWait with an empty WAV: that is tried again, twice at most, before it counts as a failure."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _synthesize_once(said, voice, rate)
        except _NoAudio as exc:
            if attempt == _ATTEMPTS:
                raise ValueError(str(exc)) from None
            log.warning("ivr.tts.retry", voice=voice, chars=len(said), attempt=attempt, reason=str(exc))
    raise AssertionError("unreachable")


class _NoAudio(Exception):
    """pyttsx3 wrote no audio (a transient espeak/pyttsx3 hiccup)."""


_ATTEMPTS = 3


def _synthesize_once(said: str, voice: str, rate: int) -> np.ndarray:
    with _ENGINE_LOCK, tempfile.TemporaryDirectory(prefix="callcenter-tts-") as tmp:
        engine, wait_for_espeak = _get_engine()
        _engine_errors.clear()
        wav = Path(tmp) / "say.wav"
        # espeak runs in AUDIO_OUTPUT_RETRIEVAL mode: its own thread takes commands from a queue. If the rate
        # command is still queued when runAndWait starts, pyttsx3's stop() sees "playing" and cancels the
        # queue, losing the rate (measured: every other rate change was lost). Drain the queue around it.
        wait_for_espeak()
        engine.setProperty("voice", voice)
        engine.setProperty("rate", rate)
        wait_for_espeak()
        engine.save_to_file(said, str(wav))
        engine.runAndWait()
        if _engine_errors:  # pyttsx3 swallows driver exceptions (e.g. an unknown voice) and only notifies
            raise ValueError(f"pyttsx3: {_engine_errors[0]}")
        if engine.getProperty("voice") != voice.lower():
            raise ValueError(f"espeak-ng voice {voice} is not available")
        if not wav.exists() or wav.stat().st_size <= 44:  # nothing after the WAV header
            raise _NoAudio("pyttsx3 wrote no audio")
        audio, wav_rate = read_wav(wav)
    audio = resample(audio, wav_rate, RATE)
    loud = np.flatnonzero(np.abs(audio) > _SILENCE)
    if len(loud) == 0:
        raise ValueError("espeak-ng produced only silence")
    return audio[max(0, loud[0] - _KEEP_SILENCE) : loud[-1] + 1 + _KEEP_SILENCE]


_Key = tuple[str, str, int]


class SpeechSynthesizer:
    """Renders texts to 8 kHz prompts on one worker thread, with a memory and a disk cache.

    ``reactor`` (for :meth:`render_async`) defaults to Twisted's global reactor, looked up at call time.
    """

    def __init__(self, cache_dir: Path, *, default_rate: int = 150, reactor: Any = None) -> None:
        if not MIN_RATE <= default_rate <= MAX_RATE:
            raise ValueError(f"default_rate must be {MIN_RATE}..{MAX_RATE} words per minute, got {default_rate}")
        self.cache_dir = Path(cache_dir)
        self.default_rate = default_rate
        self._reactor = reactor
        self._memory: OrderedDict[_Key, Prompt] = OrderedDict()
        self._lock = threading.Lock()  # memory and stats: read by the caller's thread, written by the worker
        self._stats = {"renders": 0, "memory_hits": 0, "disk_hits": 0, "failures": 0}
        self._worker: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts", initializer=self._started)

    def _started(self) -> None:
        self._worker = threading.get_ident()  # render() called on the worker itself must not wait for it

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def _key(self, text: str, language: str, rate: int | None) -> _Key:
        if language not in LANGUAGE_VOICES:
            raise _error(text, language, f"unknown language, expected one of {', '.join(LANGUAGE_VOICES)}")
        rate = self.default_rate if rate is None else rate
        if not MIN_RATE <= rate <= MAX_RATE:
            raise _error(text, language, f"rate must be {MIN_RATE}..{MAX_RATE} words per minute, got {rate}")
        return (text, language, rate)

    def _disk_file(self, key: _Key) -> Path:
        text, language, rate = key
        blob = json.dumps([CONVERTER_VERSION, pypinyin.__version__, LANGUAGE_VOICES[language], language, rate, text])
        return self.cache_dir / f"{hashlib.sha256(blob.encode()).hexdigest()}.npy"

    def _from_memory(self, key: _Key) -> Prompt | None:
        with self._lock:
            prompt = self._memory.get(key)
            if prompt is not None:
                self._memory.move_to_end(key)
                self._stats["memory_hits"] += 1
            return prompt

    def _remember(self, key: _Key, prompt: Prompt, counter: str) -> Prompt:
        with self._lock:
            self._memory[key] = prompt
            while len(self._memory) > _MEMORY_ENTRIES:
                self._memory.popitem(last=False)
            self._stats[counter] += 1
        return prompt

    def _from_disk(self, key: _Key) -> Prompt | None:
        try:
            pcm = np.load(self._disk_file(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # absent or damaged: synthesize again
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            return None
        return self._remember(key, Prompt(pcm, _name(key)), "disk_hits")

    def cached(self, text: str, language: str, rate: int | None = None) -> Prompt | None:
        """The prompt if memory or disk has it; never synthesizes. Raises TtsError for a bad language or rate."""
        key = self._key(text, language, rate)
        return self._from_memory(key) or self._from_disk(key)

    def render(self, text: str, language: str, rate: int | None = None) -> Prompt:
        """The prompt for ``text``, synthesized on the worker thread if not cached (blocks; ~10–50 ms per
        sentence). For the CLI and for threads: not on the reactor thread (use :meth:`render_async`)."""
        key = self._key(text, language, rate)
        prompt = self._from_memory(key)
        if prompt is not None:
            return prompt
        if threading.get_ident() == self._worker:
            return self._produce(key)
        try:
            return self._submit(key).result()
        except CancelledError as exc:
            raise _error(text, language, "cancelled: the speech synthesizer was closed") from exc

    def render_many(self, items: Iterable[tuple[str, str, int | None]]) -> list[Prompt]:
        """Render each (text, language, rate) in order; stops at the first TtsError."""
        return [self.render(text, language, rate) for text, language, rate in items]

    def render_async(self, text: str, language: str, rate: int | None = None) -> Deferred[Prompt]:
        """A Deferred fired on the reactor thread with the prompt, or with a TtsError failure."""
        try:
            key = self._key(text, language, rate)
            prompt = self._from_memory(key)
            future = None if prompt is not None else self._submit(key)
        except TtsError as exc:
            return fail(Failure(exc))
        if future is None:
            return succeed(prompt)
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        deferred: Deferred[Prompt] = Deferred(lambda _d: future.cancel())

        def deliver(done: Future[Prompt]) -> None:
            if done.cancelled():
                failure = Failure(_error(text, language, "cancelled (synthesizer closed or caller gave up)"))
                reactor.callFromThread(deferred.errback, failure)
            elif (exc := done.exception()) is not None:
                reactor.callFromThread(deferred.errback, Failure(exc))
            else:
                reactor.callFromThread(deferred.callback, done.result())

        future.add_done_callback(deliver)
        return deferred

    def close(self) -> None:
        """Stop the worker: queued renders are cancelled, a running one is finished first."""
        self._executor.shutdown(wait=threading.get_ident() != self._worker, cancel_futures=True)

    def _submit(self, key: _Key) -> Future[Prompt]:
        try:
            return self._executor.submit(self._produce, key)
        except RuntimeError as exc:  # shut down
            raise _error(key[0], key[1], "the speech synthesizer is closed") from exc

    def _produce(self, key: _Key) -> Prompt:
        """On the worker: look again (an earlier queued render may have made it), else synthesize and store."""
        prompt = self._from_memory(key) or self._from_disk(key)
        if prompt is not None:
            return prompt
        text, language, rate = key
        started = time.perf_counter()
        try:
            said = speakable(text, language)
            if not said:
                raise ValueError("nothing speakable in it")
            audio = _synthesize(said, LANGUAGE_VOICES[language], rate)
        except Exception as exc:  # a C library behind a driver: whatever goes wrong becomes a TtsError
            with self._lock:
                self._stats["failures"] += 1
            reason = str(exc) if isinstance(exc, ValueError) else f"{exc.__class__.__name__}: {exc}"
            log.warning("ivr.tts.failed", language=language, text=text[:30], reason=reason)
            raise _error(text, language, reason) from exc
        prompt = Prompt.from_pcm(audio, _name(key))
        self._write_disk(key, prompt.pcm)
        ms = round((time.perf_counter() - started) * 1000)
        log.info("ivr.tts.rendered", language=language, chars=len(text), seconds=round(prompt.duration, 2), ms=ms)
        return self._remember(key, prompt, "renders")

    def _write_disk(self, key: _Key, pcm: np.ndarray) -> None:
        """Atomic (temp file + os.replace); a failure only costs a new synthesis after a restart."""
        target = self._disk_file(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, pcm.astype("<i2"), allow_pickle=False)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("ivr.tts.cache_write_failed", path=str(target), reason=str(exc))


def _name(key: _Key) -> str:
    return f"say:{key[1]}:{key[0][:20]}"
