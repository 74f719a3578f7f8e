"""Flow lint: one broken flow per case in flows_corpus/ (expectations here, not in the files), the Chinese
messages, the examples of docs/flows.md and the committed JSON Schema."""

import json
import re
import wave
from pathlib import Path

import pytest

from callcenter.ivr.document import PlayPrompt
from callcenter.ivr.lint import LintEnvironment, LintIssue, flow_json_schema, lint_files, lint_parsed, lint_text
from callcenter.ivr.messages import FALLBACK, bilingual, chinese, translate
from callcenter.ivr.parsing import parse_flow
from callcenter.yamlsource import SourceIssue

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "flows_corpus"
CORPUS_ENV = LintEnvironment(
    flows_dir=CORPUS,
    flow_names=frozenset({"hotline", "ask_pin", "identify_caller", "recursive_subflow"}),
    queues=frozenset({"hotline", "emergency"}),
    trunks=frozenset({"carrier"}),
    subflow_graph={"ask_pin": frozenset({"recursive_subflow"})},  # ask_pin runs recursive_subflow
)

# file → every issue it must produce: (line, column, code, a piece of the message); "!" marks a warning.
EXPECTED: dict[str, list[tuple[int | None, int | None, str, str]]] = {
    "unknown_node_type.yaml": [(5, 11, "type", "unknown node type \"manu\" — did you mean 'menu'?")],
    "unknown_key.yaml": [(8, 5, "type", "unknown key 'timout' — did you mean 'timeout'?")],
    "dangling_transition.yaml": [
        (6, 11, "dangling-transition", "'operater' is not a node of this flow — did you mean 'operator'?"),
        (7, 3, "unreachable-node", "nothing leads to 'operator'"),
    ],
    "unreachable_node.yaml": [(10, 3, "unreachable-node", "nothing leads to 'forgotten' from start 'welcome'")],
    "loop_without_exit.yaml": [(3, 3, "loop-without-exit", "menu → again → menu never reaches a queue")],
    "loop_never_waits.yaml": [(3, 3, "loop-never-waits", "count → check → count only sets variables")],
    "bad_template_syntax.yaml": [(7, 7, "template", "template error: line 2: unexpected '}'")],
    "unknown_variable.yaml": [(10, 11, "unknown-variable", "'membr_code' — did you mean 'member_code'?")],
    "unknown_caller_attribute.yaml": [
        (6, 15, "unknown-attribute", "'caller' has no 'living_alon' — did you mean 'living_alone'?")],
    "missing_prompt.yaml": [(5, 11, "missing-prompt", "prompt file not found: prompts/no_such_welcome.wav (looked "
                                                      "in tests/unit/flows_corpus/prompts/no_such_welcome.wav)")],
    "wrong_types.yaml": [
        (8, 14, "type", 'expected a number, got "six"'),
        (9, 14, "type", "expected an integer, got a list"),
        (14, 15, "type", "expected a list, got 2026"),
        (20, 12, "type", "expected a number <= 9, got 12"),
    ],
    "missing_start.yaml": [(1, 1, "type", "missing required key 'start'")],
    "start_not_a_node.yaml": [(1, 8, "start", "'welcom' is not a node of this flow — did you mean 'welcome'?")],
    "bad_hours_range.yaml": [
        (6, 13, "type", '"18:00-08:00" ends before it starts'),
        (7, 13, "type", 'not a time of day: "08:00-25:00"'),
        (8, 13, "type", 'expected "HH:MM-HH:MM", got "8 to 6"'),
    ],
    "unknown_queue.yaml": [(5, 12, "unknown-queue", "unknown queue 'hotlien' — did you mean 'hotline'?")],
    "unknown_subflow.yaml": [(5, 11, "unknown-flow", "unknown flow 'identify_calller' — did you mean "
                                                     "'identify_caller'?")],
    "recursive_subflow.yaml": [(6, 11, "recursive-subflow", "recursive_subflow → ask_pin → recursive_subflow")],
    "queue_max_wait.yaml": [
        (10, 5, "!emergency-max-wait", "an emergency caller should wait for an operator"),
        (15, 5, "!max-wait-no-exit", "the call is hung up when the wait passes"),
    ],
    "invalid_yaml_tab.yaml": [(3, 1, "yaml", "found character '\\t' that cannot start any token")],
    "invalid_yaml_indent.yaml": [(5, 4, "yaml", "expected <block end>")],
    "duplicate_key.yaml": [(7, 3, "yaml", "duplicate key 'welcome' (first on line 3)")],
    "unquoted_template.yaml": [(5, 11, "yaml", "a text that starts with {{ or {% must be in quotes")],
    "menu_keys.yaml": [
        (8, 7, "!menu-prefix", "choice '12' starts with choice '1': a caller pressing 1 waits 3 seconds"),
        (9, 7, "menu-key", 'choice 010 is read as the number 8: write it in quotes ("010")'),
        (10, 7, "menu-key", 'the choice "#" → operator is ignored'),
    ],
    "nonexistent_date.yaml": [(6, 16, "type", 'not a real date: "2026-02-30" (day is out of range for month)')],
    "missing_type.yaml": [(4, 5, "type", "missing 'type' (one of: answer, play")],
    "empty.yaml": [(None, None, "yaml", "the file is empty")],
    "flow_name_mismatch.yaml": [(1, 7, "flow-name", "'flow: hotline' does not match the file name "
                                                    "'flow_name_mismatch'")],
    "transfer_problems.yaml": [
        (5, 13, "unknown-attribute", "'caller' has no 'family_numbrs' — did you mean 'family_numbers'?"),
        (6, 12, "unknown-trunk", "unknown trunk 'carier' — did you mean 'carrier'?"),
        (10, 12, "unknown-queue", "unknown queue 'hotlin' — did you mean 'hotline'?"),
    ],
    "transfer_two_targets.yaml": [(4, 5, "type", 'give exactly one of "number", "queue" or "flow"')],
    "warnings.yaml": [
        (6, 15, "!unknown-button", "'emergncy' is not a terminal button — did you mean 'emergency'?"),
        (11, 13, "!long-prompt", "a long menu prompt (66 characters)"),
        (25, 11, "!missing-language", "no text in the flow's language 'cmn' (texts: yue)"),
        (27, 3, "!unused-return", "'return' in a flow that no flow runs as a subflow"),
    ],
    "reserved_name.yaml": [(6, 7, "reserved-name", "'language' is a built-in name")],
    "say_problems.yaml": [
        (5, 12, "type", "expected 'cmn' or 'yue', got \"man\""),
        (10, 15, "type", "there is no 'yue' text to say (the texts are: cmn)"),
        (15, 5, "type", "unknown key 'sound' (a hangup node has: description, reason)"),
    ],
    "not_utf8.yaml": [(5, 11, "file", "the file is not UTF-8 text (it may be GBK): save it as UTF-8")],
}


@pytest.fixture(scope="module")
def corpus_results(monkeypatch_module: pytest.MonkeyPatch) -> dict[str, list[LintIssue]]:
    monkeypatch_module.chdir(ROOT)  # messages show paths relative to the repository
    paths = sorted(p.relative_to(ROOT) for p in CORPUS.glob("*.yaml"))
    env = LintEnvironment(**{**CORPUS_ENV.__dict__, "flows_dir": CORPUS.relative_to(ROOT)})
    return {path.name: issues for path, issues in lint_files(paths, env).items()}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_corpus_file_has_expectations():
    assert sorted(p.name for p in CORPUS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name, corpus_results):
    got = [(i.issue.line, i.issue.column, ("!" if i.severity == "warning" else "") + i.code, i.message)
           for i in corpus_results[name]]
    expected = EXPECTED[name]
    assert len(got) == len(expected), "\n".join(str(i) for i in corpus_results[name])
    for (line, column, code, message), (want_line, want_column, want_code, piece) in zip(got, expected,
                                                                                         strict=True):
        assert (line, column, code) == (want_line, want_column, want_code), message
        assert piece in message


def test_issues_print_as_file_line_column(corpus_results):
    issue = corpus_results["unknown_key.yaml"][0]
    assert str(issue) == ("tests/unit/flows_corpus/unknown_key.yaml:8:5: nodes.menu.timout: unknown key 'timout' "
                          "— did you mean 'timeout'?")
    warning = corpus_results["menu_keys.yaml"][0]
    assert str(warning).endswith(" (warning)")


# -- Chinese ------------------------------------------------------------------------------------------------
def test_every_corpus_message_has_a_real_translation(corpus_results):
    for issues in corpus_results.values():
        for issue in issues:
            text = translate(issue.message)
            assert text is not None, issue.message
            assert not re.search(r"did you mean|expected|unknown|got |is not", text), (issue.message, text)


def test_bilingual_gives_the_english_then_the_chinese_at_the_same_place(corpus_results):
    issue = corpus_results["unknown_key.yaml"][0]
    assert bilingual(issue) == (
        "tests/unit/flows_corpus/unknown_key.yaml:8:5: nodes.menu.timout: unknown key 'timout' — did you mean "
        "'timeout'?\n"
        "  tests/unit/flows_corpus/unknown_key.yaml:8:5: 未知的键 'timout'，是否应为 'timeout'？")
    source = SourceIssue("f.yaml", None, None, "", "the file is empty: a flow needs 'start' and 'nodes'")
    assert bilingual(source).splitlines()[1] == "  f.yaml: 文件是空的：流程至少要有 start（开始节点）和 nodes（节点）"
    warning = bilingual(corpus_results["menu_keys.yaml"][0])
    assert warning.splitlines()[0].endswith("(warning)") and warning.endswith("（提醒）")


@pytest.mark.parametrize(("english", "chinese_text"), [
    ("expected a number <= 60, got 100", "应为不大于 60 的数字，实际写的是 100"),
    ("expected 'emergency', 'urgent' or 'normal', got \"high\"",
     "应为 'emergency'、'urgent' 或 'normal'，实际写的是 \"high\""),
    ('expected a string, got 1001 (write numbers in quotes, e.g. "1001")',
     '应为文字，实际写的是 1001（数字请加引号，例如 "1001"）'),
    ("expected a string, an integer, a number or true or false, got a list",
     "应为文字、整数、数字、true 或 false，实际写的是列表"),
    ("unknown queue 'x' (no queues are configured)", "未知的队列 'x'（配置里还没有任何队列）"),
    ("unknown flow 'x' (flows: a, b)", "未知的流程 'x'（已有的流程：a, b）"),
    ("template error: line 3: Encountered unknown tag 'iff'. Jinja was looking for...",
     "模板（{{ }} 或 {% %} 部分）写错了：第 3 行不认识的标签 'iff'"),
    ("template error: chunk after expression",
     "模板（{{ }} 或 {% %} 部分）写错了：条件后面多了内容（比较相等请用 ==）"),
    ("invalid YAML: while scanning an alias expected alphabetic or numeric character, but found ':'",
     'YAML 格式错误：以 * 或 & 开头的值要加引号，例如 "*"'),
    ("cannot read the file: Permission denied", "无法读取文件：没有读取权限"),
])
def test_chinese_examples(english, chinese_text):
    assert chinese(english) == chinese_text


@pytest.mark.parametrize("english", [
    "unknown node type \"x\" (types: answer, play)",
    "unknown key 'zz' (a menu node has: prompt, options)",
    "unknown key 'zz' (known keys: flow, start)",
    "prompt file cannot be played: prompts/x.wav (not a WAV file)",
    "prompt file not found: prompts/x.wav (looked in ivr_flows/prompts/x.wav) — did you mean 'prompts/y.wav'?",
    "unknown trunk 'x' (no trunks are configured)",
    "unknown variable 'x' (set it with a set or collect node first, or use a built-in name: call, caller)",
    "'call' has no 'x' (call has: did, button)",
    "cannot read the file: No such file or directory",
    "not a real value: \"x\" (why)",
    "template error: line 2: unexpected end of template, expected ','.",
    "template error: Unexpected end of template. Jinja was looking for the following tags: 'endif'. The innermost "
    "block that needs to be closed is 'if'.",
    "invalid YAML: expected a single document in the stream but found another document",
    "invalid YAML: while scanning a quoted scalar found unexpected end of stream",
    "invalid YAML: mapping values are not allowed here",
    "invalid YAML: while parsing a flow mapping expected ',' or '}', but got '<stream end>'",
    "expected a valid date or datetime, input is too short, got \"x\"",
])
def test_other_messages_have_chinese(english):
    text = translate(english)
    assert text is not None
    assert not re.search(r"did you mean|expected|unknown|got |is not|set it with", text), text


def test_unknown_messages_fall_back_to_the_english():
    assert chinese("something new") == FALLBACK + "something new"
    assert translate("something new") is None


# -- lint details --------------------------------------------------------------------------------------------
def _lint(text: str, tmp_path: Path, **env) -> list[LintIssue]:
    parsed, issues = lint_text(text, "f.yaml", LintEnvironment(flows_dir=tmp_path, **env))
    assert parsed is not None, issues
    return issues


def test_a_menu_choosing_itself_is_not_a_loop_when_the_fallback_leaves(tmp_path):
    text = ("start: menu\nnodes:\n  menu:\n    type: menu\n    prompt: 重听请按9\n    options: {9: menu}\n"
            "    fallback: operator\n  operator: {type: queue, queue: q}\n")
    assert _lint(text, tmp_path) == []


def test_a_queue_that_times_out_back_into_itself_is_an_exit(tmp_path):
    text = ("start: wait\nnodes:\n  wait: {type: queue, queue: q, max_wait: 60, on_timeout: sorry}\n"
            "  sorry: {type: say, text: 请稍候, next: wait}\n")
    assert _lint(text, tmp_path) == []


def test_only_the_loop_the_call_ends_up_in_is_reported(tmp_path):
    text = ("start: menu\nnodes:\n  menu:\n    type: menu\n    prompt: 重听请按9\n    options: {9: menu}\n"
            "    fallback: a\n  a: {type: say, text: x, next: b}\n  b: {type: say, text: y, next: a}\n")
    issues = _lint(text, tmp_path)
    assert [(i.code, i.issue.key) for i in issues] == [("loop-without-exit", "nodes.a")]
    assert "a → b → a" in issues[0].message


def test_template_names(tmp_path):
    text = ("start: s\nnodes:\n"
            "  s: {type: set, variables: {topic: x}, next: r}\n"
            "  r: {type: record, next: say}\n"
            "  say:\n    type: say\n"
            "    text: \"{{ greeting }}{{ topic }}{{ message_seconds }}{{ now.hour }}{{ range(2)|list }}"
            "{% for n in caller.family_numbers %}{{ loop.index }}{{ n }}{% endfor %}\"\n"
            "    next: bye\n"
            "  bye: {type: hangup}\n")
    assert _lint(text, tmp_path) == []
    issues = _lint(text.replace("{{ topic }}", "{{ topik }}{{ call.didd }}"), tmp_path)
    assert [i.code for i in issues] == ["unknown-attribute", "unknown-variable"]  # same place: by code
    assert "did you mean 'did'?" in issues[0].message and "did you mean 'topic'?" in issues[1].message
    assert _lint(text.replace("{{ topic }}", "{{ x }}"), tmp_path, extra_variables=frozenset({"x"})) == []


def test_switch_conditions_are_parsed_like_the_runner_evaluates_them(tmp_path):
    text = ("start: s\nnodes:\n  s:\n    type: switch\n    cases: [{when: 'button = \"family\"', next: q}]\n"
            "    default: q\n  q: {type: queue, queue: q}\n")
    issues = _lint(text, tmp_path)
    assert [(i.code, i.message) for i in issues] == [("template", "template error: chunk after expression")]


def test_prompt_files_must_be_wavs_that_decode(tmp_path):
    (tmp_path / "prompts").mkdir()
    _write_wav(tmp_path / "prompts" / "welcome.wav")
    (tmp_path / "prompts" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    text = ("start: a\nnodes:\n  a: {type: play, file: prompts/welcome.wav, next: b}\n"
            "  b: {type: play, file: prompts/broken.wav, next: c}\n"
            "  c: {type: play, file: prompts/Welcome.wav, next: d}\n"
            "  d: {type: menu, prompt: {play: prompts/menu.wav}, options: {1: q}, fallback: q}\n"
            "  q: {type: queue, queue: q, announcements: {prompt: {play: prompts/hold.wav}}}\n")
    issues = _lint(text, tmp_path)
    assert [(i.issue.line, i.code) for i in issues] == [(4, "bad-prompt"), (5, "missing-prompt"),
                                                        (6, "missing-prompt"), (7, "missing-prompt")]
    assert "did you mean 'prompts/welcome.wav'?" in issues[1].message
    assert issues[2].issue.key == "nodes.d.prompt.play"
    assert issues[3].issue.key == "nodes.q.announcements.prompt.play"


def test_a_flow_calling_itself_is_recursive_even_without_the_graph(tmp_path):
    text = "start: s\nnodes:\n  s: {type: subflow, flow: f, next: q}\n  q: {type: queue, queue: q}\n"
    issues = _lint(text, tmp_path)
    assert [i.code for i in issues] == ["recursive-subflow"]


def _write_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 800)


def test_lint_files_knows_the_other_flows(tmp_path):
    (tmp_path / "main.yaml").write_text(
        "start: s\nnodes:\n  s: {type: subflow, flow: ask, next: t}\n"
        "  t: {type: say, text: '{{ pin }}', next: q}\n  q: {type: queue, queue: q}\n", encoding="utf-8")
    (tmp_path / "ask.yaml").write_text(
        "\ufeffstart: c\nnodes:\n  c: {type: collect, variable: pin, next: r}\n  r: {type: return}\n",
        encoding="utf-8")  # a byte order mark, as Notepad writes
    (tmp_path / "other.yaml").write_text("start: r\nnodes:\n  r: {type: return}\n", encoding="utf-8")
    env = LintEnvironment(flows_dir=tmp_path)
    results = lint_files([tmp_path / "main.yaml", tmp_path / "ask.yaml", tmp_path / "missing.yaml"], env)
    assert results[tmp_path / "main.yaml"] == []  # ask exists, and its pin is shared with main
    assert results[tmp_path / "ask.yaml"] == []  # main runs ask as a subflow: its return is used
    assert [i.code for i in results[tmp_path / "missing.yaml"]] == ["file"]
    assert [(i.code, i.severity) for i in lint_files([tmp_path / "other.yaml"], env)[tmp_path / "other.yaml"]] \
        == [("unused-return", "warning")]
    (tmp_path / "main.yaml").write_text(
        "start: s\nnodes:\n  s: {type: subflow, flow: nope, next: q}\n  q: {type: queue, queue: q}\n",
        encoding="utf-8")
    issues = lint_files([tmp_path / "main.yaml"], env)[tmp_path / "main.yaml"]
    assert [i.code for i in issues] == ["unknown-flow"]


def test_the_default_flows_are_clean():
    paths = sorted((ROOT / "ivr_flows").glob("*.yaml"))
    results = lint_files(paths, LintEnvironment(flows_dir=ROOT / "ivr_flows"))
    assert {path.name: [str(i) for i in issues if i.severity == "error"] for path, issues in results.items()} \
        == {path.name: [] for path in paths}


# -- docs/flows.md and docs/flow.schema.json -----------------------------------------------------------------
def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "flows.md").read_text(encoding="utf-8")
    return re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)


def test_the_guide_has_an_example_of_every_node_type():
    types = {node.type for block in _doc_examples() for node in parse_flow(block, "x.yaml").document.nodes.values()}
    assert types == {"answer", "play", "say", "menu", "collect", "switch", "hours", "set", "queue", "transfer",
                     "record", "callback", "subflow", "return", "hangup"}


@pytest.mark.parametrize("index", range(len(_doc_examples())))
def test_every_example_of_the_guide_is_a_valid_flow(index, tmp_path):
    block = _doc_examples()[index]
    parsed = parse_flow(block, f"docs/flows.md example {index + 1}")
    for node in parsed.document.nodes.values():
        for _, spec in node.prompts():
            if isinstance(spec, PlayPrompt):
                _write_wav(tmp_path / spec.play)
    errors = [str(i) for i in lint_parsed(parsed, LintEnvironment(flows_dir=tmp_path)) if i.severity == "error"]
    assert errors == []


def test_the_committed_schema_is_up_to_date():
    committed = (ROOT / "docs" / "flow.schema.json").read_text(encoding="utf-8")
    generated = json.dumps(flow_json_schema(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    assert committed == generated, "docs/flow.schema.json is stale: run `callcenter flows schema > " \
                                   "docs/flow.schema.json`"
    schema = json.loads(committed)
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["title"]
    assert set(schema["required"]) == {"start", "nodes"}
