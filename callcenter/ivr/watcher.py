"""Watches ``ivr_flows/`` for flow files that supervisors edit, by polling (any filesystem, no inotify).

Every ``interval`` seconds :meth:`FlowWatcher.scan` compares each ``*.yaml`` / ``*.yml`` file's stat
signature with what it saw before. A file whose signature changed is read only once the signature has been
stable for ``settle`` seconds (editors write in several steps; a half-written file must never be published),
and reported only when its content differs from what was last reported for it (a touch is not a change).
A file missing for ``settle`` seconds is reported deleted. Each report is a :class:`FileChange` handed to
``on_change``; what to do with it (validate, publish, refuse) is the engine's business.

Files are read on the reactor thread: flow files are a few kilobytes. Timers come from the injected clock;
only the "was this file modified in the last moments" test (for filesystems with coarse timestamps) compares
the file's mtime with the wall clock, as both come from the same source.
"""

import asyncio
import fnmatch
import hashlib
import inspect
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from callcenter.ivr.versions import FLOW_NAME_MAX
from callcenter.logs import get_logger

log = get_logger(__name__)

FILE_NAME = re.compile(r"^[A-Za-z0-9_-]+\.ya?ml$")
BAD_NAME = "file name must be letters, digits, _ or - (it is the flow's name)"
LONG_NAME = f"file name too long: a flow's name has at most {FLOW_NAME_MAX} characters"
DEFAULT_PATTERNS = ("*.yaml", "*.yml")
BACKUP_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".bak", ".tmp")
RACY_SECONDS = 2.0  # a file modified this recently may change again within the same mtime tick

# (mtime_ns, size, ino, ctime_ns): any write, replace (rename over) or permission change shows here
Signature = tuple[int, int, int, int]


@dataclass(frozen=True)
class FileChange:
    """A flow file that appeared, changed or disappeared.

    ``text`` is the content (UTF-8, a leading BOM removed) and ``sha256`` the hex SHA-256 of ``text``
    encoded as UTF-8, comparable with ``FlowVersion.sha256``. A deleted file has ``text``, ``sha256`` and
    ``error`` all None. A file that cannot be used has ``error`` set (bad name, unreadable, not UTF-8) and
    ``text`` None."""

    path: Path
    text: str | None
    sha256: str | None
    error: str | None = None

    @property
    def flow(self) -> str:
        """The flow's name: the file name without ``.yaml`` / ``.yml``."""
        return self.path.name.rsplit(".", 1)[0]

    @property
    def deleted(self) -> bool:
        return self.text is None and self.error is None


@dataclass
class _Known:
    """What was last reported for a file that exists. ``signature`` None: read again on the next scan.
    ``recheck``: read it at every scan even when its signature does not move (modified in the last moments,
    so maybe again within the same mtime tick; or unreadable, maybe readable again)."""

    signature: Signature | None
    sha256: str | None
    error: str | None
    recheck: bool = False
    misnamed: bool = False  # never a flow: its removal is not reported


@dataclass
class _Pending:
    """A file whose state moved: ``signature`` None means missing. Acted upon after ``settle`` seconds."""

    signature: Signature | None
    since: float


def _signature(stat: os.stat_result) -> Signature:
    return stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_ctime_ns


def _is_ignored(name: str) -> bool:
    """Hidden files, editor lock/backup/swap files."""
    return name.startswith((".", "#")) or name.endswith("#") or name.endswith(BACKUP_SUFFIXES)


def name_error(name: str, others: Iterable[str] = ()) -> str | None:
    """Why a file named ``name`` cannot hold a flow, or None. ``others``: the other flow file names in the
    directory (``x.yml`` is refused when ``x.yaml`` exists: both would be flow ``x``)."""
    if not FILE_NAME.match(name):
        return BAD_NAME
    stem, suffix = name.rsplit(".", 1)
    if len(stem) > FLOW_NAME_MAX:
        return LONG_NAME
    if suffix == "yml" and f"{stem}.yaml" in others:
        return f"flow {stem!r} is also defined by {stem}.yaml: keep one of the two files"
    return None


class FlowWatcher:
    """Polls ``directory`` and calls ``on_change`` for each file change (see the module docstring).

    ``on_change`` may return a Deferred or an awaitable (run as an asyncio task): the next scan waits until
    the results of the previous one have finished, so two versions of one file are never handled at once.
    Its exceptions are logged (``ivr.watcher.error``) and never stop the watcher."""

    def __init__(self, directory: Path, on_change: Callable[[FileChange], object], *, clock: IReactorTime,
                 interval: float = 1.0, settle: float = 0.5, pattern: str | Iterable[str] = DEFAULT_PATTERNS,
                 ) -> None:
        self.directory = Path(directory)
        self._on_change = on_change
        self._clock = clock
        self.interval = interval
        self.settle = settle
        self.patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        self._known: dict[Path, _Known] = {}
        self._pending: dict[Path, _Pending] = {}
        self._loop: LoopingCall | None = None
        self._listing_error: str | None = None

    # -- scheduling

    def start(self) -> None:
        """Scan every ``interval`` seconds, the first time after one interval (call :meth:`prime` first)."""
        if self._loop is not None and self._loop.running:
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=False).addErrback(self._loop_failed)
        log.info("ivr.watcher.started", directory=str(self.directory), interval=self.interval, settle=self.settle)

    def stop(self) -> None:
        """Stop scanning (a scan's callbacks still running are not interrupted)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            log.info("ivr.watcher.stopped", directory=str(self.directory))
        self._loop = None

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    def _tick(self) -> Deferred[object] | None:
        try:
            changes = self.scan()
        except Exception as exc:  # a bug here must not end the watching
            log.exception("ivr.watcher.error", directory=str(self.directory), error=repr(exc))
            return None
        return self._deliver(changes)

    def _loop_failed(self, failure: Failure) -> None:
        log.error("ivr.watcher.error", directory=str(self.directory), error=failure.getErrorMessage(),
                  reason="the watch loop stopped")

    def _deliver(self, changes: list[FileChange]) -> Deferred[object] | None:
        waiting: list[Deferred[object]] = []
        for change in changes:
            log.info("ivr.watcher.changed", path=str(change.path), flow=change.flow, deleted=change.deleted,
                     sha256=change.sha256, error=change.error)
            try:
                result = self._on_change(change)
                if isinstance(result, Deferred):
                    waiting.append(result.addErrback(self._callback_failed, change))
                elif inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    waiting.append(Deferred.fromFuture(task).addErrback(self._callback_failed, change))
            except Exception as exc:
                self._log_callback_error(change, repr(exc))
        if not waiting:
            return None
        return gatherResults(waiting, consumeErrors=True).addErrback(lambda _: None)

    def _callback_failed(self, failure: Failure, change: FileChange) -> None:
        self._log_callback_error(change, failure.getErrorMessage() or repr(failure.value))

    def _log_callback_error(self, change: FileChange, error: str) -> None:
        log.error("ivr.watcher.error", path=str(change.path), flow=change.flow, error=error,
                  reason="on_change failed")

    # -- scanning

    def prime(self) -> list[FileChange]:
        """Read every flow file now (no settling), remember them and return them all, bad ones included."""
        self._known.clear()
        self._pending.clear()
        listing = self._list()
        changes = []
        for path, signature in sorted((listing or {}).items()):
            change, known = self._read(path, signature, listing or {})
            if known is not None:
                self._known[path] = known
                changes.append(change)
        return changes

    def scan(self) -> list[FileChange]:
        """One pass: the changes that are ready to report (settled), in file name order."""
        now = self._clock.seconds()
        listing = self._list()
        if listing is None:
            return []  # the directory cannot be listed: report nothing (certainly not every file deleted)
        changes: list[FileChange] = []
        for path, signature in sorted(listing.items()):
            change = self._scan_present(path, signature, listing, now)
            if change is not None:
                changes.append(change)
        for path in sorted((self._known.keys() | self._pending.keys()) - listing.keys()):
            change = self._scan_missing(path, now)
            if change is not None:
                changes.append(change)
        return changes

    def _scan_present(self, path: Path, signature: Signature, listing: dict[Path, Signature],
                      now: float) -> FileChange | None:
        known = self._known.get(path)
        if known is not None and known.misnamed and _name_error_in(path, listing) is None:
            known.signature = None  # x.yml, refused while x.yaml existed: x.yaml is gone
        if known is not None and known.signature == signature:
            self._pending.pop(path, None)  # back as it was (a pending deletion is cancelled)
            if not known.recheck:
                return None
            if self._content_changed(path, known):
                known.signature = None  # changed within the same mtime tick: treat as a fresh change
            else:
                return None
        pending = self._pending.get(path)
        if pending is None or pending.signature != signature:
            pending = self._pending[path] = _Pending(signature, now)
        if now - pending.since < self.settle:
            return None
        change, new_known = self._read(path, signature, listing)
        if new_known is None:  # moved while being read: settle again
            return None
        del self._pending[path]
        self._known[path] = new_known
        if (known is not None and change.error is None and known.error is None
                and known.sha256 == change.sha256):
            return None  # touched, or written with the same content
        return change

    def _scan_missing(self, path: Path, now: float) -> FileChange | None:
        known = self._known.get(path)
        if known is None:  # appeared and went before it settled: never reported
            self._pending.pop(path, None)
            return None
        pending = self._pending.get(path)
        if pending is None or pending.signature is not None:
            pending = self._pending[path] = _Pending(None, now)
        if now - pending.since < self.settle:
            return None
        del self._known[path], self._pending[path]
        if known.misnamed:
            return None  # never a flow: its removal is no news
        return FileChange(path, None, None)

    def _content_changed(self, path: Path, known: _Known) -> bool:
        """Whether a file to recheck reads differently from what was reported (its signature is the same)."""
        try:
            data = path.read_bytes()
            stat = path.stat()
        except OSError:
            return known.error is None  # an unreadable file still unreadable is no news
        if known.error is not None:
            return True  # readable again
        known.recheck = _is_recent(stat.st_mtime_ns)
        text, error = _decode(data)
        return error is not None or hashlib.sha256(text.encode("utf-8")).hexdigest() != known.sha256

    def _list(self) -> dict[Path, Signature] | None:
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            error = exc.strerror or repr(exc)
            if error != self._listing_error:
                log.warning("ivr.watcher.unreadable_directory", directory=str(self.directory), error=error)
            self._listing_error = error
            return None
        self._listing_error = None
        listing: dict[Path, Signature] = {}
        for entry in entries:
            name = entry.name
            if _is_ignored(name) or not any(fnmatch.fnmatch(name, p) for p in self.patterns):
                continue
            try:
                if not entry.is_file():
                    continue
                listing[Path(entry.path)] = _signature(entry.stat())
            except OSError:  # vanished between listing and stat
                continue
        return listing

    def _read(self, path: Path, signature: Signature,
              listing: dict[Path, Signature]) -> tuple[FileChange, _Known | None]:
        """Read ``path``: the change to report and what to remember, or ``(_, None)`` when the file moved
        during the read (it is then pending again with its new signature)."""
        error = _name_error_in(path, listing)
        if error is not None:
            return FileChange(path, None, None, error), _Known(signature, None, error, misnamed=True)
        try:
            data = path.read_bytes()
            after = _signature(path.stat())
        except OSError as exc:
            error = f"cannot read the file: {exc.strerror or exc}"
            return FileChange(path, None, None, error), _Known(signature, None, error, recheck=True)
        if after != signature:
            self._pending[path] = _Pending(after, self._clock.seconds())
            return FileChange(path, None, None), None
        text, error = _decode(data)
        if error is not None:
            return FileChange(path, None, None, error), _Known(signature, None, error)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return FileChange(path, text, sha), _Known(signature, sha, None, recheck=_is_recent(after[0]))


def _name_error_in(path: Path, listing: dict[Path, Signature]) -> str | None:
    return name_error(path.name, (other.name for other in listing if other != path))


def _is_recent(mtime_ns: int) -> bool:
    """Modified less than RACY_SECONDS ago by the wall clock (the clock file timestamps come from)."""
    return time.time() - mtime_ns / 1e9 < RACY_SECONDS


def _decode(data: bytes) -> tuple[str, str | None]:
    """UTF-8 text without a leading BOM, or an error naming the first bad byte."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} (save the file as UTF-8)"
