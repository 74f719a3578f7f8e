import asyncio
import io
import json
import logging
from datetime import UTC, datetime

import pytest
import structlog

from callcenter.bus import (
    Bus,
    CallAnswered,
    CallEnded,
    CallStarted,
    Event,
    InProcessBus,
    RegistrationChanged,
    TrunkStateChanged,
)
from callcenter.bus.events import event_from_dict
from callcenter.logs import configure_logging


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "callcenter.logs"]:
        root.removeHandler(handler)


def test_events_are_frozen_and_round_trip():
    event = CallStarted(call_id="a@b", direction="inbound", from_number="13800000000", to_number="12349")
    with pytest.raises(AttributeError):
        event.call_id = "x"  # type: ignore[misc]
    assert event.at.tzinfo is UTC and event.name == "call.started"
    assert event_from_dict(json.loads(json.dumps(event.to_dict()))) == event
    ended = CallEnded(call_id="a@b", reason="caller_bye", sip_status=200, at=datetime(2025, 1, 1, tzinfo=UTC))
    assert ended.to_dict()["at"] == "2025-01-01T00:00:00+00:00"
    assert RegistrationChanged(aor="sip:1001@cc", contact="sip:1001@10.0.0.5", expires=0).expires == 0
    assert TrunkStateChanged(trunk="carrier", state="up").name == "trunk.state_changed"


def test_sync_handlers_and_failures_do_not_break_publish(log_stream):
    bus: Bus = InProcessBus()
    seen: list[str] = []

    def broken(event):
        raise RuntimeError("handler bug")

    bus.subscribe(CallStarted, lambda e: seen.append(f"first:{e.call_id}"))
    bus.subscribe(CallStarted, broken)
    unsubscribe = bus.subscribe(CallStarted, lambda e: seen.append(f"third:{e.call_id}"))
    bus.subscribe(Event, lambda e: seen.append(f"all:{e.name}"))
    bus.subscribe(CallEnded, lambda e: seen.append("ended"))

    bus.publish(CallStarted(call_id="c1", direction="inbound"))
    unsubscribe()
    bus.publish(CallStarted(call_id="c2", direction="inbound"))
    bus.publish(CallAnswered(call_id="c2"))
    assert seen == ["first:c1", "third:c1", "all:call.started", "first:c2", "all:call.started",
                    "all:call.answered"]
    failures = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [(f["event"], f["call_id"]) for f in failures] == [("bus.handler_failed", "c1"),
                                                              ("bus.handler_failed", "c2")]
    assert "RuntimeError: handler bug" in failures[0]["exception"]


def test_async_handlers(log_stream):
    async def main():
        bus = InProcessBus()
        seen: list[str] = []

        async def slow(event):
            await asyncio.sleep(0.01)
            seen.append(f"slow:{event.call_id}")
            bus.publish(CallAnswered(call_id=event.call_id))  # publishing from a handler is fine

        async def failing(event):
            raise ValueError("async bug")

        bus.subscribe(CallStarted, slow)
        bus.subscribe(CallStarted, failing)
        bus.subscribe(CallStarted, lambda e: seen.append(f"sync:{e.call_id}"))
        bus.subscribe(CallAnswered, lambda e: seen.append(f"answered:{e.call_id}"))
        bus.publish(CallStarted(call_id="c1", direction="inbound"))
        assert seen == ["sync:c1"]  # publish does not wait for async handlers
        await bus.drain()
        await bus.close()
        return seen

    assert asyncio.run(main()) == ["sync:c1", "slow:c1", "answered:c1"]
    failures = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [f["event"] for f in failures] == ["bus.handler_failed"]
    assert "ValueError: async bug" in failures[0]["exception"]


def test_async_handler_without_loop_is_logged(log_stream):
    bus = InProcessBus()

    async def handler(event):
        raise AssertionError("never runs")

    bus.subscribe(TrunkStateChanged, handler)
    bus.publish(TrunkStateChanged(trunk="carrier", state="down"))
    (line,) = [json.loads(x) for x in log_stream.getvalue().splitlines()]
    assert line["event"] == "bus.handler_failed" and "running event loop" in line["error"]
