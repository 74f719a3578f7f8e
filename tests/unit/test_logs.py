import io
import json
import logging
from datetime import datetime

import structlog

from callcenter.logs import configure_logging, get_logger


def teardown_function():
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "callcenter.logs"]:
        root.removeHandler(handler)


def lines_of(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_event_and_call_id():
    stream = io.StringIO()  # not a TTY: "auto" means JSON
    configure_logging("info", "auto", stream)
    log = get_logger("callcenter.sip")
    log.info("sip.request.received", call_id="abc@host", method="INVITE")
    log.debug("sip.detail", call_id="abc@host")  # filtered out
    structlog.contextvars.bind_contextvars(call_id="ctx@host")
    log.warning("acd.call.offered", agent="1001", note="老人")
    (first, second) = lines_of(stream)
    assert first["event"] == "sip.request.received" and first["call_id"] == "abc@host"
    assert first["level"] == "info" and first["logger"] == "callcenter.sip" and first["method"] == "INVITE"
    assert datetime.fromisoformat(first["timestamp"]).utcoffset().total_seconds() == 0
    assert second["event"] == "acd.call.offered" and second["call_id"] == "ctx@host" and second["note"] == "老人"


def test_exceptions_and_stdlib_records_are_json():
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("t").exception("store.cdr.write_failed", call_id="x")
    logging.getLogger("alembic").info("running %s", "upgrade")
    (error, foreign) = lines_of(stream)
    assert error["level"] == "error" and "RuntimeError: boom" in error["exception"]
    assert foreign["event"] == "running upgrade" and foreign["logger"] == "alembic"


def test_console_format_and_level_filter():
    stream = io.StringIO()
    configure_logging("warning", "console", stream)
    log = get_logger("t")
    log.info("hidden", call_id="1")
    log.error("shown.event", call_id="2")
    text = stream.getvalue()
    assert "hidden" not in text and "shown.event" in text and "call_id=2" in text
