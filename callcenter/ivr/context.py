"""What a flow's templates and conditions can see, and the sandboxed Jinja2 environment that renders them.

Texts (``say``, ``set`` values, transfer numbers, queue skills) are Jinja2 templates; ``switch`` conditions
are Jinja2 expressions. Both run in a sandbox with autoescaping (a value that came from the caller, such as
the calling number, can never become markup in the desktop's IVR path view) and StrictUndefined (a name the
flow never defined is an error, which lint reports before the flow goes live).

Names available to every flow:

=================  =============================================================================
``caller``         the caller as the directory knows them: ``known``, ``elder_id``, ``name``, ``surname``,
                   ``title`` (how operators address them, e.g. 王奶奶), ``language``, ``living_alone``,
                   ``family_numbers`` (list, first = first to call), ``blocked``, ``diverted``, ``calls_today``
``call``           this call: ``caller_number``, ``did`` (the number dialled), ``button``, ``emergency``,
                   ``trunk``
``button``         which terminal button was pressed (``emergency``, ``family``...) or none
``language``       the language prompts use: the caller's when known, else the flow's
``now``            the local date and time (``now.hour``, ``now.weekday()``)
``time_of_day``    ``morning`` (5-11), ``noon`` (11-13), ``afternoon`` (13-18), ``evening`` (18-22), ``night``
``greeting``       早上好 / 中午好 / 下午好 / 晚上好 / 您好 by time of day (Cantonese: 早晨 / 午安 / 晚安 / 你好)
``last_digits``    the digits of the last menu choice
=================  =============================================================================

Variables set by ``set`` and ``collect`` nodes are available under their own names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

CALLER_ATTRIBUTES = ("known", "elder_id", "name", "surname", "title", "language", "living_alone",
                     "family_numbers", "blocked", "diverted", "calls_today")
CALL_ATTRIBUTES = ("caller_number", "did", "button", "emergency", "trunk")
BUILTIN_NAMES = frozenset({"caller", "call", "button", "language", "now", "time_of_day", "greeting",
                           "last_digits"})
BUTTONS = ("emergency", "family", "care_center", "care_station", "committee", "property", "complaint", "taxi",
           "hotline")

_GREETINGS = {
    "cmn": {"morning": "早上好", "noon": "中午好", "afternoon": "下午好", "evening": "晚上好", "night": "您好"},
    "yue": {"morning": "早晨", "noon": "午安", "afternoon": "午安", "evening": "晚安", "night": "你好"},
}


@dataclass(frozen=True)
class CallerProfile:
    """The caller as the directory knows them (an unknown caller has ``known=False`` and empty fields)."""

    known: bool = False
    elder_id: int | None = None
    name: str = ""
    surname: str = ""
    title: str = ""
    language: str | None = None
    living_alone: bool = False
    family_numbers: tuple[str, ...] = ()
    blocked: bool = False
    diverted: bool = False
    calls_today: int = 0


@dataclass(frozen=True)
class CallFacts:
    caller_number: str = ""
    did: str = ""
    button: str | None = None
    emergency: bool = False
    trunk: str | None = None


def time_of_day(hour: int) -> str:
    if 5 <= hour < 11:
        return "morning"
    if 11 <= hour < 13:
        return "noon"
    if 13 <= hour < 18:
        return "afternoon"
    if 18 <= hour < 22:
        return "evening"
    return "night"


@dataclass
class FlowContext:
    """The variables of one running flow (shared by a flow and its subflows)."""

    caller: CallerProfile
    call: CallFacts
    now: dt.datetime  # local time in the center's zone
    language: str
    variables: dict[str, Any] = field(default_factory=dict)
    last_digits: str = ""

    def names(self) -> dict[str, Any]:
        period = time_of_day(self.now.hour)
        return {
            **self.variables,
            "caller": self.caller,
            "call": self.call,
            "button": self.call.button,
            "language": self.language,
            "now": self.now,
            "time_of_day": period,
            "greeting": _GREETINGS.get(self.language, _GREETINGS["cmn"])[period],
            "last_digits": self.last_digits,
        }


class TemplateError(ValueError):
    """A template or condition that cannot be compiled or rendered; the message says why."""


_ENV = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=False)


def render(template: str, context: FlowContext) -> str:
    """Render a text template (HTML-safe text: values are escaped)."""
    try:
        return _ENV.from_string(template).render(context.names())
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax: {exc.message}") from None
    except Exception as exc:  # UndefinedError, SecurityError, TypeError in a filter...
        raise TemplateError(str(exc)) from None


def evaluate(expression: str, context: FlowContext) -> bool:
    """Evaluate a switch condition; a failing condition is false (the engine logs it)."""
    try:
        return bool(_ENV.compile_expression(expression, undefined_to_none=False)(**context.names()))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"condition syntax: {exc.message}") from None
    except Exception as exc:
        raise TemplateError(str(exc)) from None


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@dataclass(frozen=True)
class Reference:
    """A name a template uses: ``caller.name`` → Reference("caller", "name")."""

    name: str
    attribute: str | None
    line: int  # 1-based line inside the template


def parse_template(text: str, *, expression: bool = False) -> nodes.Template | nodes.Expr:
    """Parse (no rendering); raises TemplateError with the message and line inside the template."""
    try:
        if expression:  # exactly what compile_expression (used by evaluate) accepts, with its messages
            parser = Parser(_ENV, text, state="variable")
            tree = parser.parse_expression()
            if not parser.stream.eos:
                raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
            return nodes.Template([nodes.Output([tree], lineno=1)], lineno=1)  # find_all skips the root
        return _ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}" if exc.lineno > 1 else str(exc.message)) from None


def references(tree: nodes.Node) -> list[Reference]:
    """Names read by a parsed template, with the attribute read on them when there is one."""
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found: list[Reference] = []
    seen: set[int] = set()
    for getattr_node in tree.find_all(nodes.Getattr):
        if isinstance(getattr_node.node, nodes.Name) and getattr_node.node.ctx == "load":
            seen.add(id(getattr_node.node))
            if getattr_node.node.name not in assigned:
                found.append(Reference(getattr_node.node.name, getattr_node.attr, getattr_node.lineno))
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and id(name) not in seen and name.name not in assigned:
            found.append(Reference(name.name, None, name.lineno))
    return found
