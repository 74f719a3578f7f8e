"""The flow document model: what parse_flow accepts and where it points when it does not."""

import datetime as dt

import pytest

from callcenter.ivr.document import (
    CallbackNode,
    HoursNode,
    MenuNode,
    PlayPrompt,
    QueueNode,
    SayNode,
    SayPrompt,
    SetNode,
    parse_ranges,
)
from callcenter.ivr.messages import translate
from callcenter.ivr.parsing import FlowError, parse_flow

HAPPY = """\
description: 测试
language: yue
voice: {rate: 120}
start: menu
nodes:
  menu:
    type: menu
    prompt: 请按1
    invalid_prompt: {say: {cmn: 输入有误, yue: 輸入有誤}, rate: 100}
    timeout_prompt: {play: prompts/timeout.wav}
    options:
      1: office
      "12": office
      0: office
      "*": office
      "#": office
    fallback: office
  office:
    type: hours
    schedule: 7x8
    holidays: [2026-10-01, "2026-10-02"]
    workdays: [2026-10-10]
    open: wait
    closed: offer
  wait:
    type: queue
    queue: hotline
    announcements: {prompt: 请稍候, every: 30}
  offer:
    type: callback
    prompt: 回电请按1
    accept: 1
    next: bye
    declined: bye
  bye:
    type: hangup
"""


def _issues(text: str) -> list[tuple[int | None, int | None, str, str]]:
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "f.yaml")
    return [(i.line, i.column, i.key, i.message) for i in caught.value.issues]


def test_a_complete_flow():
    flow = parse_flow(HAPPY, "ivr_flows/hotline.yaml")
    assert flow.name == "hotline" and flow.source == "ivr_flows/hotline.yaml"
    doc = flow.document
    assert (doc.language, doc.voice.rate, doc.start) == ("yue", 120, "menu")
    menu = doc.nodes["menu"]
    assert isinstance(menu, MenuNode)
    assert list(menu.options) == ["1", "12", "0", "*", "#"]  # digit keys given as YAML ints become text
    assert menu.prompt == SayPrompt(say="请按1")  # plain text is a say prompt
    assert menu.invalid_prompt == SayPrompt(say={"cmn": "输入有误", "yue": "輸入有誤"}, rate=100)
    assert menu.timeout_prompt == PlayPrompt(play="prompts/timeout.wav")
    assert isinstance(menu.prompt, SayPrompt) and menu.prompt.texts("yue") == {"yue": "请按1"}
    assert sorted(target for _, target in menu.transitions()) == ["office"] * 6
    offer = doc.nodes["offer"]
    assert isinstance(offer, CallbackNode) and offer.accept == "1"
    office = doc.nodes["office"]
    assert isinstance(office, HoursNode)
    assert office.holidays == [dt.date(2026, 10, 1), dt.date(2026, 10, 2)]
    assert office.ranges_for(6) == [(8 * 60 + 30, 16 * 60 + 30)]
    wait = doc.nodes["wait"]
    assert isinstance(wait, QueueNode) and wait.ends_call
    assert [loc for loc, _ in wait.prompts()] == [("announcements", "prompt")]


def test_the_name_comes_from_flow_then_the_given_name_then_the_file():
    text = "start: a\nnodes:\n  a: {type: hangup}\n"
    assert parse_flow(text, "dir/x.yml").name == "x"
    assert parse_flow(text, "dir/x.yaml", name="y").name == "y"
    assert parse_flow("flow: z\n" + text, "dir/x.yaml", name="y").name == "z"


@pytest.mark.parametrize(("schedule", "ranges"), [
    ("7x24", [(0, 1440)]), ("7x10", [(480, 1080)]), ("7x8", [(510, 990)])])
def test_hours_presets(schedule, ranges):
    text = f"start: h\nnodes:\n  h: {{type: hours, schedule: {schedule}, open: b, closed: b}}\n  b: {{type: hangup}}\n"
    node = parse_flow(text, "f.yaml").document.nodes["h"]
    assert isinstance(node, HoursNode)
    assert all(node.ranges_for(day) == ranges for day in range(7))


def test_weekly_hours_and_unlisted_days():
    text = ('start: h\nnodes:\n  h:\n    type: hours\n    weekly: {mon: ["08:00-12:00", "13:30-18:00"]}\n'
            "    open: b\n    closed: b\n  b: {type: hangup}\n")
    node = parse_flow(text, "f.yaml").document.nodes["h"]
    assert isinstance(node, HoursNode)
    assert node.ranges_for(0) == [(480, 720), (810, 1080)] and node.ranges_for(6) == []
    assert parse_ranges(["00:00-24:00"]) == [(0, 1440)]


def test_say_node_and_set_values():
    text = ("start: s\nnodes:\n  s: {type: say, text: {cmn: 你好, yue: 你好}, language: yue, next: v}\n"
            "  v: {type: set, variables: {a: 1, b: true, c: '{{ caller.name }}', d: 1.5}, next: e}\n"
            "  e: {type: hangup}\n")
    doc = parse_flow(text, "f.yaml").document
    say, values = doc.nodes["s"], doc.nodes["v"]
    assert isinstance(say, SayNode) and isinstance(values, SetNode)
    assert [spec for _, spec in say.prompts()] == [SayPrompt(say={"cmn": "你好", "yue": "你好"}, language="yue")]
    assert values.variables == {"a": 1, "b": True, "c": "{{ caller.name }}", "d": 1.5}


# -- errors and where they point ---------------------------------------------------------------------------
ERRORS = [
    # (text, [(line, column, key, message)])
    ("start: m\nnodes:\n  m:\n    type: menu\n    prompt: {say: hi, langauge: cmn}\n    options: {1: m}\n"
     "    fallback: m\n",
     [(5, 23, "nodes.m.prompt.langauge", "unknown key 'langauge' — did you mean 'language'?")]),
    ("start: m\nvoice: {rat: 3}\nnodes:\n  m: {type: hangup}\n",
     [(2, 9, "voice.rat", "unknown key 'rat' — did you mean 'rate'?")]),
    ("start: h\nnodes:\n  h:\n    type: hours\n    weekly:\n      mn: [\"08:00-12:00\"]\n    open: h\n"
     "    closed: h\n",
     [(6, 7, "nodes.h.weekly.mn", "expected 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun', got \"mn\"")]),
    ("start: s\nnodes:\n  s:\n    type: say\n    text: {man: hi}\n    next: s\n",
     [(5, 12, "nodes.s.text.man", "expected 'cmn' or 'yue', got \"man\"")]),
    ("start: s\nnodes:\n  s: {type: say, text: [1], next: s}\n",
     [(3, 24, "nodes.s.text", "expected a string or a mapping of keys, got a list")]),
    ("start: s\nnodes:\n  s: {type: say, text: ' ', next: s}\n",
     [(3, 24, "nodes.s.text", "the text to say is empty")]),
    ("start: m\nnodes:\n  m:\n    type: menu\n    prompt: 5\n    options: {1: m}\n    fallback: m\n",
     [(5, 13, "nodes.m.prompt", "expected a text to say, {say: ...} or {play: prompts/....wav}, got 5")]),
    ("start: m\nnodes:\n  m:\n    type: menu\n    prompt: {say: hi, play: x.wav}\n    options: {}\n"
     "    fallback: m\n",
     [(5, 13, "nodes.m.prompt", 'give either "say" (a text) or "play" (a WAV file), not both'),
      (6, 14, "nodes.m.options", "expected at least 1 entry(ies), got none")]),
    ("start: m\nnodes:\n  m:\n    type: menu\n    prompt: hi\n    options:\n      x: m\n    fallback: m\n",
     [(7, 7, "nodes.m.options.x", 'a menu choice is digits, * or #, got "x"')]),
    ("start: m\nnodes:\n  m:\n    type: menu\n    prompt: hi\n    options:\n      #: m\n    fallback: m\n",
     [(6, 13, "nodes.m.options", 'expected the choices, e.g. 1: node (# starts a comment in YAML: write "#" and '
                                 '"*" in quotes)')]),
    ("start: v\nnodes:\n  v: {type: set, variables: {a: [1], 2x: b}, next: v}\n",
     [(3, 33, "nodes.v.variables.a", "expected a string, an integer, a number or true or false, got a list")]),
    ("start: v\nnodes:\n  v: {type: set, variables: {2x: b}, next: v}\n",
     [(3, 30, "nodes.v.variables.2x", 'expected a variable name (letters, digits, _), got "2x"')]),
    ("start: c\nnodes:\n  c: {type: collect, variable: pin, min_digits: 6, max_digits: 4, next: c}\n",
     [(3, 49, "nodes.c.min_digits", "min_digits (6) is more than max_digits (4)")]),
    ("start: c\nnodes:\n  c: {type: callback, prompt: x, accept: 12, next: c, declined: c}\n",
     [(3, 42, "nodes.c.accept", 'expected one key (0-9, * or #), got "12"')]),
    ("start: h\nnodes:\n  h: {type: hours, open: h, closed: h}\n",
     [(3, 6, "nodes.h", 'give the opening hours: "schedule" (7x24, 7x10 or 7x8) or "weekly"')]),
    ("start: h\nnodes:\n  h: {type: hours, schedule: 7x24, weekly: {}, open: h, closed: h, timezone: Mars}\n",
     [(3, 78, "nodes.h.timezone", 'unknown time zone "Mars" (e.g. "Asia/Shanghai")')]),
    ("start: h\nnodes:\n  h: {type: hours, schedule: 7x24, weekly: {}, open: h, closed: h}\n",
     [(3, 6, "nodes.h", 'give either "schedule" (7x24, 7x10 or 7x8) or "weekly" opening hours, not both')]),
    ("start: q\nnodes:\n  q: {type: queue, queue: a, announcements: {every: 5, musik: true}}\n",
     [(3, 53, "nodes.q.announcements.every", "expected a number >= 15.0, got 5"),
      (3, 56, "nodes.q.announcements.musik", "unknown key 'musik' — did you mean 'music'?")]),
    ("start: p\nnodes:\n  p: {type: play, file: /etc/passwd, next: p}\n",
     [(3, 25, "nodes.p.file", 'expected a path inside the flows folder (e.g. prompts/welcome.wav), got '
                              '"/etc/passwd"')]),
    ("flow: a b\nstart: 1\nlanguage: en\nnodes:\n  x: {type: hangup}\n  1: {type: hangup}\n",
     [(1, 7, "flow", "expected letters, digits, '_' or '-', got \"a b\""),
      (2, 8, "start", 'expected a string, got 1 (write numbers in quotes, e.g. "1001")'),
      (3, 11, "language", "expected 'cmn' or 'yue', got \"en\""),
      (6, 3, "nodes[1]", "a node name is a word (letters, digits, _ or -), got 1")]),
    ("nodes:\n  x: {type: hangupp}\n",
     [(1, 1, "start", "missing required key 'start'"),
      (2, 13, "nodes.x.type", "unknown node type \"hangupp\" — did you mean 'hangup'?")]),
    ("start: x\nnodes:\n  x: [1]\n  y: {}\n",
     [(3, 6, "nodes.x", "expected a node (a mapping with a type), got a list"),
      (4, 6, "nodes.y", "missing 'type' (one of: answer, play, say, menu, collect, switch, hours, set, queue, "
                        "transfer, record, callback, subflow, return, hangup)")]),
    ("start: x\nnodes: []\n", [(2, 8, "nodes", "expected a mapping of keys, got a list")]),
    ("- a\n", [(1, 1, "", "expected a flow (a mapping with start and nodes), got a list")]),
    ("", [(None, None, "", "the file is empty: a flow needs 'start' and 'nodes'")]),
    ("start: h\nnodes:\n  h: {type: hours, schedule: 7x8, holidays: [2026-02-30], open: h, closed: h}\n",
     [(3, 46, "nodes.h.holidays[0]", 'not a real date: "2026-02-30" (day is out of range for month)')]),
    ("start: h\nnodes:\n  h: {type: hours, schedule: 7x8, holidays: [2026-2-3], open: h, closed: h}\n",
     [(3, 46, "nodes.h.holidays[0]", 'expected a valid date or datetime, input is too short, got "2026-2-3"')]),
    ("start: x\nnodes:\n  x: {type: hangup}\n  x: {type: hangup}\n",
     [(4, 3, "nodes.x", "duplicate key 'x' (first on line 3)")]),
    ("start: s\nnodes:\n  s:\n    type: say\n    text: x\n     next: s\n",
     [(6, 10, "", "invalid YAML: mapping values are not allowed here")]),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_errors_point_at_the_value(text, expected):
    assert _issues(text) == expected


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_every_document_message_has_chinese(text, expected):
    for _, _, _, message in expected:
        assert translate(message) is not None, message


def test_text_with_a_language_it_does_not_have():
    text = ("start: s\nnodes:\n  s: {type: menu, prompt: {say: {cmn: hi}, language: yue}, options: {1: s}, "
            "fallback: s}\n")
    assert _issues(text) == [(3, 54, "nodes.s.prompt.language", "there is no 'yue' text to say (the texts are: cmn)")]
