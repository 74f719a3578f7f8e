import asyncio
import hashlib
import os

import pytest
from twisted.internet import defer, task

from callcenter.ivr.watcher import BAD_NAME, LONG_NAME, FileChange, FlowWatcher

FLOW = "start: greet\nnodes:\n  greet:\n    type: play\n    prompt: hello\n"
SECOND_NS = 1_000_000_000


class Recorder:
    def __init__(self, fail_first: int = 0) -> None:
        self.changes: list[FileChange] = []
        self.fail_first = fail_first
        self.calls = 0

    def __call__(self, change: FileChange) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("publisher broken")
        self.changes.append(change)

    def take(self) -> list[tuple[str, str | None, str | None]]:
        taken = [(c.path.name, c.text, c.error) for c in self.changes]
        self.changes.clear()
        return taken


@pytest.fixture
def clock():
    return task.Clock()


def write(path, text, mtime_s: int | None = None) -> None:
    """Write ``text`` and give the file a distinct mtime (tests must not depend on timestamp granularity)."""
    path.write_text(text, encoding="utf-8")
    if mtime_s is not None:
        os.utime(path, ns=(mtime_s * SECOND_NS, mtime_s * SECOND_NS))


def tick(clock, seconds: float, step: float = 0.25) -> None:
    """Advance the clock in small steps (a single big advance runs a looping call only once)."""
    for _ in range(round(seconds / step)):
        clock.advance(step)


def make(tmp_path, clock, recorder=None, **kwargs):
    recorder = recorder or Recorder()
    watcher = FlowWatcher(tmp_path, recorder, clock=clock, interval=1.0, settle=0.5, **kwargs)
    return watcher, recorder


def test_new_file_reported_after_settle(tmp_path, clock):
    watcher, recorder = make(tmp_path, clock)
    assert watcher.prime() == []
    watcher.start()
    write(tmp_path / "main.yaml", FLOW)
    tick(clock, 1.0)  # first sight: not yet stable
    assert recorder.take() == []
    tick(clock, 1.0)  # stable for a whole interval
    [change] = recorder.changes
    assert (change.path, change.text, change.error, change.flow) == (tmp_path / "main.yaml", FLOW, None, "main")
    assert change.sha256 == hashlib.sha256(FLOW.encode()).hexdigest() and not change.deleted
    recorder.take()
    tick(clock, 5.0)  # nothing new: nothing reported again
    assert recorder.take() == []
    watcher.stop()
    assert not watcher.running and clock.getDelayedCalls() == []


def test_half_written_file_waits_until_stable(tmp_path, clock):
    watcher, recorder = make(tmp_path, clock)
    watcher.prime()
    watcher.start()
    path = tmp_path / "main.yaml"
    for step in range(1, 6):  # the editor keeps writing: every scan sees another mtime and size
        write(path, FLOW[: step * 10], mtime_s=1000 + step)
        tick(clock, 1.0)
        assert recorder.take() == []
    write(path, FLOW, mtime_s=2000)
    tick(clock, 1.0)
    assert recorder.take() == []
    tick(clock, 1.0)
    assert recorder.take() == [("main.yaml", FLOW, None)]


def test_settle_uses_time_not_scans(tmp_path, clock):
    watcher = FlowWatcher(tmp_path, Recorder(), clock=clock, interval=0.1, settle=0.5)
    write(tmp_path / "main.yaml", FLOW, mtime_s=1000)
    assert watcher.scan() == []
    clock.advance(0.3)
    assert watcher.scan() == []
    clock.advance(0.3)
    assert [c.text for c in watcher.scan()] == [FLOW]


def test_touch_without_change_is_not_reported(tmp_path, clock):
    path = tmp_path / "main.yaml"
    write(path, FLOW, mtime_s=1000)
    watcher, recorder = make(tmp_path, clock)
    assert [(c.path.name, c.text) for c in watcher.prime()] == [("main.yaml", FLOW)]
    watcher.start()
    os.utime(path, ns=(5000 * SECOND_NS, 5000 * SECOND_NS))
    tick(clock, 3.0)
    assert recorder.take() == []
    path.write_text(FLOW, encoding="utf-8")  # rewritten with the same content
    tick(clock, 3.0)
    assert recorder.take() == []
    write(path, FLOW + "# changed\n", mtime_s=6000)
    tick(clock, 3.0)
    assert recorder.take() == [("main.yaml", FLOW + "# changed\n", None)]


def test_same_size_rewrite_within_the_same_mtime_is_caught(tmp_path, clock):
    path = tmp_path / "main.yaml"
    path.write_text(FLOW, encoding="utf-8")
    watcher, recorder = make(tmp_path, clock)
    watcher.prime()
    watcher.start()
    stat = path.stat()
    path.write_text(FLOW.replace("hello", "HELLO"), encoding="utf-8")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime, as on a coarse filesystem
    tick(clock, 3.0)
    assert recorder.take() == [("main.yaml", FLOW.replace("hello", "HELLO"), None)]


def test_deletion_reported_after_settle(tmp_path, clock):
    path = tmp_path / "main.yaml"
    write(path, FLOW, mtime_s=1000)
    watcher, recorder = make(tmp_path, clock)
    watcher.prime()
    watcher.start()
    path.unlink()
    tick(clock, 1.0)
    assert recorder.take() == []
    tick(clock, 1.0)
    [change] = recorder.changes
    assert change.deleted and (change.text, change.sha256, change.error, change.flow) == (None, None, None, "main")


def test_delete_and_recreate_between_scans_is_not_a_deletion(tmp_path, clock):
    path = tmp_path / "main.yaml"
    write(path, FLOW, mtime_s=1000)
    watcher, recorder = make(tmp_path, clock)
    watcher.prime()
    watcher.start()
    path.unlink()  # an editor that moves the original away before writing the new file
    tick(clock, 1.0)
    write(path, FLOW + "# new\n", mtime_s=2000)
    tick(clock, 1.0)
    tick(clock, 1.0)
    assert recorder.take() == [("main.yaml", FLOW + "# new\n", None)]


def test_bad_names_reported_with_error(tmp_path, clock):
    write(tmp_path / "my flow.yaml", FLOW, mtime_s=1000)
    write(tmp_path / ("x" * 65 + ".yaml"), FLOW, mtime_s=1000)
    write(tmp_path / "night.yml", FLOW, mtime_s=1000)
    write(tmp_path / "night.yaml", FLOW, mtime_s=1000)
    for ignored in (".main.yaml", "main.yaml~", ".main.yaml.swp", "#main.yaml#", "notes.txt"):
        write(tmp_path / ignored, FLOW, mtime_s=1000)
    (tmp_path / "dir.yaml").mkdir()
    watcher, recorder = make(tmp_path, clock)
    changes = {c.path.name: c for c in watcher.prime()}
    assert set(changes) == {"my flow.yaml", "x" * 65 + ".yaml", "night.yml", "night.yaml"}
    assert changes["my flow.yaml"].error == BAD_NAME and changes["my flow.yaml"].text is None
    assert changes["x" * 65 + ".yaml"].error == LONG_NAME
    assert "also defined by night.yaml" in changes["night.yml"].error
    assert changes["night.yaml"].error is None
    watcher.start()
    write(tmp_path / "bad!.yml", FLOW)
    tick(clock, 2.0)
    assert recorder.take() == [("bad!.yml", None, BAD_NAME)]
    (tmp_path / "bad!.yml").unlink()  # removing a misnamed file is no news
    tick(clock, 3.0)
    assert recorder.take() == []
    (tmp_path / "night.yaml").unlink()  # night.yml is no longer in conflict: now it is the flow's file
    tick(clock, 3.0)
    assert sorted(recorder.take()) == [("night.yaml", None, None), ("night.yml", FLOW, None)]


def test_unreadable_and_non_utf8_files(tmp_path, clock):
    (tmp_path / "latin.yaml").write_bytes(b"prompt: caf\xe9\n")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + FLOW.encode())
    watcher, recorder = make(tmp_path, clock)
    changes = {c.path.name: c for c in watcher.prime()}
    assert changes["latin.yaml"].text is None
    assert changes["latin.yaml"].error == "not UTF-8 text: byte 0xe9 at line 1 (save the file as UTF-8)"
    assert changes["bom.yaml"].text == FLOW and changes["bom.yaml"].error is None
    assert changes["bom.yaml"].sha256 == hashlib.sha256(FLOW.encode()).hexdigest()
    watcher.start()
    write(tmp_path / "latin.yaml", "prompt: café\n", mtime_s=3000)  # fixed: reported with its text
    tick(clock, 3.0)
    assert recorder.take() == [("latin.yaml", "prompt: café\n", None)]


def test_unreadable_file(tmp_path, clock, monkeypatch):
    path = tmp_path / "main.yaml"
    write(path, FLOW, mtime_s=1000)
    real_read_bytes = type(path).read_bytes

    def read_bytes(self):
        if self.name == "main.yaml":
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(self)

    monkeypatch.setattr(type(path), "read_bytes", read_bytes)
    watcher, recorder = make(tmp_path, clock)
    [change] = watcher.prime()
    assert (change.text, change.error) == (None, "cannot read the file: Permission denied")
    monkeypatch.undo()
    watcher.start()
    tick(clock, 1.0)  # an unreadable file is tried again at every scan: readable now, so reported
    tick(clock, 3.0)
    assert recorder.take() == [("main.yaml", FLOW, None)]


def test_callback_exception_does_not_stop_the_watcher(tmp_path, clock):
    watcher, recorder = make(tmp_path, clock, recorder=Recorder(fail_first=1))
    watcher.prime()
    watcher.start()
    write(tmp_path / "main.yaml", FLOW, mtime_s=1000)
    tick(clock, 2.0)
    assert recorder.calls == 1 and recorder.take() == []  # raised
    write(tmp_path / "main.yaml", FLOW + "# again\n", mtime_s=2000)
    tick(clock, 2.0)
    assert watcher.running and recorder.take() == [("main.yaml", FLOW + "# again\n", None)]


def test_failing_deferred_and_waiting_for_it(tmp_path, clock):
    pending: list[defer.Deferred] = []

    def on_change(change):
        d = defer.Deferred()
        pending.append(d)
        return d

    watcher = FlowWatcher(tmp_path, on_change, clock=clock, interval=1.0, settle=0.0)
    watcher.prime()
    watcher.start()
    write(tmp_path / "main.yaml", FLOW, mtime_s=1000)
    tick(clock, 1.0)
    assert len(pending) == 1
    write(tmp_path / "main.yaml", FLOW + "# 2\n", mtime_s=2000)
    tick(clock, 3.0)
    assert len(pending) == 1  # no scan while the previous change is being handled
    pending[0].errback(RuntimeError("validation crashed"))
    tick(clock, 1.0)
    assert len(pending) == 2 and watcher.running


def test_async_on_change_runs_as_a_task(tmp_path):
    seen: list[str] = []

    async def on_change(change):
        await asyncio.sleep(0)
        seen.append(change.flow)
        raise ValueError("logged, not raised")

    async def main():
        clock = task.Clock()
        watcher = FlowWatcher(tmp_path, on_change, clock=clock, interval=1.0, settle=0.0)
        watcher.prime()
        watcher.start()
        write(tmp_path / "main.yaml", FLOW, mtime_s=1000)
        tick(clock, 1.0)
        for _ in range(5):
            await asyncio.sleep(0)
        watcher.stop()

    asyncio.run(main())
    assert seen == ["main"]


def test_missing_directory_reports_nothing(tmp_path, clock):
    watcher, recorder = make(tmp_path / "absent", clock)
    assert watcher.prime() == []
    watcher.start()
    tick(clock, 5.0)
    assert recorder.take() == [] and watcher.running
