"""The publisher's side of the alert journal: replay at start, record, acknowledge, sync.

:class:`JournalKeeper` adapts :class:`~nes2net_stream.service.alert_journal.AlertJournal` to the
publisher's buffered events. It opens the journal of one ingest worker (and, for worker 0, the
journals of indices no longer configured), turns what an earlier process left into events to
queue first (unacknowledged alerts, and a ``lost`` summary for each call that process never
summarised), records every new alert before it is queued, acknowledges alerts once they left the
buffer, and syncs the journal to disk in the background. A failing journal never stops an
alert: the failure is counted (``nes2net_alert_journal_errors_total``), logged at most every
``FAILURE_LOG_INTERVAL_S``, and the alert is held in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nes2net_stream.errors import ConfigError
from nes2net_stream.logs import get_logger
from nes2net_stream.service.alert_journal import (
    AlertJournal,
    JournalEntry,
    JournalError,
    worker_dirs,
)
from nes2net_stream.service.event_buffer import PendingEvent
from nes2net_stream.service.events import lost_call_summary
from nes2net_stream.service.metrics import ServiceMetrics

log = get_logger("nes2net.redis")
FAILURE_LOG_INTERVAL_S = 30.0


class JournalKeeper:
    """Journal of ingest worker ``worker`` of ``workers`` under ``directory`` (``w<worker>``)."""

    def __init__(self, directory: str | Path, metrics: ServiceMetrics, *, worker: int = 0,
                 workers: int = 1, segment_bytes: int = 8 * 1024 * 1024,
                 fsync_interval_s: float = 1.0):
        self.journal = AlertJournal(Path(directory) / f"w{worker}", segment_bytes=segment_bytes,
                                    fsync_interval_s=fsync_interval_s)
        self.metrics = metrics
        self.worker = worker
        self.workers = workers
        self.fsync_interval_s = fsync_interval_s
        self._failure_logged = 0.0
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self, queue: Callable[[PendingEvent], None]) -> None:
        """Open the journal, hand what must be replayed to ``queue`` in order, start syncing.

        Raises :class:`~nes2net_stream.errors.ConfigError` naming ``redis.alert_journal_dir``
        when the directory cannot be used.
        """
        try:
            entries = await asyncio.to_thread(self._read)
        except JournalError as exc:
            raise ConfigError(f"redis.alert_journal_dir: {exc}") from exc
        for item in self._replayed(entries) + self._lost_summaries():
            queue(item)
        if self.fsync_interval_s > 0:
            self._sync_task = asyncio.create_task(self._sync(), name="alert-journal-sync")

    def record(self, item: PendingEvent, ev: dict[str, Any]) -> None:
        """Journal a new alert before it is queued (sets ``item.seq``); never raises."""
        key = json.dumps([ev["call_id"], ev["channel"]])
        try:
            item.seq = self.journal.append(
                item.doc, opens=key if item.type == "state" else None,
                closes=key if item.type == "summary" else None)
        except Exception as exc:  # the alert must go out even if the journal breaks
            self.failed(exc, item.event_id)

    def opened(self, ev: dict[str, Any]) -> None:
        """A scored channel started (``ev``: a state-less event naming it); never raises."""
        try:
            self.journal.track(json.dumps([ev["call_id"], ev["channel"]]),
                               json.dumps(ev, separators=(",", ":")))
        except Exception as exc:  # the call goes on; only a lost summary is at stake
            self.failed(exc, str(ev.get("event_id", "")))

    def ack(self, items: Sequence[PendingEvent]) -> None:
        """These alerts (and all before them) left the buffer; never raises."""
        seqs = [i.seq for i in items if i.seq is not None]
        if not seqs:
            return
        try:
            self.journal.ack(max(seqs))
        except Exception as exc:  # never stop the writer over the journal
            self.failed(exc, items[-1].event_id)

    def failed(self, exc: BaseException, event_id: str) -> None:
        """A journal write failed: the alert stays in memory only (counted, logged)."""
        self.metrics.alert_journal_errors.inc()
        now = time.monotonic()
        if now - self._failure_logged >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged = now
            log.error("alert journal write failed; alerts held in memory only",
                      error=str(exc)[:200], event_id=event_id)

    async def close(self) -> None:
        """Stop syncing and close the journal, saying what it keeps for the next start."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if not self.journal.close():
            log.warning("alerts kept in the alert journal for the next start",
                        alerts=self.journal.pending, directory=str(self.journal.directory))

    def _read(self) -> list[JournalEntry]:
        """Blocking file work (run in a thread): this journal's and the orphans' alerts."""
        return self.journal.open() + self._orphans()

    def _orphans(self) -> list[JournalEntry]:
        """Alerts journaled by worker indices this configuration no longer runs (worker 0)."""
        if self.worker != 0:
            return []
        moved: list[JournalEntry] = []
        for index, d in worker_dirs(self.journal.directory.parent).items():
            if index < self.workers:
                continue
            try:
                moved += self.journal.take_over(d)
            except OSError as exc:
                log.error("alert journal of another worker index not replayed", directory=str(d),
                          error=str(exc))
        return moved

    def _replayed(self, entries: list[JournalEntry]) -> list[PendingEvent]:
        """The unacknowledged alerts as events, keeping their journal sequence numbers."""
        items = []
        for entry in entries:
            try:
                ev = json.loads(entry.doc)
                items.append(PendingEvent.of(ev, entry.doc, is_alert=True, seq=entry.seq))
            except (ValueError, KeyError, TypeError) as exc:  # not an event this writes
                log.error("alert journal entry is not an event; skipped", seq=entry.seq,
                          error=str(exc)[:200])
        if items:
            self.metrics.alerts_replayed.inc(len(items))
            log.warning("replaying alerts from the alert journal", alerts=len(items),
                        directory=str(self.journal.directory))
        return items

    def _lost_summaries(self) -> list[PendingEvent]:
        """A ``lost`` summary for each channel an earlier process left without one, journaled."""
        items = []
        for key, doc in list(self.journal.lost_calls.items()):
            try:
                last = json.loads(doc)
                ev = lost_call_summary(last)
                summary = json.dumps(ev, separators=(",", ":"))
                item = PendingEvent.of(ev, summary, is_alert=True)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("alert journal: open call is not an event; dropped", key=key,
                          error=str(exc)[:200])
                with contextlib.suppress(OSError):
                    self.journal.discard(key)
                continue
            self.record(item, ev)
            items.append(item)
            self.metrics.calls_ended.labels(reason="lost").inc()
            log.warning("call lost with an earlier process; its summary is published",
                        call_id=last["call_id"], channel=last["channel"], state=last["state"])
        return items

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval_s)
            if self.journal.dirty:
                try:
                    await asyncio.to_thread(self.journal.sync)
                except OSError as exc:
                    self.failed(exc, "")
