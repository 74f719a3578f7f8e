"""Player: queued prompts frame by frame on the media tick, loop, stop, barge-in, callbacks, codec switch."""

from __future__ import annotations

import numpy as np
import pytest

from callcenter.media.g711 import codec_for
from callcenter.media.player import Player
from callcenter.media.prompts import Prompt, hold_music


def ramp_prompt(name: str, frames: int, base: int = 0) -> Prompt:
    """Frame i holds the constant value (base + i + 1) * 100, so every frame is recognisable after G.711."""
    values = np.repeat((base + np.arange(frames) + 1) * 100, 160).astype(np.int16)
    return Prompt.from_pcm(values, name)


def frame_id(frame: bytes, codec: str = "PCMU") -> int:
    return int(round(float(codec_for(codec).decode(frame).mean()) / 100))


def drain(player: Player, limit: int = 1000) -> list[bytes]:
    out = []
    while (frame := player.next_frame()) is not None and len(out) < limit:
        out.append(frame)
    return out


def test_idle_player_gives_none():
    player = Player("pcmu")
    assert player.codec_name == "PCMU"
    assert player.idle and player.current is None
    assert player.next_frame() is None


def test_queued_prompts_play_back_to_back():
    player = Player("PCMU")
    a, b = ramp_prompt("a", 3), ramp_prompt("b", 2, base=10)
    pa, pb = player.play(a), player.play(b)
    assert player.current is pa and player.queued == [pa, pb]
    frames = drain(player)
    assert [frame_id(f) for f in frames] == [1, 2, 3, 11, 12]
    assert frames == a.frames("PCMU") + b.frames("PCMU")
    assert pa.done and pa.reason == "finished" and pb.done and pb.reason == "finished"
    assert player.idle and player.next_frame() is None


def test_playback_finishes_when_its_last_frame_is_sent():
    player = Player("PCMU")
    pb = player.play(ramp_prompt("a", 2))
    player.next_frame()
    assert not pb.done and pb.position == 1
    player.next_frame()
    assert pb.done and pb.reason == "finished"


def test_partial_last_frame_is_padded_with_silence():
    player = Player("PCMA")
    player.play(Prompt.from_pcm(np.full(200, 1000, dtype=np.int16), "odd"))
    frames = drain(player)
    assert len(frames) == 2 and all(len(f) == 160 for f in frames)
    assert frames[1][40:] == codec_for("PCMA").silence[40:]


def test_loop_repeats_until_stopped():
    player = Player("PCMU")
    pb = player.play(ramp_prompt("loop", 3), loop=True)
    after = player.play(ramp_prompt("after", 1, base=50))
    ids = [frame_id(player.next_frame()) for _ in range(8)]
    assert ids == [1, 2, 3, 1, 2, 3, 1, 2]
    assert not pb.done
    assert pb.stop() is True
    assert pb.reason == "stopped" and not after.done
    assert [frame_id(f) for f in drain(player)] == [51]
    assert pb.stop() is False


def test_stop_ends_everything_queued():
    player = Player("PCMU")
    reasons = []
    pbs = [player.play(ramp_prompt(str(i), 5)) for i in range(3)]
    for pb in pbs:
        pb.add_done_callback(lambda p: reasons.append((p.prompt.name, p.reason)))
    player.next_frame()
    assert player.stop() is True
    assert reasons == [("0", "stopped"), ("1", "stopped"), ("2", "stopped")]
    assert player.next_frame() is None and player.stop() is False


def test_barge_in_stops_only_interruptible_prompts():
    player = Player("PCMU")
    menu = player.play(ramp_prompt("menu", 5))
    notice = player.play(ramp_prompt("legal", 2, base=20), barge_in=False)
    more = player.play(ramp_prompt("more", 2, base=30))
    player.next_frame()
    assert player.interrupt_for_digit() is True
    assert menu.reason == "interrupted" and more.reason == "interrupted" and not notice.done
    assert [frame_id(f) for f in drain(player)] == [21, 22]
    assert notice.reason == "finished"
    assert player.interrupt_for_digit() is False


def test_music_on_hold_ignores_digits_but_stops():
    player = Player("PCMU")
    music = player.play(hold_music(), loop=True, barge_in=False)
    n = len(hold_music().frames("PCMU"))
    frames = [player.next_frame() for _ in range(n + 5)]
    assert frames[n : n + 5] == frames[:5]  # looped seamlessly
    assert player.interrupt_for_digit() is False and not music.done
    assert player.stop() and music.reason == "stopped"


def test_callbacks_run_once_and_may_queue_the_next_prompt():
    player = Player("PCMU")
    calls = []
    first = player.play(ramp_prompt("first", 2))

    def chain(pb):
        calls.append(pb.reason)
        player.play(ramp_prompt("second", 1, base=40))

    first.add_done_callback(chain)
    assert [frame_id(f) for f in drain(player)] == [1, 2, 41]
    assert calls == ["finished"]
    late = []
    first.add_done_callback(lambda pb: late.append(pb.reason))  # already done: runs at once
    assert late == ["finished"]


def test_failing_callback_does_not_break_the_tick():
    player = Player("PCMU")
    pb = player.play(ramp_prompt("a", 1))
    ok = []

    def boom(_pb):
        raise RuntimeError("flow bug")

    pb.add_done_callback(boom)
    pb.add_done_callback(lambda p: ok.append(p.reason))
    player.play(ramp_prompt("b", 1, base=5))
    assert [frame_id(f) for f in drain(player)] == [1, 6]
    assert ok == ["finished"]


def test_empty_prompt_finishes_without_a_frame():
    player = Player("PCMU")
    empty = player.play(Prompt.from_pcm(np.zeros(0, np.int16), "empty"), loop=True)
    player.play(ramp_prompt("x", 1))
    assert [frame_id(f) for f in drain(player)] == [1]
    assert empty.reason == "finished"


def test_codec_switch_mid_prompt_keeps_position():
    prompt = ramp_prompt("long", 6)
    player = Player("PCMU")
    player.play(prompt)
    first = [player.next_frame() for _ in range(3)]
    assert first == prompt.frames("PCMU")[:3]
    player.set_codec("pcma")
    assert player.codec_name == "PCMA"
    rest = drain(player)
    assert rest == prompt.frames("PCMA")[3:]
    assert [frame_id(f, "PCMA") for f in rest] == [4, 5, 6]


def test_unknown_codec_is_refused():
    with pytest.raises(KeyError):
        Player("G729")
    player = Player("PCMU")
    with pytest.raises(KeyError):
        player.set_codec("opus")
    assert player.codec_name == "PCMU"
