"""Reading a flow file: YAML text → :class:`~callcenter.ivr.document.FlowDocument`, or every problem found,
each as ``file:line:column: key: message`` a supervisor can act on.

Each node is validated on its own (so messages name its own fields, not pydantic's union members), pydantic's
error paths are walked back to the YAML keys (union tags and ``[key]`` parts removed, bad mapping keys pointed at
the key), a value that fits no member of a union gets one merged message, and YAML syntax errors that come from
an unquoted ``{{ template }}`` say to quote the text.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError

from callcenter.ivr.document import NODE_NAME, NODE_TYPES, FlowDocument
from callcenter.yamlsource import Loc, SourceIssue, dotted, error_message, locate, parse_yaml, show_value


@dataclass(frozen=True)
class ParsedFlow:
    """A flow document with where it came from (for positions in later checks)."""

    name: str
    source: str  # the file name shown in messages
    text: str
    document: FlowDocument
    root: yaml.Node

    def issue(self, loc: Loc, message: str, at_key: bool = False) -> SourceIssue:
        return locate(loc, message, self.root, self.source, {}, at_key=at_key)


class FlowError(Exception):
    def __init__(self, issues: list[SourceIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def _node_issues(name: str, data: Any, root: yaml.Node, source: str) -> list[SourceIssue]:
    """Validate one node on its own, so that its errors name its own fields (no discriminator in paths)."""
    base: Loc = ("nodes", name)
    if not isinstance(data, dict):
        return [locate(base, f"expected a node (a mapping with a type), got {show_value(data)}", root, source, {})]
    kind = data.get("type")
    if kind is None:
        return [locate(base, f"missing 'type' (one of: {', '.join(NODE_TYPES)})", root, source, {})]
    cls = NODE_TYPES.get(str(kind))
    if cls is None:
        close = difflib.get_close_matches(str(kind), list(NODE_TYPES), n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (types: {', '.join(NODE_TYPES)})"
        return [locate((*base, "type"), f"unknown node type {show_value(kind)}{hint}", root, source, {})]
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        return _validation_issues(cls, exc.errors(include_url=False), base, root, source)
    return []


# -- turning pydantic errors into issues -------------------------------------------------------------------
@dataclass(frozen=True)
class _Problem:
    loc: Loc  # path in the YAML (union member tags and "[key]" removed)
    message: str
    at_key: bool
    union: Loc | None  # the path of the innermost union the error went through (one error per member)


def _bare(tp: Any) -> Any:
    """The type without Annotated metadata and without None in an Optional."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        members = [member for member in get_args(tp) if member is not type(None)]
        if len(members) == 1:
            return _bare(members[0])
    return tp


def _union_member(tp: Any, tag: Any) -> Any:
    """The member of union ``tp`` that pydantic names ``tag`` in error paths, or None."""
    for member in get_args(tp):
        tags = [meta.tag for meta in get_args(member)[1:] if isinstance(meta, Tag)] \
            if get_origin(member) is Annotated else []
        bare = _bare(member)
        origin = get_origin(bare)
        name = bare.__name__ if isinstance(bare, type) else str(origin.__name__ if origin else bare)
        if tag in tags or tag == name or (origin is not None and str(tag).startswith(f"{origin.__name__}[")):
            return bare
    return None


def _walk(model: type[BaseModel], loc: Loc) -> tuple[Loc, bool, Loc | None, Any]:
    """Clean a pydantic error path: (YAML path, points at a mapping key, innermost union path, type there)."""
    tp: Any = model
    out: list[str | int] = []
    union: Loc | None = None
    at_key = False
    for part in loc:
        tp = _bare(tp)
        if get_origin(tp) in (Union, types.UnionType):
            member = _union_member(tp, part)
            if member is not None:
                union, tp = tuple(out), member
                continue
        if part == "[key]":
            at_key = True
            continue
        out.append(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            tp = field.annotation if field is not None else None
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            tp = None
    return tuple(out), at_key, union, _bare(tp)


def _message(model: type[BaseModel], err: Any) -> str:
    if err["type"] == "too_short" and isinstance(err.get("input"), dict):
        return f"expected at least {err['ctx']['min_length']} entry(ies), got none"
    return error_message(model, err)


def _unknown_key(parent: Any, key: Any) -> str:
    known = [name for name in parent.model_fields if name != "type"] \
        if isinstance(parent, type) and issubclass(parent, BaseModel) else []
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown key '{key}' — did you mean '{close[0]}'?"
    if parent in NODE_TYPES.values():
        return f"unknown key '{key}' (a {parent.model_fields['type'].annotation.__args__[0]} node has: " \
               f"{', '.join(known)})"
    return f"unknown key '{key}' (known keys: {', '.join(known)})"


_EXPECTED_GOT = re.compile(r"^expected (?P<what>.+), got (?P<got>.+?)(?P<hint> \(write numbers in quotes.*\))?$")


def _merge_union(problems: list[_Problem]) -> list[_Problem]:
    """A value that fits no member of a union gets one error per member: keep the errors from inside the value
    when there are some (the value had the right shape), else merge "expected A" + "expected B" into one."""
    out: list[_Problem] = []
    groups: dict[Loc, list[_Problem]] = {}
    for problem in problems:
        if problem.union is None:
            out.append(problem)
        else:
            groups.setdefault(problem.union, []).append(problem)
    for site, group in groups.items():
        deeper = [p for p in group if len(p.loc) > len(site)]
        if deeper:
            out += deeper
            continue
        matches = [_EXPECTED_GOT.match(p.message) for p in group]
        if len(group) > 1 and all(matches):
            whats = list(dict.fromkeys(m["what"] for m in matches if m))
            first = matches[0]
            assert first is not None
            hint = next((m["hint"] for m in matches if m and m["hint"]), "") or ""
            what = ", ".join(whats[:-1]) + f" or {whats[-1]}" if len(whats) > 1 else whats[0]
            out.append(_Problem(site, f"expected {what}, got {first['got']}{hint}", False, None))
        else:
            out += group
    return out


def _validation_issues(model: type[BaseModel], errors: list[Any], base: Loc, root: yaml.Node,
                       source: str) -> list[SourceIssue]:
    problems: list[_Problem] = []
    for err in errors:
        loc, at_key, union, _ = _walk(model, tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            parent = _walk(model, tuple(err["loc"])[:-1])[3]
            problems.append(_Problem(loc, _unknown_key(parent, loc[-1]), True, None))
            continue
        subs = (err.get("ctx") or {}).get("problems") if err["type"] == "config" else None
        for sub, text in subs or [((), _message(model, err))]:
            on_key = tuple(sub[-1:]) == ("[key]",)  # a validator's problem with a mapping key, not its value
            sub = tuple(sub[:-1]) if on_key else tuple(sub)
            problems.append(_Problem((*loc, *sub), text, on_key or (at_key and not sub), union))
    return [locate((*base, *p.loc), p.message, root, source, {}, at_key=p.at_key) for p in _merge_union(problems)]


def _scalar_issue(text: str, source: str, exc: Exception) -> SourceIssue:
    """PyYAML builds dates while loading and raises a bare ValueError on 2026-02-30: find that scalar."""
    loader = yaml.SafeLoader(text)
    try:
        stack: list[tuple[yaml.Node, Loc]] = [(loader.get_single_node(), ())]
        while stack:
            node, loc = stack.pop()
            if isinstance(node, yaml.MappingNode):
                stack += [(value, (*loc, getattr(key, "value", "?"))) for key, value in reversed(node.value)]
                stack += [(key, loc) for key, _ in node.value]
            elif isinstance(node, yaml.SequenceNode):
                stack += [(item, (*loc, index)) for index, item in reversed(list(enumerate(node.value)))]
            elif isinstance(node, yaml.ScalarNode):
                try:
                    loader.construct_object(node)
                except ValueError as err:
                    what = "date" if node.tag.endswith(":timestamp") else "value"
                    mark = node.start_mark
                    return SourceIssue(source, mark.line + 1, mark.column + 1, dotted(loc),
                                       f"not a real {what}: {show_value(node.value)} ({err})")
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    return SourceIssue(source, None, None, "", f"invalid YAML: {exc}")


_UNQUOTED_TEMPLATE = re.compile(r"(?:^\s*-|:)\s+(\{[{%])")


def _unquoted_template(text: str, issue: SourceIssue) -> SourceIssue:
    """``text: {{ greeting }}，您好`` is a YAML syntax error (``{`` starts a mapping): say what to do."""
    if issue.line is None:
        return issue
    lines = text.splitlines()
    for index in range(issue.line - 1, max(issue.line - 3, -1), -1):
        match = _UNQUOTED_TEMPLATE.search(lines[index]) if index < len(lines) else None
        if match:
            return SourceIssue(issue.source, index + 1, match.start(1) + 1, issue.key,
                               'invalid YAML: a text that starts with {{ or {% must be in quotes, e.g. '
                               'text: "{{ greeting }}，您好"')
    return issue


def parse_flow(text: str, source: str, name: str | None = None) -> ParsedFlow:
    """Parse and type-check one flow document; raises :class:`FlowError` with every issue found."""
    try:
        root, data, issues = parse_yaml(text, source)
    except (ValueError, OverflowError) as exc:  # a date that does not exist (2026-02-30)
        raise FlowError([_scalar_issue(text, source, exc)]) from None
    if root is None:
        raise FlowError([_unquoted_template(text, issue) for issue in issues] or [
            SourceIssue(source, None, None, "", "the file is empty: a flow needs 'start' and 'nodes'")])
    if not isinstance(data, dict):
        raise FlowError([locate((), f"expected a flow (a mapping with start and nodes), got {show_value(data)}",
                                root, source, {})])
    nodes = data.get("nodes")
    if isinstance(nodes, dict):
        for node_name, node_data in nodes.items():
            if isinstance(node_name, str) and NODE_NAME.match(node_name):
                issues += _node_issues(node_name, node_data, root, source)
    # Top-level problems (missing start...) are reported too; node problems only once (by _node_issues): when
    # there are some, the nodes are replaced by a stand-in so that only the top level is checked.
    checked = data if not issues else {**data, "nodes": {"_": {"type": "hangup"}}}
    document: FlowDocument | None = None
    try:
        document = FlowDocument.model_validate(checked)
    except ValidationError as exc:
        errors = [err for err in exc.errors(include_url=False)
                  if not (err["loc"][:1] == ("nodes",) and (issues or len(err["loc"]) > 2))]
        issues += _validation_issues(FlowDocument, errors, (), root, source)
    if issues or document is None:
        raise FlowError(sorted(issues, key=lambda i: (i.line or 0, i.column or 0)))
    flow_name = document.flow or name or source.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
    return ParsedFlow(flow_name, source, text, document, root)
