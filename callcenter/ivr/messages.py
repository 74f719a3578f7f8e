"""Chinese for every problem a flow can have, so that a supervisor who reads no English knows what to fix.

:mod:`callcenter.ivr.document`, :mod:`callcenter.yamlsource` and :mod:`callcenter.ivr.lint` write their
messages in English; :func:`chinese` translates them with an ordered table of patterns (the parts a message
quotes — names, values, paths — are kept as written). :func:`bilingual` gives the two lines shown in the log
and by ``callcenter flows lint``::

    ivr_flows/hotline.yaml:19:5: nodes.menu.timout: unknown key 'timout' — did you mean 'timeout'?
      ivr_flows/hotline.yaml:19:5: 未知的键 'timout'，是否应为 'timeout'？

A message no pattern knows is shown as ``流程文件有误：`` + the English (tests keep the table complete).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from callcenter.yamlsource import SourceIssue

if TYPE_CHECKING:
    from callcenter.ivr.lint import LintIssue

FALLBACK = "流程文件有误："

# -- pieces that appear inside many messages ------------------------------------------------------------------
_LABELS = {  # "(label: a, b, c)" after a message
    "nodes": "本流程的节点", "queues": "已配置的队列", "flows": "已有的流程", "trunks": "已配置的中继线路",
    "buttons": "终端按键", "names": "可用的名称", "types": "节点类型", "known keys": "可用的键",
    "caller has": "caller 可用的项", "call has": "call 可用的项", "texts": "现有的语言",
}
_NONE_CONFIGURED = {"queues": "配置里还没有任何队列", "flows": "还没有任何流程", "trunks": "配置里还没有任何中继线路",
                    "nodes": "本流程还没有节点", "buttons": "没有终端按键", "names": "没有可用的名称"}

_EXPECTED: list[tuple[str, str]] = [  # what a value should be (regex, Chinese); \1... are kept as written
    (r"a string", "文字"),
    (r"an integer", "整数"),
    (r"a whole number", "整数"),
    (r"a number greater than (\S+)", r"大于 \1 的数字"),
    (r"a number >= (\S+)", r"不小于 \1 的数字"),
    (r"a number less than (\S+)", r"小于 \1 的数字"),
    (r"a number <= (\S+)", r"不大于 \1 的数字"),
    (r"a number", "数字"),
    (r"true", "true"),
    (r"false", "false"),
    (r"true or false", "true 或 false（是或否）"),
    (r"a mapping of keys", "键值（每行写“键: 值”）"),
    (r"a list with at least (\d+) item\(s\)", r"至少有 \1 项的列表"),
    (r"a list", "列表（每行写“- 值”，或写成 [a, b]）"),
    (r"at least (\d+) character\(s\)", r"至少 \1 个字"),
    (r"a value matching (.+)", r"符合格式 \1 的值"),
    (r"a variable name \(letters, digits, _\)", "变量名（字母、数字或 _，不以数字开头）"),
    (r"letters, digits, '_' or '-'", "字母、数字、'_' 或 '-'"),
    (r"a path inside the flows folder \(e\.g\. prompts/welcome\.wav\)",
     "流程文件夹里的相对路径（例如 prompts/welcome.wav）"),
    (r'"#", "\*" or "" \(none\)', '"#"、"*" 或 ""（不用结束键）'),
    (r'"HH:MM-HH:MM"', '"时:分-时:分" 的时间段（例如 "08:00-18:00"）'),
    (r"one key \(0-9, \* or #\)", "一个按键（0-9、* 或 #）"),
    (r"a text to say, \{say: \.\.\.\} or \{play: prompts/\.\.\.\.wav\}",
     "要说的文字、{say: ...}（文字）或 {play: prompts/....wav}（录音文件）"),
    (r"a valid date.*", "日期（例如 2026-10-01）"),
    (r"a node \(a mapping with a type\)", "节点（带 type 的键值）"),
    (r"a flow \(a mapping with start and nodes\)", "流程（带 start 和 nodes 的键值）"),
    (r"a single value \(a YAML scalar\)", "单个值"),
    (r"a name like (\S+)", r"形如 \1 的名称"),
    (r"'[^']*'", r"\g<0>"),  # one choice of a list of literals: 'cmn'
]
_VALUES = {"a list": "列表", "a mapping": "键值", "null": "空值", "none": "空"}


def _expected(what: str) -> str | None:
    """Translate "a number >= 15" or "'mon', 'tue' or 'sun'" or "a string, an integer or true or false"."""
    for pattern, chinese_text in _EXPECTED:
        match = re.fullmatch(pattern, what)
        if match:
            return match.expand(chinese_text)
    parts = re.split(r", | or ", what)
    if len(parts) > 1:
        pieces = [_expected(part) for part in parts]
        if all(pieces):
            left, last = "、".join(p for p in pieces[:-1] if p), pieces[-1] or ""
            return f"{left}{_space(left[-1:])}或{_space(last)}{last}"
    return None


def _value(got: str) -> str:
    return _VALUES.get(got, got)


def _tail(tail: str) -> str:
    """" — did you mean 'x'?" or " (nodes: a, b)" after a message."""
    if not tail:
        return ""
    match = re.fullmatch(r" — did you mean '(.*)'\?", tail)
    if match:
        return f"，是否应为 '{match[1]}'？"
    match = re.fullmatch(r" \(no (\w+) are configured\)", tail)
    if match:
        return f"（{_NONE_CONFIGURED.get(match[1], match[1])}）"
    match = re.fullmatch(r" \(([\w ]+): (.*)\)", tail)
    if match and match[1] in _LABELS:
        return f"（{_LABELS[match[1]]}：{match[2]}）"
    match = re.fullmatch(r" \(a (\w+) node has: (.*)\)", tail)
    if match:
        return f"（{match[1]} 节点可用的键：{match[2]}）"
    match = re.fullmatch(r" \(set it with a set or collect node first, or use a built-in name: (.*)\)", tail)
    if match:
        return f"（请先用 set 或 collect 节点设置它，或使用内置名称：{match[1]}）"
    return f"（{tail.strip(' ()')}）"


_JINJA: list[tuple[str, str]] = [  # Jinja2's syntax messages
    (r"unexpected '?end of template'?.*", "没有写完（是不是少了括号、引号、}} 或 %}？）"),
    (r"Unexpected end of template\. Jinja was looking for the following tags: (.*)\. "
     r"The innermost block that needs to be closed is '(\w+)'\.", r"'\2' 块没有结束（缺少 \1）"),
    (r"unexpected '(.+?)', expected '(.+?)'", r"多了 '\1'，这里应为 '\2'"),
    (r"unexpected '(.+?)'", r"多了 '\1'（括号或引号是否配对？）"),
    (r"expected token '(.+?)', got '(.+?)'", r"这里应为 '\1'，却写了 '\2'（比较相等请用 ==，并且/或者请用 and/or）"),
    (r"Encountered unknown tag '(\w+)'\..*", r"不认识的标签 '\1'"),
    (r"unexpected char '(.+?)' at \d+", r"不认识的字符 '\1'（文字要加引号）"),
    (r"chunk after expression", "条件后面多了内容（比较相等请用 ==）"),
    (r"(.+)", r"\1"),
]

_YAML: list[tuple[str, str]] = [  # PyYAML's syntax messages
    (r".*found character '\\t' that cannot start any token.*", "用了 Tab 键缩进，请全部改用空格"),
    (r".*expected <block end>, but found.*", "缩进没有对齐（同一层的键要左边对齐，用空格缩进）"),
    (r".*mapping values are not allowed here.*",
     "这里不能有冒号（可能是上一行的缩进不对；文字里有冒号“:”时，请给整段文字加引号）"),
    (r"a text that starts with \{\{ or \{% must be in quotes, e\.g\. (.*)",
     r"以 {{ 或 {% 开头的文字要加引号，例如 \1"),
    (r".*could not find expected ':'.*", "少了冒号 ':'（写法是“键: 值”）"),
    (r".*found unexpected end of stream.*", "引号没有配对（少了结尾的引号）"),
    (r".*(expected alphabetic or numeric character|found undefined alias).*",
     '以 * 或 & 开头的值要加引号，例如 "*"'),
    (r".*found character '(.)' that cannot start any token.*", r"以 \1 开头的文字要加引号"),
    (r".*expected ',' or '[}\]]'.*", "{ } 或 [ ] 没有配对，或者少了逗号"),
    (r".*found unhashable key.*", "键不能是列表或键值"),
    (r".*expected a single document.*", "一个文件只能写一个流程（去掉 --- 分隔线）"),
    (r"(.+)", r"\1"),
]
_OS_ERRORS = {"No such file or directory": "文件不存在", "Permission denied": "没有读取权限",
              "Is a directory": "这是一个文件夹，不是文件"}
_DATE_PROBLEMS = {"day is out of range for month": "这个月没有这一天", "month must be in 1..12": "月份应为 1 到 12"}


def _first(table: list[tuple[str, str]], text: str) -> str:
    for pattern, chinese_text in table:
        match = re.fullmatch(pattern, text, re.DOTALL)
        if match:
            return match.expand(chinese_text)
    return text


def _jinja(text: str) -> str:
    match = re.fullmatch(r"line (\d+): (.*)", text, re.DOTALL)
    if match:
        return f"第 {match[1]} 行{_first(_JINJA, match[2])}"
    return _first(_JINJA, text)


# -- the table: (pattern, Chinese); groups named tail / what / got / jinja / yaml are translated ---------------
_T = "(?P<tail>( — did you mean .*| \\(.*\\))?)"
_RULES: list[tuple[str, str | Callable[[re.Match[str]], str | None]]] = [
    # yamlsource: syntax, duplicates, types
    (r"invalid YAML: (?P<yaml>.*)", "YAML 格式错误：{yaml}"),
    (r"duplicate key '(?P<k>.*)' \(first on line (?P<n>\d+)\)", "键 '{k}' 重复了（第一次出现在第 {n} 行）"),
    (r"missing required key '(?P<k>.*)'", "缺少必填的键 '{k}'"),
    (r"unknown key '(?P<k>.*?)'" + _T, "未知的键 '{k}'{tail}"),
    (r"expected at least (?P<n>\d+) entry\(ies\), got none", "至少要写 {n} 项，这里一项也没有"),
    (r"expected (?P<what>.+?), got (?P<got>.+?)(?P<hint> \(write numbers in quotes, e\.g\. \"1001\"\))?",
     lambda m: _expected_got(m)),
    (r"expected (?P<what>.+)", lambda m: (f"应为{_space(w)}{w}" if (w := _expected(m["what"])) else None)),
    (r"cannot set it: '(?P<k>.*)' is not a section", "无法设置：'{k}' 不是一个配置段"),
    (r"'(?P<k>.*)' is a list; lists cannot be set from the environment — set it in the configuration file",
     "'{k}' 是列表，不能用环境变量设置，请在配置文件里设置"),
    # document: the file and its nodes
    (r"the file is empty: a flow needs 'start' and 'nodes'",
     "文件是空的：流程至少要有 start（开始节点）和 nodes（节点）"),
    (r"not a real date: (?P<v>.*) \((?P<why>.*)\)",
     lambda m: f"日期 {m['v']} 不存在（{_DATE_PROBLEMS.get(m['why'], m['why'])}）"),
    (r"not a real value: (?P<v>.*) \((?P<why>.*)\)", "无法读取这个值：{v}（{why}）"),
    (r"missing 'type' \(one of: (?P<types>.*)\)", "缺少 'type'（节点类型，可选：{types}）"),
    (r"unknown node type (?P<v>.*?)" + _T, "未知的节点类型 {v}{tail}"),
    (r"a node name is a word \(letters, digits, _ or -\), got (?P<v>.*)",
     "节点名称应为一个词（汉字、字母、数字、_ 或 -，不以数字开头），这里写的是 {v}"),
    (r"the text to say is empty", "要说的文字是空的"),
    (r"there is no '(?P<lang>.*)' text to say \(the texts are: (?P<langs>.*)\)",
     "没有 '{lang}' 语言的文字（现有：{langs}）"),
    (r'give either "say" \(a text\) or "play" \(a WAV file\), not both',
     "say（说文字）和 play（放录音）只能写一个"),
    (r'expected the choices, e\.g\. 1: node \(# starts a comment in YAML: write "#" and "\*" in quotes\)',
     '请写菜单的按键，例如 1: 节点名（YAML 里 # 表示注释：按键 # 和 * 要加引号写成 "#"、"*"）'),
    (r"a menu choice is digits, \* or #, got (?P<v>.*)", "菜单的按键只能是数字、* 或 #，这里写的是 {v}"),
    (r"min_digits \((?P<a>\d+)\) is more than max_digits \((?P<b>\d+)\)",
     "最少位数 min_digits（{a}）大于最多位数 max_digits（{b}）"),
    (r"not a time of day: (?P<v>.*)", "{v} 不是有效的时间（时 00-24，分 00-59）"),
    (r"(?P<v>.*) ends before it starts \(split a night shift in two ranges\)",
     '{v} 的结束时间早于开始时间（跨过午夜的夜班请分成两段，例如 "20:00-24:00" 和 "00:00-08:00"）'),
    (r'unknown time zone (?P<v>.*) \(e\.g\. "Asia/Shanghai"\)', '未知的时区 {v}（例如 "Asia/Shanghai"）'),
    (r'give the opening hours: "schedule" \(7x24, 7x10 or 7x8\) or "weekly"',
     "请写工作时间：schedule（7x24、7x10 或 7x8）或 weekly（每周时间表）"),
    (r'give either "schedule" \(7x24, 7x10 or 7x8\) or "weekly" opening hours, not both',
     "schedule（固定时间）和 weekly（每周时间表）只能写一个"),
    (r'give exactly one of "number", "queue" or "flow"',
     "number（号码）、queue（队列）、flow（流程）三者必须写一个，且只能写一个"),
    # lint: structure
    (r"'(?P<v>.*?)' is not a node of this flow" + _T, "本流程没有名为 '{v}' 的节点{tail}"),
    (r"dangling transition: '(?P<v>.*?)' is not a node of this flow" + _T, "跳转到了不存在的节点 '{v}'{tail}"),
    (r"unreachable node: nothing leads to '(?P<v>.*)' from start '(?P<s>.*)', so it never runs",
     "节点 '{v}' 永远不会执行：从开始节点 '{s}' 出发，没有任何跳转通到它"),
    (r"loop that never waits for the caller: (?P<path>.*) only sets variables and tests conditions, the call would "
     r"spin \(put a menu, say or play node in the loop\)",
     "死循环：{path} 只设置变量、判断条件，从不等待来电者，通话会原地空转（请在循环里加入菜单、说话或放音节点）"),
    (r"loop without exit: (?P<path>.*) never reaches a queue, transfer or hangup",
     "循环没有出口：{path} 永远到不了排队（queue）、转接（transfer）或挂机（hangup）"),
    # lint: templates
    (r"template error: (?P<jinja>.*)", "模板（{{{{ }}}} 或 {{% %}} 部分）写错了：{jinja}"),
    (r"unknown variable '(?P<v>.*?)'" + _T, "未知的变量 '{v}'{tail}"),
    (r"'(?P<o>caller|call)' has no '(?P<v>.*?)'" + _T, "{o} 没有 '{v}' 这一项{tail}"),
    (r"'(?P<v>.*)' is a built-in name \(see the template names\): the flow would never see this value — choose "
     r"another name", "'{v}' 是内置名称，流程读不到这里设置的值，请换一个变量名"),
    (r"'(?P<v>.*?)' is not a terminal button" + _T, "'{v}' 不是终端按键的名称{tail}"),
    # lint: prompts, queues, flows
    (r"prompt file not found: (?P<p>.*) \(looked in (?P<q>.*?)\)" + _T, "找不到提示音文件：{p}（查找位置：{q}）{tail}"),
    (r"prompt file cannot be played: (?P<p>.*?) \((?P<why>.*)\)",
     "提示音文件无法播放：{p}（需要 WAV 格式的录音；原因：{why}）"),
    (r"no text in the flow's language '(?P<lang>.*)' \(texts: (?P<langs>.*)\)",
     "缺少流程语言 '{lang}' 的文字（现有：{langs}），不知道语言的来电者会听到别的语言"),
    (r"a long menu prompt \((?P<n>\d+) characters\): elders forget the first choices — keep menus short \(say 4 "
     r"choices or fewer\)", "菜单提示语太长（{n} 个字）：老人听到后面就忘了前面，请尽量简短（最好不超过 4 个选项）"),
    (r"unknown queue '(?P<v>.*?)'" + _T, "未知的队列 '{v}'{tail}"),
    (r"unknown flow '(?P<v>.*?)'" + _T, "未知的流程 '{v}'{tail}"),
    (r"unknown trunk '(?P<v>.*?)'" + _T, "未知的中继线路 '{v}'{tail}"),
    (r"an emergency with max_wait: an emergency caller should wait for an operator, however long it takes \(the "
     r"ACD seizes one\)", "紧急呼叫设置了 max_wait（最长等待）：紧急来电应该一直等到话务员接听（排队机会抢线）"),
    (r"max_wait without on_timeout: the call is hung up when the wait passes \(say where it should go instead\)",
     "设置了 max_wait（最长等待）却没有 on_timeout：等待超时后通话会被挂断（请写明超时后去哪里）"),
    (r"recursive subflow: (?P<path>.*): a flow cannot run itself as a subflow \(the calls would never end\)",
     "子流程循环调用：{path}，流程不能把自己当作子流程运行（会无限调用下去）"),
    (r"'return' in a flow that no flow runs as a subflow: when this flow is called directly, the call ends here",
     "本流程没有被任何流程当作子流程（subflow）调用，直接运行时通话会在这个 return（返回）节点结束"),
    (r"choice '(?P<a>.*)' starts with choice '(?P<b>.*)': a caller pressing (?P<c>.*) waits (?P<n>[\d.]+) seconds "
     r"before anything happens", "按键 '{a}' 以按键 '{b}' 开头：来电者按 {c} 后要等 {n} 秒才有反应"),
    (r"choice (?P<a>.*) is read as the number (?P<b>.*): write it in quotes \((?P<q>.*)\)",
     "按键 {a} 会被读成数字 {b}，请加引号写成 {q}"),
    (r'# starts a comment in YAML, so the choice "#" → (?P<n>.*) is ignored: write it in quotes \((?P<q>.*)\)',
     'YAML 里 # 表示注释，所以按键 "#" → {n} 被忽略了：请加引号写成 {q}'),
    (r"'flow: (?P<a>.*)' does not match the file name '(?P<b>.*)' \(remove the flow: line or make them the same\)",
     "'flow: {a}' 与文件名 '{b}' 不一致（请删掉 flow: 这一行，或改成一致）"),
    (r"cannot read the file: (?P<why>.*)", lambda m: f"无法读取文件：{_OS_ERRORS.get(m['why'], m['why'])}"),
    (r"the file is not UTF-8 text \(it may be GBK\): save it as UTF-8",
     "文件不是 UTF-8 编码（可能是 GBK）：请用 UTF-8 编码另存"),
]
_COMPILED = [(re.compile(pattern, re.DOTALL), template) for pattern, template in _RULES]


def _expected_got(match: re.Match[str]) -> str | None:
    what = _expected(match["what"])
    if what is None:
        return None
    hint = "（数字请加引号，例如 \"1001\"）" if match["hint"] else ""
    got = _value(match["got"])
    return f"应为{_space(what)}{what}，实际写的是{_space(got)}{got}{hint}"


def _space(text: str) -> str:
    """A space between Chinese and a following Latin word or quote: 应为 'cmn'."""
    return " " if text[:1].isascii() else ""


def _translate(match: re.Match[str], template: str | Callable[[re.Match[str]], str | None]) -> str | None:
    if callable(template):
        return template(match)
    groups = {name: value or "" for name, value in match.groupdict().items()}
    if "tail" in groups:
        groups["tail"] = _tail(groups["tail"])
    if "jinja" in groups:
        groups["jinja"] = _jinja(groups["jinja"])
    if "yaml" in groups:
        groups["yaml"] = _first(_YAML, groups["yaml"])
    return template.format_map(groups)


def translate(message: str) -> str | None:
    """The Chinese for an English message, or None when no pattern knows it."""
    for pattern, template in _COMPILED:
        match = pattern.fullmatch(message)
        if match:
            text = _translate(match, template)
            if text is not None:
                return text
    return None


def chinese(message: str) -> str:
    """The Chinese for an English message (a generic sentence + the English when no pattern knows it)."""
    return translate(message) or FALLBACK + message


def bilingual(issue: SourceIssue | LintIssue) -> str:
    """Two lines: the English issue, then, indented, the same position with the message in Chinese."""
    source_issue = issue if isinstance(issue, SourceIssue) else issue.issue
    warning = not isinstance(issue, SourceIssue) and issue.severity == "warning"
    where = source_issue.source if source_issue.line is None else \
        f"{source_issue.source}:{source_issue.line}:{source_issue.column}"
    text = chinese(source_issue.message) + ("（提醒）" if warning else "")
    return f"{issue}\n  {where}: {text}"
