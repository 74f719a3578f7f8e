"""Writing rows in the background, in batches: what the CDR writer and the queue event log share.

Adding an item never blocks and never touches the database; one background task takes up to ``batch_size``
items per transaction (waiting at most ``interval`` seconds for a batch to fill). A failed write is logged and
retried with backoff; an item is only dropped when the database rejects it on its own (bad data), and then
the whole item is logged (``<prefix>.rejected``), as are items that could not be written by close()
(``<prefix>.lost``): nothing is lost without a trace in the log.

A subclass says how to write a batch (:meth:`BatchWriter._write_batch`), how an item shows in the log
(:meth:`BatchWriter._fields`) and its log prefix and noun.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from callcenter.logs import get_logger

log = get_logger(__name__)

Item = TypeVar("Item")


def is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help: the database (or the type layer) rejects the data itself."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


class BatchWriter(Generic[Item]):
    prefix: ClassVar[str] = "store.batch"  # log events: <prefix>.lost / .rejected / .write_failed / .backlog
    noun: ClassVar[str] = "items"  # how the log counts them ("records", "events")

    def __init__(self, *, batch_size: int, interval: float, retry_delay: float = 0.5,
                 max_retry_delay: float = 30.0, backlog_warning: int = 10_000) -> None:
        self.batch_size = batch_size
        self.interval = interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.backlog_warning = backlog_warning
        self._pending: deque[Item] = deque()
        self._added = 0  # items ever added
        self._done = 0  # items written or (permanently) rejected, in order
        self.written = 0
        self.rejected = 0  # items the database refused (logged in full)
        self.lost = 0  # items not written at close (logged in full)
        self.failures = 0  # failed write attempts (each one retried)
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()  # skip the batching delay: batch full, flush or close requested
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- what a subclass says -------------------------------------------------------------------------
    async def _write_batch(self, batch: list[Item]) -> None:
        raise NotImplementedError

    def _fields(self, item: Item) -> dict[str, Any]:
        """The item as log fields (a lost or rejected item is logged in full)."""
        raise NotImplementedError

    def _call_id(self, item: Item) -> Any:
        return self._fields(item).get("call_id")

    # -- the writer -----------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Items added but not written yet."""
        return self._added - self._done

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._task = asyncio.create_task(self._run(), name=self.prefix)

    def _add(self, item: Item) -> None:
        """Queue ``item``; returns at once. Call it from the event loop's thread. After close() the item can no
        longer be written: it is logged (``<prefix>.lost``) instead."""
        if self._closing and (self._task is None or self._task.done()):
            log.error(f"{self.prefix}.lost", reason="writer closed", **self._fields(item))
            self.lost += 1
            return
        self._pending.append(item)
        self._added += 1
        if len(self._pending) >= self.batch_size:
            self._hurry.set()
        if len(self._pending) % self.backlog_warning == 0:
            log.warning(f"{self.prefix}.backlog", pending=len(self._pending), call_id=self._call_id(item))
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every item added so far is written (or rejected as invalid)."""
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        if self._done >= self._added:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._added, future))
        self._hurry.set()
        self._wakeup.set()
        await asyncio.shield(future)

    async def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop. After ``timeout`` seconds (if given) give up: the items not
        written are logged one by one (``<prefix>.lost``) so they can be recovered from the log."""
        self._closing = True
        self._hurry.set()
        self._wakeup.set()
        if self._task is None:
            self._log_lost()
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._log_lost()

    def _log_lost(self) -> None:
        for item in self._pending:
            log.error(f"{self.prefix}.lost", reason="close timeout", **self._fields(item))
        self.lost += len(self._pending)
        self._done += len(self._pending)
        self._pending.clear()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError(f"{type(self).__name__} closed before these {self.noun} "
                                                  "were written"))
        self._waiters.clear()

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            await self._wait_for_work()
            if not self._pending:
                return  # closing and drained
            batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
            try:
                await self._write_batch(batch)
            except asyncio.CancelledError:
                self._pending.extendleft(reversed(batch))
                raise
            except Exception as exc:
                if is_permanent(exc):
                    batch = await self._write_one_by_one(batch)
                    if not batch:
                        delay = self.retry_delay
                        continue
                else:
                    self.failures += 1
                    log.warning(f"{self.prefix}.write_failed", **{self.noun: len(batch)}, retry_in=delay,
                                error=repr(exc), call_id=self._call_id(batch[0]))
                self._pending.extendleft(reversed(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            delay = self.retry_delay
            self.written += len(batch)
            self._completed(len(batch))

    async def _wait_for_work(self) -> None:
        while not self._pending and not self._closing:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._pending and len(self._pending) < self.batch_size and not (self._closing or self._waiters):
            self._hurry.clear()
            try:
                await asyncio.wait_for(self._hurry.wait(), self.interval)
            except TimeoutError:
                pass

    async def _write_one_by_one(self, batch: list[Item]) -> list[Item]:
        """Isolate the items the database rejects; return the rest of the batch still to write (empty when
        everything was written or rejected) after a transient failure."""
        for index, item in enumerate(batch):
            try:
                await self._write_batch([item])
            except Exception as exc:
                if not is_permanent(exc):
                    self.failures += 1
                    log.warning(f"{self.prefix}.write_failed", **{self.noun: 1}, error=repr(exc),
                                call_id=self._call_id(item))
                    return batch[index:]
                self.rejected += 1
                log.error(f"{self.prefix}.rejected", error=repr(exc), **self._fields(item))
            else:
                self.written += 1
            self._completed(1)
        return []

    def _completed(self, count: int) -> None:
        self._done += count
        ready = [(target, fut) for target, fut in self._waiters if target <= self._done]
        self._waiters = [(target, fut) for target, fut in self._waiters if target > self._done]
        for _, future in ready:
            if not future.done():
                future.set_result(None)
