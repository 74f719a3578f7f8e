"""Whole-document checks of IVR flows, run before a flow goes live.

:func:`callcenter.ivr.parsing.parse_flow` checks each value on its own (types, shapes); this module checks the
document as a whole and against its surroundings: transitions name existing nodes, every node can be reached,
no loop traps the caller (or spins without waiting), templates compile and only use names that exist, prompt
files are WAVs that decode, queues / flows / trunks exist, subflows do not call themselves. Every problem is a
:class:`LintIssue` with a stable ``code`` and a ``file:line:column`` position; :mod:`callcenter.ivr.messages`
translates the messages into Chinese for supervisors.

Codes (errors unless marked *warning*):

=====================  ==================================================================================
``yaml``               the file is not valid YAML (syntax, tab, duplicate key, empty file)
``type``               the document does not fit the flow format (unknown key, wrong type, bad value...)
``file``               the file cannot be read or is not UTF-8
``flow-name``          ``flow:`` disagrees with the file name
``start``              ``start`` names no node
``dangling-transition`` a transition names no node
``unreachable-node``   no path from ``start`` leads to the node
``loop-without-exit``  a loop from which no queue, transfer, hangup or return can be reached
``loop-never-waits``   a loop of set / switch / hours / answer nodes only: the call would spin
``template``           a template or condition does not compile
``unknown-variable``   a template uses a name no node sets and that is not built in
``unknown-attribute``  ``caller.x`` / ``call.x`` that does not exist
``reserved-name``      a set / collect variable named like a built-in name (it would be ignored)
``missing-prompt``     a prompt file that does not exist
``bad-prompt``         a prompt file that is not a WAV we can play
``unknown-queue``      a queue that is not configured (when the queues are known)
``unknown-flow``       a subflow / transfer flow that does not exist (when the flows are known)
``unknown-trunk``      a trunk that is not configured (when the trunks are known)
``recursive-subflow``  a flow that runs itself through subflows
``menu-key``           a menu choice YAML reads as a different number (``010`` is 8): quote it
``unused-return``      *warning*: a ``return`` in a flow no flow runs as a subflow
``menu-prefix``        *warning*: choices "1" and "12": pressing 1 waits for the inter-digit timeout
``long-prompt``        *warning*: a menu prompt longer than :data:`LONG_MENU_PROMPT` characters
``missing-language``   *warning*: texts per language without the flow's language
``unknown-button``     *warning*: a condition compares ``button`` with a name that is not a button
``emergency-max-wait`` *warning*: an emergency queue node with ``max_wait``: an emergency should never give up
``max-wait-no-exit``   *warning*: ``max_wait`` without ``on_timeout``: the call is hung up when it passes
=====================  ==================================================================================
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import nodes as jinja_nodes
from jinja2.defaults import DEFAULT_NAMESPACE

from callcenter.ivr import document as d
from callcenter.ivr import graph as g
from callcenter.ivr.context import (
    BUILTIN_NAMES,
    BUTTONS,
    CALL_ATTRIBUTES,
    CALLER_ATTRIBUTES,
    TemplateError,
    parse_template,
    references,
)
from callcenter.ivr.parsing import FlowError, ParsedFlow, parse_flow
from callcenter.yamlsource import Loc, SourceIssue

Severity = Literal["error", "warning"]
LONG_MENU_PROMPT = 60  # characters (without spaces): elders forget the first choices of a long menu
_NOT_WAITING = (d.SetNode, d.SwitchNode, d.HoursNode, d.AnswerNode)  # nodes that return at once
_JINJA_GLOBALS = frozenset(DEFAULT_NAMESPACE)  # range, dict, namespace...
_EXITS = "a queue, transfer or hangup"


@dataclass(frozen=True)
class LintEnvironment:
    """What a flow is checked against. ``None`` means "unknown: do not check"."""

    flows_dir: Path  # prompt files (play: / file:) are relative to it
    flow_names: frozenset[str] | None = None  # flows that exist (subflow / transfer flow:)
    queues: frozenset[str] | None = None  # configured queue names
    trunks: frozenset[str] | None = None  # configured trunk names
    extra_variables: frozenset[str] = frozenset()  # variables set elsewhere (by a calling flow...)
    subflow_graph: Mapping[str, frozenset[str]] | None = None  # flow -> flows it runs as subflows


@dataclass(frozen=True)
class LintIssue:
    issue: SourceIssue
    severity: Severity
    code: str  # stable short code (see the module docstring)

    def __str__(self) -> str:
        return str(self.issue) + (" (warning)" if self.severity == "warning" else "")

    @property
    def message(self) -> str:
        return self.issue.message


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file (docs/flow.schema.json; editors use it to complete and check YAML)."""
    schema = d.FlowDocument.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "IVR flow (ivr_flows/*.yaml)",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def _sort_key(issue: LintIssue) -> tuple[int, int, str, str, str]:
    return (issue.issue.line or 0, issue.issue.column or 0, issue.issue.key, issue.code, issue.message)


def _did_you_mean(word: str, choices: Iterable[str], what: str) -> str:
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f" — did you mean '{close[0]}'?"
    if not choices:
        return f" (no {what} are configured)"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f" ({what}: {shown})"


# -- templates -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Text:
    loc: Loc  # inside the document
    text: str
    expression: bool = False


def _prompt_texts(loc: Loc, spec: d.SayPrompt) -> Iterator[_Text]:
    base = loc if loc[-1] == "text" else (*loc, "say")  # a say node's text is the prompt's say
    if isinstance(spec.say, str):
        yield _Text(base, spec.say)
    else:
        for language, text in spec.say.items():
            yield _Text((*base, language), text)


def _node_texts(node: Any) -> Iterator[_Text]:
    for loc, spec in node.prompts():
        if isinstance(spec, d.SayPrompt):
            yield from _prompt_texts(loc, spec)
    if isinstance(node, d.SetNode):
        for name, value in node.variables.items():
            if isinstance(value, str):
                yield _Text(("variables", name), value)
    elif isinstance(node, d.TransferNode) and node.number is not None:
        yield _Text(("number",), node.number)
    elif isinstance(node, d.QueueNode):
        for skill, value in node.skills.items():
            yield _Text(("skills", skill), value)
    elif isinstance(node, d.SwitchNode):
        for index, case in enumerate(node.cases):
            yield _Text(("cases", index, "when"), case.when, expression=True)


def _button_values(tree: jinja_nodes.Node) -> Iterator[str]:
    """String constants a condition compares ``button`` / ``call.button`` with."""

    def is_button(expr: jinja_nodes.Node) -> bool:
        return (isinstance(expr, jinja_nodes.Name) and expr.name == "button") or (
            isinstance(expr, jinja_nodes.Getattr) and expr.attr == "button"
            and isinstance(expr.node, jinja_nodes.Name) and expr.node.name == "call")

    def strings(expr: jinja_nodes.Node) -> Iterator[str]:
        if isinstance(expr, jinja_nodes.Const) and isinstance(expr.value, str):
            yield expr.value
        elif isinstance(expr, jinja_nodes.List | jinja_nodes.Tuple):
            for item in expr.items:
                yield from strings(item)

    for compare in tree.find_all(jinja_nodes.Compare):
        operands = [compare.expr, *(op.expr for op in compare.ops)]
        if any(is_button(operand) for operand in operands):
            for operand in operands:
                yield from strings(operand)


def _yaml_node(root: yaml.Node, loc: Loc, deepest: bool = False) -> yaml.Node | None:
    """The YAML node at ``loc`` (or, with ``deepest``, the deepest node found on the way: what
    :func:`~callcenter.yamlsource.locate` points at, e.g. the text of ``prompt: "..."`` for prompt.say)."""
    node: yaml.Node | None = root
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in reversed(node.value) if getattr(k, "value", None) == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            return node if deepest else None
        node = child
    return node


# -- prompt files ----------------------------------------------------------------------------------------
@lru_cache(maxsize=512)
def _wav_problem(path: Path, mtime_ns: int, size: int) -> str | None:
    from callcenter.media.prompts import PromptError, read_wav

    try:
        read_wav(path)
    except PromptError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # a WAV header lying about its sizes, numpy refusing the samples...
        return f"{exc.__class__.__name__}: {exc}"
    return None


def _prompt_file_problem(flows_dir: Path, relative: str) -> tuple[str, str] | None:
    """(code, message) when ``flows_dir / relative`` is not a playable WAV."""
    path = flows_dir / relative
    try:
        stat = path.stat()
    except (OSError, ValueError):  # ValueError: a NUL in the name
        hint = ""
        if "\0" not in relative and path.parent.is_dir():
            names = [p.name for p in path.parent.iterdir() if p.is_file()]
            same = [n for n in names if n.lower() == path.name.lower()]
            close = same or difflib.get_close_matches(path.name, names, n=1)
            if close:
                hint = f" — did you mean '{str(Path(relative).parent / close[0]).removeprefix('./')}'?"
        return "missing-prompt", f"prompt file not found: {relative} (looked in {path}){hint}"
    if not path.is_file():
        return "bad-prompt", f"prompt file cannot be played: {relative} (not a file)"
    problem = _wav_problem(path, stat.st_mtime_ns, stat.st_size)
    if problem is not None:
        return "bad-prompt", f"prompt file cannot be played: {relative} ({problem})"
    return None


# -- the checks ------------------------------------------------------------------------------------------
@dataclass
class _Linter:
    flow: ParsedFlow
    env: LintEnvironment
    issues: list[LintIssue] = field(default_factory=list)

    @property
    def nodes(self) -> dict[str, Any]:
        return self.flow.document.nodes

    def add(self, loc: Loc, message: str, code: str, severity: Severity = "error", at_key: bool = False) -> None:
        self.issues.append(LintIssue(self.flow.issue(loc, message, at_key=at_key), severity, code))

    def run(self) -> list[LintIssue]:
        self.structure()
        self.templates()
        self.prompt_files()
        self.references()
        self.queue_waits()
        self.subflows()
        self.menus()
        return sorted(self.issues, key=_sort_key)

    # structure: start, transitions, reachability, loops
    def structure(self) -> None:
        document, nodes = self.flow.document, self.nodes
        if document.start not in nodes:
            self.add(("start",), f"'{document.start}' is not a node of this flow"
                                 f"{_did_you_mean(document.start, nodes, 'nodes')}", "start")
        for name, node in nodes.items():
            for loc, target in node.transitions():
                if target not in nodes:
                    self.add(("nodes", name, *loc), f"dangling transition: '{target}' is not a node of this flow"
                                                    f"{_did_you_mean(target, nodes, 'nodes')}", "dangling-transition")
        if document.start not in nodes:
            return
        edges = g.edges(nodes)
        reachable = g.reachable(edges, [document.start])
        for name in nodes:
            if name not in reachable:
                self.add(("nodes", name), f"unreachable node: nothing leads to '{name}' from start "
                                          f"'{document.start}', so it never runs", "unreachable-node", at_key=True)
        members = [name for name in nodes if name in reachable]
        spinning: list[list[str]] = []
        for component in g.cycles(edges, [n for n in members if isinstance(nodes[n], _NOT_WAITING)]):
            spinning.append(component)
            path = " → ".join(g.cycle_path(edges, component))
            self.add(("nodes", component[0]), f"loop that never waits for the caller: {path} only sets "
                                              "variables and tests conditions, the call would spin (put a menu, "
                                              "say or play node in the loop)", "loop-never-waits", at_key=True)
        exits = [n for n in members if nodes[n].ends_call or isinstance(nodes[n], d.QueueNode)]
        backwards: dict[str, list[str]] = {}
        for name, targets in edges.items():
            for target in targets:
                backwards.setdefault(target, []).append(name)
        leaving = g.reachable(backwards, exits)
        for component in g.cycles(edges, [n for n in members if n not in leaving]):
            inside = set(component)
            if component in spinning or any(t not in inside for n in component for t in edges[n]):
                continue  # report the loop the call ends up in, not every loop on the way to it
            path = " → ".join(g.cycle_path(edges, component))
            self.add(("nodes", component[0]), f"loop without exit: {path} never reaches {_EXITS}",
                     "loop-without-exit", at_key=True)

    # templates: syntax, names, attributes
    def known_names(self) -> frozenset[str]:
        names = set(BUILTIN_NAMES) | set(_JINJA_GLOBALS) | set(self.env.extra_variables)
        for name, node in self.nodes.items():
            if isinstance(node, d.RecordNode):
                names.add("message_seconds")  # the length of the recorded message
            variables = list(node.variables) if isinstance(node, d.SetNode) else \
                [node.variable] if isinstance(node, d.CollectNode) else []
            for variable in variables:
                names.add(variable)
                if variable in BUILTIN_NAMES:
                    loc = ("nodes", name, "variables", variable) if isinstance(node, d.SetNode) \
                        else ("nodes", name, "variable")
                    self.add(loc, f"'{variable}' is a built-in name (see the template names): the flow would "
                                  "never see this value — choose another name", "reserved-name",
                             at_key=isinstance(node, d.SetNode))
        return frozenset(names)

    def templates(self) -> None:
        known = self.known_names()
        suggestions = sorted(known - _JINJA_GLOBALS)
        for name, node in self.nodes.items():
            for text in _node_texts(node):
                loc = ("nodes", name, *text.loc)
                try:
                    tree = parse_template(text.text, expression=text.expression)
                except TemplateError as exc:
                    line = _template_line(str(exc))
                    self.add_at_line(loc, line, f"template error: {exc}", "template")
                    continue
                loops = any(True for _ in tree.find_all(jinja_nodes.For))
                for ref in references(tree):
                    if ref.name not in known and not (loops and ref.name == "loop"):
                        hint = _did_you_mean(ref.name, suggestions, "names")
                        if "did you mean" not in hint:
                            hint = " (set it with a set or collect node first, or use a built-in name: " \
                                   f"{', '.join(sorted(BUILTIN_NAMES))})"
                        self.add_at_line(loc, ref.line, f"unknown variable '{ref.name}'{hint}", "unknown-variable")
                        continue
                    attributes = {"caller": CALLER_ATTRIBUTES, "call": CALL_ATTRIBUTES}.get(ref.name)
                    if attributes is not None and ref.attribute is not None and ref.attribute not in attributes:
                        self.add_at_line(loc, ref.line, f"'{ref.name}' has no '{ref.attribute}'"
                                         f"{_did_you_mean(ref.attribute, attributes, f'{ref.name} has')}",
                                         "unknown-attribute")
                if text.expression:
                    for value in _button_values(tree):
                        if value not in BUTTONS:
                            self.add(loc, f"'{value}' is not a terminal button"
                                          f"{_did_you_mean(value, BUTTONS, 'buttons')}", "unknown-button", "warning")

    def add_at_line(self, loc: Loc, line: int, message: str, code: str) -> None:
        """An issue in a template: at its line when the text is a literal block (``|``) and the line is > 1."""
        issue = self.flow.issue(loc, message)
        node = _yaml_node(self.flow.root, loc, deepest=True)
        if line > 1 and isinstance(node, yaml.ScalarNode) and node.style == "|":
            source_line = node.start_mark.line + line  # 0-based: the text starts on the line after "|"
            lines = self.flow.text.splitlines()
            if source_line < len(lines):
                column = len(lines[source_line]) - len(lines[source_line].lstrip(" ")) + 1
                issue = replace(issue, line=source_line + 1, column=column)
        self.issues.append(LintIssue(issue, "error", code))

    # prompts: files, length, languages
    def prompt_files(self) -> None:
        language = self.flow.document.language
        for name, node in self.nodes.items():
            for loc, spec in node.prompts():
                if isinstance(spec, d.PlayPrompt):
                    file_loc = loc if loc == ("file",) else (*loc, "play")
                    problem = _prompt_file_problem(self.env.flows_dir, spec.play)
                    if problem is not None:
                        self.add(("nodes", name, *file_loc), problem[1], problem[0])
                    continue
                if isinstance(spec.say, dict) and spec.language is None and language not in spec.say:
                    self.add(("nodes", name, *loc), f"no text in the flow's language '{language}' (texts: "
                                                    f"{', '.join(spec.say)})", "missing-language", "warning")
                if isinstance(node, d.MenuNode) and loc == ("prompt",):
                    longest = max(len(re.sub(r"\s", "", t)) for t in spec.texts(language).values())
                    if longest > LONG_MENU_PROMPT:
                        self.add(("nodes", name, *loc), f"a long menu prompt ({longest} characters): elders forget "
                                                        "the first choices — keep menus short (say 4 choices or "
                                                        "fewer)", "long-prompt", "warning")

    # names of things outside the flow: queues, flows, trunks
    def references(self) -> None:
        env = self.env
        checks: list[tuple[str, frozenset[str] | None, str, str]] = [
            ("queue", env.queues, "unknown-queue", "queues"),
            ("flow", env.flow_names, "unknown-flow", "flows"),
            ("trunk", env.trunks, "unknown-trunk", "trunks"),
        ]
        for name, node in self.nodes.items():
            for attribute, known, code, what in checks:
                value = getattr(node, attribute, None)
                if known is None or not isinstance(value, str) or value in known:
                    continue
                if isinstance(node, d.QueueNode | d.TransferNode | d.SubflowNode):
                    self.add(("nodes", name, attribute), f"unknown {attribute} '{value}'"
                                                         f"{_did_you_mean(value, known, what)}", code)

    def queue_waits(self) -> None:
        for name, node in self.nodes.items():
            if not isinstance(node, d.QueueNode) or node.max_wait is None:
                continue
            if node.priority == "emergency":
                self.add(("nodes", name, "max_wait"), "an emergency with max_wait: an emergency caller should wait "
                                                      "for an operator, however long it takes (the ACD seizes one)",
                         "emergency-max-wait", "warning", at_key=True)
            elif node.on_timeout is None:
                self.add(("nodes", name, "max_wait"), "max_wait without on_timeout: the call is hung up when the "
                                                      "wait passes (say where it should go instead)",
                         "max-wait-no-exit", "warning", at_key=True)

    def subflows(self) -> None:
        own = frozenset(n.flow for n in self.nodes.values() if isinstance(n, d.SubflowNode))
        graph: dict[str, frozenset[str]] = dict(self.env.subflow_graph or {})
        graph[self.flow.name] = own
        for name, node in self.nodes.items():
            if isinstance(node, d.SubflowNode):
                path = g.shortest_path(graph, node.flow, self.flow.name)
                if path is not None:
                    self.add(("nodes", name, "flow"), f"recursive subflow: {' → '.join([self.flow.name, *path])}: "
                                                      "a flow cannot run itself as a subflow (the calls would never "
                                                      "end)", "recursive-subflow")
        if self.env.subflow_graph is None:
            return
        callers = [flow for flow, called in graph.items() if self.flow.name in called and flow != self.flow.name]
        if callers:
            return
        for name, node in self.nodes.items():
            if isinstance(node, d.ReturnNode):
                self.add(("nodes", name), "'return' in a flow that no flow runs as a subflow: when this flow is "
                                          "called directly, the call ends here", "unused-return", "warning",
                         at_key=True)

    def menus(self) -> None:
        for number, line in enumerate(self.flow.text.splitlines(), 1):
            match = re.match(r"^(\s*)#\s*:\s*([^\s#]+)\s*$", line)
            if match and match[2] in self.nodes:
                issue = SourceIssue(self.flow.source, number, len(match[1]) + 1, "",
                                    f'# starts a comment in YAML, so the choice "#" → {match[2]} is ignored: write '
                                    f'it in quotes ("#": {match[2]})')
                self.issues.append(LintIssue(issue, "error", "menu-key"))
        for name, node in self.nodes.items():
            if not isinstance(node, d.MenuNode):
                continue
            for choice in node.options:
                for other in node.options:
                    if other != choice and other.startswith(choice):
                        self.add(("nodes", name, "options", other),
                                 f"choice '{other}' starts with choice '{choice}': a caller pressing {choice} waits "
                                 f"{node.inter_digit_timeout:g} seconds before anything happens", "menu-prefix",
                                 "warning", at_key=True)
            options = _yaml_node(self.flow.root, ("nodes", name, "options"))
            for key, _ in options.value if isinstance(options, yaml.MappingNode) else []:
                if isinstance(key, yaml.ScalarNode) and key.style is None and key.tag.endswith((":int", ":float")):
                    value = yaml.safe_load(key.value)
                    if str(value) != key.value:
                        self.issues.append(LintIssue(_at(self.flow, key, ("nodes", name, "options", key.value),
                                                         f"choice {key.value} is read as the number {value}: write "
                                                         f"it in quotes (\"{key.value}\")"), "error", "menu-key"))


def _template_line(message: str) -> int:
    match = re.match(r"line (\d+): ", message)
    return int(match[1]) if match else 1


def _at(flow: ParsedFlow, node: yaml.Node, loc: Loc, message: str) -> SourceIssue:
    issue = flow.issue(loc, message)
    return replace(issue, line=node.start_mark.line + 1, column=node.start_mark.column + 1)


# -- entry points ----------------------------------------------------------------------------------------
def lint_parsed(flow: ParsedFlow, env: LintEnvironment) -> list[LintIssue]:
    """Every whole-document problem of a parsed flow, sorted by position."""
    return _Linter(flow, env).run()


def _parse_code(issue: SourceIssue) -> str:
    yaml_messages = ("invalid YAML", "duplicate key", "the file is empty")
    return "yaml" if issue.message.startswith(yaml_messages) else "type"


def lint_text(text: str, source: str, env: LintEnvironment,
              name: str | None = None) -> tuple[ParsedFlow | None, list[LintIssue]]:
    """Parse and lint one flow text. ``name`` is the flow's name (its file name without .yaml): a ``flow:``
    key that disagrees with it is an error. The flow is None when it cannot be parsed."""
    try:
        parsed = parse_flow(text, source, name)
    except FlowError as exc:
        return None, sorted((LintIssue(i, "error", _parse_code(i)) for i in exc.issues), key=_sort_key)
    issues = lint_parsed(parsed, env)
    declared = parsed.document.flow
    if name is not None and declared is not None and declared != name:
        issues.append(LintIssue(parsed.issue(("flow",), f"'flow: {declared}' does not match the file name "
                                                        f"'{name}' (remove the flow: line or make them the same)"),
                                "error", "flow-name"))
        issues.sort(key=_sort_key)
    return parsed, issues


def _read(path: Path) -> tuple[str | None, LintIssue | None]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, LintIssue(SourceIssue(str(path), None, None, "", f"cannot read the file: {reason}"),
                               "error", "file")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        return None, LintIssue(SourceIssue(str(path), line, column, "", "the file is not UTF-8 text (it may be "
                                                                        "GBK): save it as UTF-8"), "error", "file")


def _variables(document: d.FlowDocument) -> set[str]:
    names: set[str] = set()
    for node in document.nodes.values():
        if isinstance(node, d.SetNode):
            names |= set(node.variables)
        elif isinstance(node, d.CollectNode):
            names.add(node.variable)
        elif isinstance(node, d.RecordNode):
            names.add("message_seconds")
    return names


def _flow_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def lint_files(paths: Sequence[Path], env: LintEnvironment) -> dict[Path, list[LintIssue]]:
    """Lint flow files together: unless ``env`` gives them, the known flows are the given files plus the flow
    files in ``env.flows_dir``, and the subflow graph is built from those that parse. Variables set by flows
    that run one another as subflows are shared (a subflow sees its caller's variables and vice versa)."""
    texts: dict[Path, str] = {}
    results: dict[Path, list[LintIssue]] = {}
    for path in paths:
        text, problem = _read(path)
        if text is None:
            results[path] = [problem] if problem else []
        else:
            texts[path] = text
    documents: dict[str, d.FlowDocument] = {}
    flow_of: dict[Path, str] = {}  # file -> flow name
    names = {path.stem for path in [*paths, *_flow_files(env.flows_dir)]}
    for path in [*texts, *(p for p in _flow_files(env.flows_dir) if p not in texts and p not in paths)]:
        text = texts.get(path)
        if text is None:
            text, _ = _read(path)
        try:
            parsed = parse_flow(text or "", str(path), path.stem)
        except FlowError:
            continue
        documents.setdefault(parsed.name, parsed.document)
        flow_of[path] = parsed.name
        names.add(parsed.name)
    graph = env.subflow_graph
    if graph is None:
        graph = {name: frozenset(n.flow for n in doc.nodes.values() if isinstance(n, d.SubflowNode))
                 for name, doc in documents.items()}
    shared = _shared_variables(documents, graph)
    for path, text in texts.items():
        extra = env.extra_variables | shared.get(flow_of.get(path, path.stem), frozenset())
        flow_env = replace(env, flow_names=env.flow_names if env.flow_names is not None else frozenset(names),
                           subflow_graph=graph, extra_variables=extra)
        results[path] = lint_text(text, str(path), flow_env, name=path.stem)[1]
    return {path: results[path] for path in paths}


def _shared_variables(documents: Mapping[str, d.FlowDocument],
                      graph: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """flow → variables set by the flows it is connected to through subflow calls (either way)."""
    neighbours: dict[str, set[str]] = {}
    for caller, called in graph.items():
        for callee in called:
            neighbours.setdefault(caller, set()).add(callee)
            neighbours.setdefault(callee, set()).add(caller)
    out: dict[str, frozenset[str]] = {}
    for name in documents:
        group = g.reachable({k: sorted(v) for k, v in neighbours.items()}, [name])
        out[name] = frozenset().union(*(_variables(documents[member]) for member in group if member in documents))
    return out

