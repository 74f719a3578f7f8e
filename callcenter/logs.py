"""Structured logging (structlog): one event name per line (``sip.request.received``), always with ``call_id``
where there is a call. JSON in production, ``key=value`` on a console. Records from the standard ``logging``
module (alembic, SQLAlchemy, asyncio …) go through the same renderer.

Usage::

    log = get_logger(__name__)
    log.info("sip.request.received", call_id=call_id, method="INVITE")
    structlog.contextvars.bind_contextvars(call_id=call_id)   # merged into every event of this task
"""

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_HANDLER_NAME = "callcenter.logs"


class _NamedWriteLogger(structlog.WriteLogger):
    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _NamedWriteLoggerFactory:
    """Like structlog.WriteLoggerFactory, but remembers the name given to ``structlog.get_logger(name)``."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self._file, str(args[0]) if args else None)


def _add_logger_name(logger: Any, method_name: str, event_dict: Any) -> Any:
    name = getattr(logger, "name", None)
    if name and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict


def _wants_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    if fmt != "auto":
        raise ValueError(f'log format must be "auto", "json" or "console", got {fmt!r}')
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return True


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None,
                      *, cache_loggers: bool = False) -> None:
    """Configure structlog (and the stdlib root logger) to write to ``stream`` (default: sys.stderr).

    ``fmt`` is "json", "console", or "auto" (JSON unless the stream is a TTY). Events below ``level`` cost one
    method call (structlog's filtering bound logger). ``cache_loggers=True`` is a little faster in production,
    but loggers used before a later reconfiguration keep the old settings, so tests leave it off.
    """
    stream = sys.stderr if stream is None else stream
    try:
        level_no = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}") from None
    as_json = _wants_json(fmt, stream)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
        shared_tail: list[Processor] = [structlog.processors.format_exc_info]
    else:
        colors = bool(getattr(stream, "isatty", lambda: False)())
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
        shared_tail = []
    structlog.configure(
        processors=[*shared, _add_logger_name, structlog.processors.StackInfoRenderer(), *shared_tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=_NamedWriteLoggerFactory(stream),
        context_class=dict,
        cache_logger_on_first_use=cache_loggers,
    )
    _configure_stdlib(level_no, stream, [*shared, structlog.stdlib.add_logger_name, *shared_tail], renderer)


def _configure_stdlib(level_no: int, stream: TextIO, pre_chain: list[Processor], renderer: Processor) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    # Libraries' start-up chatter (alembic's plugin list, migration context) is only wanted when debugging.
    for noisy in ("alembic", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.NOTSET if level_no <= logging.DEBUG else logging.WARNING)


def get_logger(name: str, **initial_values: Any) -> Any:
    """A structlog logger whose events carry ``logger=name`` (and any ``initial_values``)."""
    return structlog.get_logger(name, **initial_values)
