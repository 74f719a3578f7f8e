"""The flow document: what a supervisor writes in ``ivr_flows/*.yaml``, as typed pydantic models.

A flow is a set of named nodes; each node has a ``type`` and names the node(s) that come next. The models
check types and shapes (a menu needs options, a number is a string of digits...); :mod:`callcenter.ivr.lint`
checks the document as a whole (dangling transitions, unreachable nodes, loops without exit, templates,
prompt files, queues). :func:`callcenter.ivr.parsing.parse_flow` turns YAML text into a :class:`FlowDocument`
or a list of issues, each with ``file:line:column``. docs/flows.md documents the format with one example per node type.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from callcenter.yamlsource import Loc, invalid, show_value

LANGUAGES = ("cmn", "yue")  # Mandarin, Cantonese (ISO 639-3)
Language = Literal["cmn", "yue"]
NODE_NAME = re.compile(r"^[^\W\d][\w-]*$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DIGITS = re.compile(r"^[0-9*#]+$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHEDULES: dict[str, tuple[str, ...]] = {  # the common opening-hour presets, every day of the week
    "7x24": ("00:00-24:00",),
    "7x10": ("08:00-18:00",),
    "7x8": ("08:30-16:30",),
}
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


def _check(regex: re.Pattern[str], what: str, value: str) -> str:
    if not regex.match(value):
        raise invalid(f"expected {what}, got {show_value(value)}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- prompts -----------------------------------------------------------------------------------------------
def _text_not_empty(value: str | dict[str, str]) -> str | dict[str, str]:
    texts = [value] if isinstance(value, str) else list(value.values())
    if not texts or any(not text.strip() for text in texts):
        raise invalid("the text to say is empty")
    return value


def _check_language(say: str | dict[str, str], language: str | None) -> None:
    """``language: yue`` with texts per language must have a yue text (it is the one spoken)."""
    if language is not None and isinstance(say, dict) and language not in say:
        raise invalid(problems=[(("language",), f"there is no '{language}' text to say (the texts are: "
                                                 f"{', '.join(say)})")])


class SayPrompt(_Model):
    """Text spoken by the TTS voice. ``say`` is one text, or one text per language (the caller's language
    is chosen when the directory knows it, else the flow's language). Jinja2 ``{{ variables }}`` allowed."""

    say: str | dict[Language, str]
    language: Language | None = None
    rate: int | None = Field(None, ge=80, le=400)  # words per minute; None: the flow's voice rate

    @field_validator("say")
    @classmethod
    def _not_empty(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        return _text_not_empty(value)

    @model_validator(mode="after")
    def _language_has_text(self) -> Self:
        _check_language(self.say, self.language)
        return self

    def texts(self, default_language: str) -> dict[str, str]:
        """language → text."""
        if isinstance(self.say, str):
            return {self.language or default_language: self.say}
        return dict(self.say)


def _relative(value: str) -> str:
    if value.startswith("/") or ".." in value.replace("\\", "/").split("/"):
        raise invalid(f"expected a path inside the flows folder (e.g. prompts/welcome.wav), got {show_value(value)}")
    return value


PromptFile = Annotated[str, Field(min_length=1), AfterValidator(_relative)]


class PlayPrompt(_Model):
    """A recorded prompt: a WAV file (any rate), relative to the flow's folder (usually prompts/...)."""

    play: PromptFile


def _prompt_shorthand(value: Any) -> Any:
    """A prompt may be written as plain text: ``prompt: "请稍候"``."""
    if isinstance(value, str):
        return {"say": value}
    if isinstance(value, dict) and "say" in value and "play" in value:
        raise invalid('give either "say" (a text) or "play" (a WAV file), not both')
    if not isinstance(value, dict | SayPrompt | PlayPrompt):
        raise invalid(f"expected a text to say, {{say: ...}} or {{play: prompts/....wav}}, got {show_value(value)}")
    return value


def _prompt_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "play" if "play" in value else "say"
    return "play" if isinstance(value, PlayPrompt) else "say"


PromptSpec = Annotated[
    Annotated[SayPrompt, Tag("say")] | Annotated[PlayPrompt, Tag("play")],
    Discriminator(_prompt_kind),
    BeforeValidator(_prompt_shorthand, json_schema_input_type=str | SayPrompt | PlayPrompt),
]


# -- nodes -------------------------------------------------------------------------------------------------
class _Node(_Model):
    description: str | None = None  # a note for the next supervisor; never spoken

    def transitions(self) -> Iterator[tuple[Loc, str]]:
        """(path inside the node, target node) for every transition."""
        for name in ("next", "fallback", "default", "open", "closed", "holiday", "on_failure", "on_timeout",
                     "no_input", "declined"):
            target = getattr(self, name, None)
            if isinstance(target, str):
                yield (name,), target

    def prompts(self) -> Iterator[tuple[Loc, SayPrompt | PlayPrompt]]:
        for name in ("prompt", "invalid_prompt", "timeout_prompt", "confirm_prompt"):
            spec = getattr(self, name, None)
            if isinstance(spec, SayPrompt | PlayPrompt):
                yield (name,), spec

    @property
    def ends_call(self) -> bool:
        """The call leaves the flow here (queue, transfer, hangup): no transition is needed."""
        return False


class AnswerNode(_Node):
    """Answer the call (200 OK). ``ring`` rings first for that many seconds."""

    type: Literal["answer"]
    ring: float = Field(0.0, ge=0, le=30)
    next: str


class PlayNode(_Node):
    type: Literal["play"]
    file: PromptFile
    barge_in: bool = False  # a key press stops the prompt
    next: str


    def prompts(self) -> Iterator[tuple[Loc, SayPrompt | PlayPrompt]]:
        yield ("file",), PlayPrompt(play=self.file)


class SayNode(_Node):
    type: Literal["say"]
    text: str | dict[Language, str]
    language: Language | None = None
    rate: int | None = Field(None, ge=80, le=400)
    barge_in: bool = False
    next: str

    @field_validator("text")
    @classmethod
    def _not_empty(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        return _text_not_empty(value)

    @model_validator(mode="after")
    def _language_has_text(self) -> Self:
        _check_language(self.text, self.language)
        return self

    def prompts(self) -> Iterator[tuple[Loc, SayPrompt | PlayPrompt]]:
        yield ("text",), SayPrompt(say=self.text, language=self.language, rate=self.rate)


class MenuNode(_Node):
    """Say a prompt and wait for a choice: ``options`` maps digits to nodes. No choice or a wrong one
    repeats (with ``timeout_prompt`` / ``invalid_prompt``) up to ``retries`` times, then ``fallback``."""

    type: Literal["menu"]
    prompt: PromptSpec
    options: dict[str, str] = Field(min_length=1)
    timeout: float = Field(5.0, gt=0, le=60)
    inter_digit_timeout: float = Field(3.0, gt=0, le=30)
    retries: int = Field(2, ge=0, le=10)
    invalid_prompt: PromptSpec | None = None
    timeout_prompt: PromptSpec | None = None
    fallback: str


    @field_validator("options", mode="before")
    @classmethod
    def _digit_keys(cls, value: Any) -> Any:
        if value is None:
            raise invalid('expected the choices, e.g. 1: node (# starts a comment in YAML: write "#" and "*" '
                          'in quotes)')
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        problems: list[tuple[Loc, str]] = []
        for key, target in value.items():
            text = str(key)
            if not DIGITS.match(text):
                problems.append(((key, "[key]"), f"a menu choice is digits, * or #, got {show_value(key)}"))
            out[text] = target
        if problems:
            raise invalid(problems=problems)
        return out

    def transitions(self) -> Iterator[tuple[Loc, str]]:
        for digits, target in self.options.items():
            yield ("options", digits), target
        yield from super().transitions()


class CollectNode(_Node):
    """Collect digits (a code, a number) into ``variable``; ``#`` ends early."""

    type: Literal["collect"]
    variable: str
    prompt: PromptSpec | None = None
    min_digits: int = Field(1, ge=1, le=32)
    max_digits: int = Field(20, ge=1, le=32)
    terminator: str = "#"
    timeout: float = Field(10.0, gt=0, le=120)
    inter_digit_timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    invalid_prompt: PromptSpec | None = None
    next: str
    no_input: str | None = None  # where to go when nothing valid came after the retries (default: next)


    @field_validator("variable")
    @classmethod
    def _variable(cls, value: str) -> str:
        return _check(VARIABLE_NAME, "a variable name (letters, digits, _)", value)

    @field_validator("terminator")
    @classmethod
    def _terminator(cls, value: str) -> str:
        if value not in ("", "#", "*"):
            raise invalid(f'expected "#", "*" or "" (none), got {show_value(value)}')
        return value

    @model_validator(mode="after")
    def _min_max(self) -> Self:
        if self.min_digits > self.max_digits:
            raise invalid(problems=[(("min_digits",), f"min_digits ({self.min_digits}) is more than "
                                                      f"max_digits ({self.max_digits})")])
        return self


class Case(_Model):
    when: str = Field(min_length=1)  # a Jinja2 expression: caller.known, button == "emergency", ...
    next: str


class SwitchNode(_Node):
    """Go to the first case whose ``when`` is true, else ``default``."""

    type: Literal["switch"]
    cases: list[Case] = Field(min_length=1)
    default: str

    def transitions(self) -> Iterator[tuple[Loc, str]]:
        for index, case in enumerate(self.cases):
            yield ("cases", index, "next"), case.next
        yield from super().transitions()




def parse_ranges(ranges: list[str]) -> list[tuple[int, int]]:
    """["08:00-12:00", "13:30-18:00"] → minutes since midnight [(480, 720), (810, 1080)]."""
    out = []
    for text in ranges:
        match = _RANGE.match(text.strip())
        if not match:
            raise ValueError(f'expected "HH:MM-HH:MM", got {show_value(text)}')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or end > 24 * 60:
            raise ValueError(f"not a time of day: {show_value(text)}")
        if end <= start:
            raise ValueError(f"{show_value(text)} ends before it starts (split a night shift in two ranges)")
        out.append((start, end))
    return out


class HoursNode(_Node):
    """Open or closed now? ``schedule`` is a preset (7x24, 7x10 = 08:00-18:00, 7x8 = 08:30-16:30) or
    ``weekly`` ranges per weekday; ``holidays`` are closed all day (``holiday`` goes elsewhere if given),
    ``workdays`` are extra working days (make-up days) that use Monday's hours."""

    type: Literal["hours"]
    schedule: Literal["7x24", "7x10", "7x8"] | None = None
    weekly: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], list[str]] | None = None
    holidays: list[dt.date] = Field(default_factory=list)
    workdays: list[dt.date] = Field(default_factory=list)
    timezone: str = "Asia/Shanghai"
    open: str
    closed: str
    holiday: str | None = None

    @field_validator("weekly")
    @classmethod
    def _ranges(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        problems: list[tuple[Loc, str]] = []
        for day, ranges in (value or {}).items():
            for index, text in enumerate(ranges):
                try:
                    parse_ranges([text])
                except ValueError as exc:
                    problems.append(((day, index), str(exc)))
        if problems:
            raise invalid(problems=problems)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise invalid(f'unknown time zone {show_value(value)} (e.g. "Asia/Shanghai")') from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.schedule is None and self.weekly is None:
            raise invalid('give the opening hours: "schedule" (7x24, 7x10 or 7x8) or "weekly"')
        if self.schedule is not None and self.weekly is not None:
            raise invalid('give either "schedule" (7x24, 7x10 or 7x8) or "weekly" opening hours, not both')
        return self

    def ranges_for(self, weekday: int) -> list[tuple[int, int]]:
        """Opening ranges (minutes) for a weekday (0 = Monday)."""
        if self.schedule is not None:
            return parse_ranges(list(SCHEDULES[self.schedule]))
        return parse_ranges((self.weekly or {}).get(WEEKDAYS[weekday], []))  # type: ignore[call-overload]


class SetNode(_Node):
    """Set variables. A text value may use {{ templates }}; numbers and true/false are kept as they are."""

    type: Literal["set"]
    variables: dict[str, str | int | float | bool] = Field(min_length=1)
    next: str

    @field_validator("variables")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = [((name, "[key]"), f"expected a variable name (letters, digits, _), got {show_value(name)}")
                    for name in value if not VARIABLE_NAME.match(name)]
        if problems:
            raise invalid(problems=problems)
        return value


class Announcements(_Model):
    """What a waiting caller hears in the queue (overrides the queue's configuration)."""

    position: bool | None = None  # "you are number 3 in line"
    wait_time: bool | None = None  # "about 2 minutes"
    every: float | None = Field(None, ge=15, le=600)
    prompt: PromptSpec | None = None  # a periodic message
    music: bool | None = None



Priority = Literal["emergency", "urgent", "normal"]


class QueueNode(_Node):
    """Wait for an operator in ``queue``. Emergencies come first, then urgent, then normal; ``level`` (1-9)
    orders calls within a class. ``skills`` are what the operator must have (e.g. language: yue)."""

    type: Literal["queue"]
    queue: str = Field(min_length=1)
    priority: Priority = "normal"
    level: int = Field(5, ge=1, le=9)
    skills: dict[str, str] = Field(default_factory=dict)
    announcements: Announcements | None = None
    max_wait: float | None = Field(None, gt=0, le=24 * 3600)
    on_timeout: str | None = None  # where to go after max_wait (default: the queue's overflow)

    def prompts(self) -> Iterator[tuple[Loc, SayPrompt | PlayPrompt]]:
        if self.announcements is not None and self.announcements.prompt is not None:
            yield ("announcements", "prompt"), self.announcements.prompt

    @property
    def ends_call(self) -> bool:
        return self.on_timeout is None


class TransferNode(_Node):
    """Send the call elsewhere: an outside ``number`` through a trunk (a template, e.g. the elder's family
    number), a ``queue``, or another ``flow`` (which does not come back: use subflow for that)."""

    type: Literal["transfer"]
    number: str | None = None
    queue: str | None = None
    flow: str | None = None
    priority: Priority = "normal"
    trunk: str | None = None
    ring_timeout: float = Field(30.0, gt=0, le=300)
    on_failure: str | None = None  # no answer, busy, no such number, empty template

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        given = [name for name in ("number", "queue", "flow") if getattr(self, name)]
        if len(given) != 1:
            raise invalid('give exactly one of "number", "queue" or "flow"')
        return self

    @property
    def ends_call(self) -> bool:
        return True


class RecordNode(_Node):
    """Record a message (voicemail) after an optional prompt and a beep; # or silence ends it."""

    type: Literal["record"]
    prompt: PromptSpec | None = None
    max_seconds: float = Field(120.0, ge=5, le=600)
    beep: bool = True
    terminator: str = "#"
    next: str



class CallbackNode(_Node):
    """Offer a callback: the caller presses ``accept`` and a callback task is created for the operators."""

    type: Literal["callback"]
    prompt: PromptSpec
    accept: str = "1"
    timeout: float = Field(6.0, gt=0, le=60)
    reason: str = "callback requested"
    due_in: float = Field(0.0, ge=0, le=7 * 24 * 3600)  # seconds from now
    confirm_prompt: PromptSpec | None = None
    next: str
    declined: str


    @field_validator("accept", mode="before", json_schema_input_type=str | int)
    @classmethod
    def _accept(cls, value: Any) -> Any:
        value = str(value) if isinstance(value, int) else value
        if isinstance(value, str) and not (len(value) == 1 and DIGITS.match(value)):
            raise invalid(f"expected one key (0-9, * or #), got {show_value(value)}")
        return value


class SubflowNode(_Node):
    """Run another flow and come back to ``next`` when it reaches a ``return`` node."""

    type: Literal["subflow"]
    flow: str = Field(min_length=1)
    next: str


class ReturnNode(_Node):
    """End of a subflow: go back to the calling flow."""

    type: Literal["return"]

    @property
    def ends_call(self) -> bool:
        return True


class HangupNode(_Node):
    type: Literal["hangup"]
    reason: str | None = None

    @property
    def ends_call(self) -> bool:
        return True


Node = Annotated[
    AnswerNode | PlayNode | SayNode | MenuNode | CollectNode | SwitchNode | HoursNode | SetNode | QueueNode
    | TransferNode | RecordNode | CallbackNode | SubflowNode | ReturnNode | HangupNode,
    Field(discriminator="type"),
]
NODE_TYPES: dict[str, type[_Node]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (AnswerNode, PlayNode, SayNode, MenuNode, CollectNode, SwitchNode, HoursNode, SetNode, QueueNode,
                TransferNode, RecordNode, CallbackNode, SubflowNode, ReturnNode, HangupNode)
}

class Voice(_Model):
    rate: int = Field(150, ge=80, le=400)  # words per minute; elders prefer slow speech


class FlowDocument(_Model):
    """One flow file."""

    flow: str | None = None  # the flow's name; default: the file name without .yaml
    description: str | None = None
    language: Language = "cmn"
    voice: Voice = Field(default_factory=Voice)
    start: str
    nodes: dict[str, Node] = Field(min_length=1)

    @field_validator("flow")
    @classmethod
    def _flow_name(cls, value: str | None) -> str | None:
        return None if value is None else _check(FLOW_NAME, "letters, digits, '_' or '-'", value)

    @field_validator("nodes", mode="before")
    @classmethod
    def _node_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            problems = [((name, "[key]"), f"a node name is a word (letters, digits, _ or -), got {show_value(name)}")
                        for name in value if not isinstance(name, str) or not NODE_NAME.match(name)]
            if problems:
                raise invalid(problems=problems)
        return value


FLOW_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
