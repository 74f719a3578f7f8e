"""The flow runner on a simulated clock with a scripted caller (no SIP, no audio)."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from twisted.internet.task import Clock

from callcenter.ivr.context import CallerProfile, CallFacts, FlowContext
from callcenter.ivr.parsing import parse_flow
from callcenter.ivr.runner import CompiledFlow, FlowRunner, hours_state
from callcenter.ivr.simulator import ScriptedCall, simulate

ZONE = ZoneInfo("Asia/Shanghai")
MONDAY_10 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=ZONE)
ELDER = CallerProfile(known=True, elder_id=7, name="王秀英", title="王奶奶", language="cmn",
                      family_numbers=("13900139001",))


def flows(*texts: str, version: int = 1) -> dict[str, CompiledFlow]:
    out = {}
    for index, text in enumerate(texts):
        parsed = parse_flow(textwrap.dedent(text), f"flow{index}.yaml", name=f"flow{index}")
        out[parsed.name] = CompiledFlow(parsed.name, version, parsed.document, Path("."))
    return out


MENU = """
    flow: menu
    start: menu
    nodes:
      menu:
        type: menu
        prompt: 咨询请按1，投诉请按2，人工请按12
        options: {1: one, 2: two, 12: twelve}
        retries: 2
        timeout: 5
        inter_digit_timeout: 2
        invalid_prompt: 输入有误
        timeout_prompt: 没有听到按键
        fallback: human
      one: {type: queue, queue: q1}
      two: {type: queue, queue: q2}
      twelve: {type: queue, queue: q12}
      human: {type: queue, queue: fallback}
"""


def run(text_or_flows: str | dict[str, CompiledFlow], start: str | None = None, *, digits: list[str] = (),
        caller: CallerProfile = ELDER, button: str | None = None, at: dt.datetime = MONDAY_10, **kw):
    fl = flows(text_or_flows) if isinstance(text_or_flows, str) else text_or_flows
    name = start or next(iter(fl))
    return simulate(fl, name, caller=caller, facts=CallFacts("13800138001", "1000", button), at=at,
                    digits=digits, **kw)


def kinds(sim, kind: str) -> list[str]:
    return [e.text for e in sim.call.events if e.kind == kind]


def test_menu_choice_goes_to_its_node():
    sim = run(MENU, digits=["2"])
    assert sim.result.outcome == "queued" and sim.call.queued[0].queue == "q2"


def test_menu_waits_the_inter_digit_timeout_when_a_choice_is_a_prefix_of_another():
    sim = run(MENU, digits=["1"])
    assert sim.call.queued[0].queue == "q1"
    pressed = next(e.at for e in sim.call.events if e.kind == "keys")
    chosen = next(e.at for e in sim.call.events if "pressed 1" in e.text)
    assert chosen - pressed >= 2.0  # waited the inter-digit timeout for a possible "12"
    assert run(MENU, digits=["12"]).call.queued[0].queue == "q12"


def test_menu_wrong_key_says_invalid_then_retries():
    sim = run(MENU, digits=["7", "2"])
    assert "输入有误" in kinds(sim, "say")
    assert sim.call.queued[0].queue == "q2"


def test_menu_silence_retries_then_fallback():
    sim = run(MENU, digits=[])
    says = kinds(sim, "say")
    assert says.count("咨询请按1，投诉请按2，人工请按12") == 3  # first time + 2 retries
    assert says.count("没有听到按键") == 2
    assert sim.call.queued[0].queue == "fallback"
    assert kinds(sim, "timeout") and sim.seconds >= 15  # three 5 s timeouts


def test_keys_pressed_during_a_prompt_never_leak_into_the_next_question():
    sim = run(MENU, digits=["3", "", "1"])
    assert sim.call.queued[0].queue == "q1"


COLLECT = """
    start: ask
    nodes:
      ask:
        type: collect
        variable: code
        prompt: 请输入四位数字，按井号结束
        min_digits: 4
        max_digits: 6
        retries: 1
        invalid_prompt: 位数不对
        next: check
        no_input: nothing
      check:
        type: switch
        cases:
          - {when: code == "1234", next: ok}
        default: bad
      ok: {type: say, text: "收到{{ code }}", next: end}
      bad: {type: hangup, reason: bad code}
      nothing: {type: hangup, reason: no code}
      end: {type: hangup}
"""


def test_collect_stores_digits_until_the_terminator():
    sim = run(COLLECT, digits=["1234#"])
    assert "收到1234" in kinds(sim, "say")


def test_collect_too_short_retries_then_no_input():
    sim = run(COLLECT, digits=["12#", "9#"])
    assert kinds(sim, "say").count("位数不对") == 1
    assert sim.call.hung_up == "no code"


def test_switch_on_caller_attributes_and_button():
    text = """
        start: s
        nodes:
          s:
            type: switch
            cases:
              - {when: not caller.known, next: stranger}
              - {when: button == "emergency", next: urgent}
              - {when: caller.language == "yue", next: cantonese}
            default: known
          stranger: {type: queue, queue: unknown}
          urgent: {type: queue, queue: emergency, priority: emergency, level: 9}
          cantonese: {type: queue, queue: yue}
          known: {type: queue, queue: known}
    """
    assert run(text, caller=CallerProfile()).call.queued[0].queue == "unknown"
    queued = run(text, button="emergency").call.queued[0]
    assert (queued.queue, queued.priority, queued.level) == ("emergency", "emergency", 9)
    assert run(text, caller=CallerProfile(known=True, language="yue")).call.queued[0].queue == "yue"
    assert run(text).call.queued[0].queue == "known"


HOURS = """
    start: h
    nodes:
      h:
        type: hours
        weekly: {mon: ["08:00-12:00", "13:30-18:00"], sat: ["09:00-12:00"]}
        holidays: [2026-10-01]
        workdays: [2026-09-27]
        open: o
        closed: c
        holiday: hol
      o: {type: hangup, reason: open}
      c: {type: hangup, reason: closed}
      hol: {type: hangup, reason: holiday}
"""


@pytest.mark.parametrize(("when", "expected"), [
    (dt.datetime(2026, 11, 23, 10, 0), "open"),  # Monday morning
    (dt.datetime(2026, 11, 23, 12, 30), "closed"),  # lunch break
    (dt.datetime(2026, 11, 23, 18, 0), "closed"),  # the end is exclusive
    (dt.datetime(2026, 11, 24, 10, 0), "closed"),  # Tuesday: no hours
    (dt.datetime(2026, 11, 28, 9, 0), "open"),  # Saturday
    (dt.datetime(2026, 10, 1, 10, 0), "holiday"),  # National Day
    (dt.datetime(2026, 9, 27, 10, 0), "open"),  # a Sunday make-up working day uses Monday's hours
])
def test_hours(when: dt.datetime, expected: str):
    assert run(HOURS, at=when.replace(tzinfo=ZONE)).call.hung_up == expected


def test_hours_presets_and_time_zones():
    parsed = parse_flow("start: h\nnodes:\n  h: {type: hours, schedule: 7x8, open: o, closed: o}\n"
                        "  o: {type: hangup}\n", "x.yaml")
    node = parsed.document.nodes["h"]
    assert hours_state(node, dt.datetime(2026, 11, 22, 8, 29, tzinfo=ZONE)) == "closed"  # Sunday: every day
    assert hours_state(node, dt.datetime(2026, 11, 22, 8, 30, tzinfo=ZONE)) == "open"
    # 01:00 UTC is 09:00 in Shanghai
    assert hours_state(node, dt.datetime(2026, 11, 22, 1, 0, tzinfo=dt.UTC)) == "open"


def test_subflow_returns_to_the_caller_flow_and_shares_variables():
    main = """
        flow: main
        start: set
        nodes:
          set: {type: set, variables: {who: "{{ caller.title }}"}, next: sub}
          sub: {type: subflow, flow: greet, next: after}
          after: {type: say, text: "回来了{{ greeted }}", next: end}
          end: {type: hangup}
    """
    greet = """
        flow: greet
        start: hello
        nodes:
          hello: {type: say, text: "{{ who }}好", next: mark}
          mark: {type: set, variables: {greeted: 是}, next: back}
          back: {type: return}
    """
    sim = run(flows(main, greet), "main")
    assert kinds(sim, "say") == ["王奶奶好", "回来了是"]
    assert [s.flow for s in sim.steps if s.type in ("say", "return")] == ["greet", "greet", "main"]


def test_transfer_to_a_family_number_from_the_directory_and_on_failure():
    text = """
        start: t
        nodes:
          t: {type: transfer, number: "{{ caller.family_numbers[0] }}", on_failure: fallback}
          fallback: {type: queue, queue: care}
    """
    sim = run(text)
    assert sim.result.outcome == "transferred" and kinds(sim, "transfer") == ["13900139001"]
    unanswered = run(text, transfer_answers=False)
    assert unanswered.call.queued[0].queue == "care"
    no_family = run(text, caller=CallerProfile(known=True))  # the template fails: no number to call
    assert no_family.call.queued[0].queue == "care" and not kinds(no_family, "transfer")


def test_transfer_to_another_flow_does_not_come_back():
    a = "flow: a\nstart: t\nnodes:\n  t: {type: transfer, flow: b}\n"
    b = "flow: b\nstart: q\nnodes:\n  q: {type: queue, queue: from_b}\n"
    sim = run(flows(a, b), "a")
    assert sim.call.queued[0].queue == "from_b" and sim.call.queued[0].flow == "b"


def test_voicemail_and_callback():
    text = """
        start: cb
        nodes:
          cb:
            type: callback
            prompt: 回电请按1
            reason: wants a call
            due_in: 3600
            confirm_prompt: 好的
            next: bye
            declined: vm
          vm: {type: record, prompt: 请留言, max_seconds: 60, next: thanks}
          thanks: {type: say, text: "已录音{{ message_seconds }}秒", next: bye}
          bye: {type: hangup}
    """
    accepted = run(text, digits=["1"])
    assert accepted.call.callbacks == [{"reason": "wants a call", "due_in": 3600.0, "flow": "flow0"}]
    assert "好的" in kinds(accepted, "say")
    declined = run(text, digits=["2"])
    assert not declined.call.callbacks and kinds(declined, "record") and "已录音10.0秒" in kinds(declined, "say")


def test_first_prompt_answers_the_call_and_answer_node_rings_first():
    sim = run("start: a\nnodes:\n  a: {type: answer, ring: 3, next: s}\n  s: {type: say, text: 你好, next: h}\n"
              "  h: {type: hangup}\n")
    assert [e.kind for e in sim.call.events if e.kind in ("ring", "answer")] == ["ring", "answer"]
    answer = next(e for e in sim.call.events if e.kind == "answer")
    assert answer.at == pytest.approx(3.0)
    auto = run("start: s\nnodes:\n  s: {type: say, text: 你好, next: h}\n  h: {type: hangup}\n")
    assert auto.call.events[1].kind == "answer"


def test_a_loop_that_never_waits_is_stopped():
    text = "start: a\nnodes:\n  a: {type: set, variables: {x: 1}, next: b}\n  b: {type: switch, cases: " \
           "[{when: 'x == 2', next: c}], default: a}\n  c: {type: hangup}\n"
    sim = run(text, max_steps=50)
    assert sim.result.outcome == "error" and "without waiting" in sim.result.detail


def test_a_caller_hanging_up_cancels_the_flow():
    clock = Clock()
    fl = flows(MENU)
    call = ScriptedCall(clock, [])
    context = FlowContext(ELDER, CallFacts(), MONDAY_10, "cmn")
    runner = FlowRunner(call, fl, "menu", context, clock=clock)
    results = []
    runner.run().addCallback(results.append)
    clock.advance(1)  # in the middle of the first prompt
    runner.cancel()
    assert results[0].outcome == "caller_hangup"
    assert not clock.getDelayedCalls() or all(not c.active() for c in clock.getDelayedCalls())


def test_a_running_call_keeps_its_version():
    v1 = flows("start: s\nnodes:\n  s: {type: say, text: 旧版本, next: q}\n  q: {type: queue, queue: a}\n")
    clock = Clock()
    call = ScriptedCall(clock, [])
    runner = FlowRunner(call, v1, "flow0", FlowContext(ELDER, CallFacts(), MONDAY_10, "cmn"), clock=clock)
    results = []
    runner.run().addCallback(results.append)
    v1.clear()  # the live mapping moves on; the runner holds its own
    clock.advance(10)
    assert results[0].outcome == "queued" and results[0].steps[0].version == 1


def test_greeting_and_language_choice():
    text = """
        language: cmn
        start: s
        nodes:
          s:
            type: say
            text: {cmn: "{{ greeting }}，{{ caller.title }}", yue: "{{ greeting }}，{{ caller.title }}"}
            next: h
          h: {type: hangup}
    """
    morning = run(text)
    assert kinds(morning, "say") == ["早上好，王奶奶"]
    night_yue = run(text, caller=CallerProfile(known=True, title="陈伯", language="yue"),
                    at=dt.datetime(2026, 11, 23, 20, 0, tzinfo=ZONE))
    assert kinds(night_yue, "say") == ["晚安，陈伯"]


def test_values_from_the_caller_are_escaped_in_the_path_but_spoken_as_they_are():
    text = "start: s\nnodes:\n  s: {type: say, text: '{{ caller.name }}', next: h}\n  h: {type: hangup}\n"
    sim = run(text, caller=CallerProfile(known=True, name="<李&王>"))
    assert kinds(sim, "say") == ["<李&王>"]


def test_a_queue_that_refuses_the_call_never_leaves_the_caller_waiting():
    text = "start: q\nnodes:\n  q: {type: queue, queue: gone, on_timeout: other}\n  other: {type: queue, queue: b}\n"
    sim = run(text, queue_result="refused")
    assert [q.queue for q in sim.call.queued] == ["gone", "b"]  # on to on_timeout; b refuses too:
    assert sim.result.outcome == "error" and "refused" in sim.result.detail  # the engine's fallback takes over
