"""YAML documents validated by pydantic, with errors pointing at ``file:line:column``.

Shared by the engine configuration and (later) IVR flow documents: parse with node marks, layer environment
variables and explicit overrides on top, and turn a pydantic ValidationError into one precise issue per problem
(``config/callcenter.yaml:12:5: sip.listen[0]: expected "udp:HOST:PORT" or "tcp:HOST:PORT", got "udp:x"``).
Validators raise ``invalid(...)`` to give their own message, and may point at sub-keys with ``problems``."""

import difflib
import json
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class SourceIssue:
    """One problem. ``source`` is a file path, ``environment variable X`` or ``override x.y``."""

    source: str
    line: int | None
    column: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}:{self.column}"
        return ": ".join(part for part in (where, self.key, self.message) if part)


def show_value(value: Any) -> str:
    """A short rendering of an offending value for messages (strings in double quotes)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


def invalid(message: str = "", problems: list[tuple[Loc, str]] | None = None) -> PydanticCustomError:
    """A validation error with a complete message; ``problems`` point at sub-keys (paths relative to the
    value being validated), each reported as its own issue."""
    summary = message or "; ".join(text for _, text in problems or [])
    return PydanticCustomError("config", "{message}", {"message": summary, "problems": problems or []})


def dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def type_at(model: type[BaseModel], loc: Loc, through_lists: bool = True) -> tuple[Any, Loc | None]:
    """The annotation at ``loc`` in ``model`` (None if unknown) and, with through_lists=False, the path of the
    first list met on the way (the walk stops there)."""
    tp: Any = model
    for index, part in enumerate(loc):
        if get_origin(tp) is list:
            if not through_lists:
                return tp, loc[:index]
            tp = _unwrap(get_args(tp)[0]) if isinstance(part, int) else None
            continue
        fields = tp.model_fields if isinstance(tp, type) and issubclass(tp, BaseModel) else {}
        if not isinstance(part, str) or part not in fields:
            return None, None
        tp = _unwrap(fields[part].annotation)
    if get_origin(tp) is list and not through_lists:
        return tp, loc
    return tp, None


_EXPECTED = {
    "greater_than": "a number greater than {gt}", "greater_than_equal": "a number >= {ge}",
    "less_than": "a number less than {lt}", "less_than_equal": "a number <= {le}",
    "string_too_short": "at least {min_length} character(s)", "string_type": "a string",
    "string_pattern_mismatch": "a value matching {pattern}", "int_parsing": "an integer",
    "int_type": "an integer", "int_from_float": "a whole number", "float_parsing": "a number",
    "float_type": "a number", "bool_parsing": "true or false", "bool_type": "true or false",
    "model_type": "a mapping of keys", "dict_type": "a mapping of keys", "list_type": "a list",
    "too_short": "a list with at least {min_length} item(s)", "literal_error": "{expected}",
}


def error_message(model: type[BaseModel], err: Any) -> str:
    """A supervisor-readable message for one pydantic error dict."""
    kind, ctx, value, loc = err["type"], err.get("ctx") or {}, err.get("input"), tuple(err["loc"])
    if kind == "config":
        return str(ctx["message"])
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "extra_forbidden":
        tp, _ = type_at(model, loc[:-1])
        known = list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (known keys: {', '.join(known)})"
        return f"unknown key '{loc[-1]}'{hint}"
    expected = _EXPECTED.get(kind)
    if expected is None:
        if err["msg"].startswith("Input should be "):
            return f"expected {err['msg'].removeprefix('Input should be ')}, got {show_value(value)}"
        return re.sub(r"^Value error, ", "", err["msg"])
    hint = ' (write numbers in quotes, e.g. "1001")' if kind == "string_type" and isinstance(value, int) else ""
    return f"expected {expected.format(**ctx)}, got {show_value(value)}{hint}"


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in reversed(node.value):
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part], node.value[part]
    return None


def locate(loc: Loc, message: str, root: yaml.Node | None, source: str, origins: Mapping[Loc, str],
           at_key: bool = False) -> SourceIssue:
    """An issue for ``loc``: the env var / override that set it, else the deepest YAML node on the path
    (the key itself when ``at_key``, e.g. for an unknown key; the enclosing mapping for a missing key)."""
    key = dotted(loc)
    for length in range(len(loc), 0, -1):
        if loc[:length] in origins:
            return SourceIssue(origins[loc[:length]], None, None, key, message)
    node, mark = root, root.start_mark if root is not None else None
    for index, part in enumerate(loc):
        found = _child(node, part)
        if found is None:
            break
        node = found[1]
        mark = (found[0] if at_key and index == len(loc) - 1 else node).start_mark
    if mark is None:
        return SourceIssue(source, None, None, key, message)
    return SourceIssue(source, mark.line + 1, mark.column + 1, key, message)


def validation_issues(model: type[BaseModel], exc: ValidationError, root: yaml.Node | None, source: str,
                      origins: Mapping[Loc, str]) -> list[SourceIssue]:
    issues: list[SourceIssue] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        problems = (err.get("ctx") or {}).get("problems") if err["type"] == "config" else None
        for sub, text in problems or [((), error_message(model, err))]:
            issues.append(locate(loc + tuple(sub), text, root, source, origins,
                                 at_key=err["type"] == "extra_forbidden"))
    return issues


def _duplicate_keys(node: yaml.Node, loc: Loc, source: str) -> list[SourceIssue]:
    issues: list[SourceIssue] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if name is None or name == "<<":
                continue
            if name in first:
                mark = key_node.start_mark
                issues.append(SourceIssue(source, mark.line + 1, mark.column + 1, dotted((*loc, name)),
                                          f"duplicate key '{name}' (first on line {first[name]})"))
            first.setdefault(name, key_node.start_mark.line + 1)
            issues += _duplicate_keys(value_node, (*loc, name), source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues += _duplicate_keys(item, (*loc, index), source)
    return issues


def parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any, list[SourceIssue]]:
    """Parse one YAML document (safe tags only): (root node, data, issues). Syntax errors and duplicate keys
    are issues; on a syntax error root and data are None."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None, []
        issues = _duplicate_keys(root, (), source)
        return root, loader.construct_document(root), issues
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, None, [SourceIssue(source, line, column, "", f"invalid YAML: {problem}")]
    except yaml.YAMLError as exc:
        return None, None, [SourceIssue(source, None, None, "", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()


def set_path(data: dict[str, Any], loc: tuple[str, ...], value: Any, origin: str, origins: dict[Loc, str],
             issues: list[SourceIssue]) -> None:
    """Set ``data[a][b]... = value`` creating sections on the way; remember where the value came from."""
    node = data
    for index, part in enumerate(loc[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            issues.append(SourceIssue(origin, None, None, dotted(loc),
                                      f"cannot set it: '{dotted(loc[:index + 1])}' is not a section"))
            return
        node = child
    node[loc[-1]] = value
    origins[loc] = origin


def apply_env(model: type[BaseModel], data: dict[str, Any], env: Mapping[str, str], prefix: str,
              origins: dict[Loc, str], issues: list[SourceIssue]) -> None:
    """Apply ``PREFIX + SECTION__KEY`` variables. Values are YAML scalars, except for text fields (kept as
    written). Lists cannot be set this way (an issue says so)."""
    for name in sorted(env):
        if not name.startswith(prefix):
            continue
        origin = f"environment variable {name}"
        loc = tuple(name[len(prefix):].lower().split("__"))
        if not all(loc):
            issues.append(SourceIssue(origin, None, None, "", f"expected a name like {prefix}SECTION__KEY"))
            continue
        tp, list_at = type_at(model, loc, through_lists=False)
        if list_at is not None:
            issues.append(SourceIssue(origin, None, None, dotted(loc),
                                      f"'{dotted(list_at)}' is a list; lists cannot be set from the "
                                      "environment — set it in the configuration file"))
            continue
        raw = env[name]
        if tp in (str, Path):
            value: Any = raw
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            if isinstance(value, dict | list):
                issues.append(SourceIssue(origin, None, None, dotted(loc),
                                          f"expected a single value (a YAML scalar), got {show_value(value)}"))
                continue
        set_path(data, loc, value, origin, origins, issues)


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], origins: dict[Loc, str],
                    issues: list[SourceIssue]) -> None:
    """Apply explicit overrides: nested mappings and/or dotted keys (``{"sip.domain": "x"}``); a list or an
    empty mapping replaces the value wholesale."""
    flat: list[tuple[tuple[str, ...], Any]] = []

    def flatten(prefix: tuple[str, ...], value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                flatten(prefix + tuple(str(key).split(".")), item)
        else:
            flat.append((prefix, value))

    flatten((), overrides)
    for loc, value in flat:
        if loc:
            set_path(data, loc, value, f"override {dotted(loc)}", origins, issues)
