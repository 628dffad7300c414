"""Publishing events to Redis without ever stalling call ingest.

Events are queued in memory (bounded) and written by one background task in pipelined batches:

* ``XADD nes2net:alerts MAXLEN ~ N`` for state changes and call summaries,
* ``XADD nes2net:scores MAXLEN ~ N`` for every window score,
* ``PUBLISH nes2net:events`` for live dashboards (best effort),
* ``HSET nes2net:call:{call_id}`` with the latest state, refreshed with a TTL.

When Redis is down, slow or out of memory, the batch stays at the head of its queue and is
retried with exponential backoff, so order is kept and nothing is lost while the buffer has
room. When part of a pipelined batch was applied (e.g. Redis reached ``maxmemory`` mid-batch),
the events whose ``XADD`` succeeded are taken off the queue and only the rest is retried.

The alert and score buffers are bounded separately, in events (``alert_buffer``,
``score_buffer``) and in bytes of serialised JSON (``alert_buffer_bytes``,
``score_buffer_bytes``); when one is full its oldest event is dropped, counted in
``nes2net_events_dropped_total{type}`` and logged (every lost alert with its ``event_id``;
score drops at most every ``DROP_LOG_INTERVAL_S`` with a count). Delivery is at least once: a
write that timed out may have succeeded, so consumers de-duplicate on ``event_id``.

With ``alert_journal_dir`` set, alerts are also appended to an on-disk journal
(:mod:`~nes2net_stream.service.alert_journal`) and acknowledged there once written or dropped;
what a process leaves unacknowledged (killed, crashed, or stopped during an outage) the next
process with the same directory replays first. Scores are not journaled.

Logs tell an outage's story: ``redis write failed; buffering and retrying`` (with the cause:
``connection``, ``timeout``, ``oom``, ``auth`` or ``error``), ``redis still failing`` every
``OUTAGE_LOG_INTERVAL_S`` (and at once when the cause changes) with the backlog, then
``redis writes resumed`` with the outage's length and the number of events flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    OutOfMemoryError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nes2net_stream.logs import get_logger
from nes2net_stream.service.event_buffer import EventBuffer, PendingEvent
from nes2net_stream.service.events import OutputEvent
from nes2net_stream.service.journal_keeper import JournalKeeper
from nes2net_stream.service.metrics import ServiceMetrics
from nes2net_stream.service.redis_client import create_redis_client

log = get_logger("nes2net.redis")
DROP_LOG_INTERVAL_S = 10.0
OUTAGE_LOG_INTERVAL_S = 30.0


@dataclass(frozen=True)
class RedisConfig:
    """Redis connection and key settings (``[redis]`` section)."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "nes2net"
    alerts_maxlen: int = 100_000
    scores_maxlen: int = 1_000_000
    call_ttl_s: int = 86_400
    alert_buffer: int = 100_000
    score_buffer: int = 50_000
    alert_buffer_bytes: int = 256 * 1024 * 1024
    score_buffer_bytes: int = 128 * 1024 * 1024
    batch_size: int = 256
    socket_timeout_s: float = 5.0
    max_backoff_s: float = 5.0
    alert_journal_dir: str = ""  # empty: alerts are held in memory only
    alert_journal_fsync_s: float = 1.0
    alert_journal_segment_bytes: int = 8 * 1024 * 1024

    @property
    def alerts_stream(self) -> str:
        """Stream of state changes and summaries."""
        return f"{self.key_prefix}:alerts"

    @property
    def scores_stream(self) -> str:
        """Stream of every window score."""
        return f"{self.key_prefix}:scores"

    @property
    def channel(self) -> str:
        """Pub/sub channel of all events."""
        return f"{self.key_prefix}:events"

    def call_key(self, call_id: str) -> str:
        """Hash with the latest state of a call."""
        return f"{self.key_prefix}:call:{call_id}"


def _cause(exc: BaseException) -> str:
    """Short class of a Redis failure for logs: connection, timeout, oom, auth or error."""
    text = str(exc)
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout"
    # redis-py strips the error prefix (OOM, NOPERM...) and raises a subclass instead
    if isinstance(exc, AuthenticationError | AuthorizationError | NoPermissionError) or \
            text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return "auth"
    if isinstance(exc, OutOfMemoryError) or text.startswith("OOM"):
        return "oom"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    return "error"


class RedisPublisher:
    """Background writer of events to Redis with bounded buffering and retries.

    ``worker``/``workers``: this process's ingest worker index and the configured count; the
    alert journal of worker ``i`` is ``<alert_journal_dir>/w<i>``, and worker 0 also replays
    the journals of indices at or above ``workers`` (left by a larger pool).
    """

    def __init__(self, cfg: RedisConfig, metrics: ServiceMetrics | None = None, *,
                 worker: int = 0, workers: int = 1):
        self.cfg = cfg
        self.metrics = metrics or ServiceMetrics()
        self.keeper = (JournalKeeper(cfg.alert_journal_dir, self.metrics, worker=worker,
                                     workers=workers,
                                     segment_bytes=cfg.alert_journal_segment_bytes,
                                     fsync_interval_s=cfg.alert_journal_fsync_s)
                       if cfg.alert_journal_dir else None)
        self.client = create_redis_client(cfg.url, socket_timeout=cfg.socket_timeout_s)
        self._alerts = EventBuffer("alert", cfg.alert_buffer, cfg.alert_buffer_bytes)
        self._scores = EventBuffer("score", cfg.score_buffer, cfg.score_buffer_bytes)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = False
        self.published = 0
        self.errors = 0
        self.partial_writes = 0
        self._outage_since: float | None = None
        self._outage_logged = 0.0
        self._outage_errors = 0
        self._outage_cause = ""
        self._drop_logged = 0.0
        self._drops_unlogged = 0

    @property
    def dropped(self) -> dict[str, int]:
        """Events dropped because their buffer was full, by kind."""
        return {"alert": self._alerts.dropped, "score": self._scores.dropped}

    @property
    def buffered(self) -> int:
        """Events waiting to be written."""
        return len(self._alerts) + len(self._scores)

    @property
    def buffered_bytes(self) -> int:
        """Approximate memory held by the waiting events."""
        return self._alerts.bytes + self._scores.bytes

    async def start(self) -> None:
        """Replay the alert journal (if any), then start the writer task.

        Raises :class:`~nes2net_stream.errors.ConfigError` naming ``redis.alert_journal_dir``
        when the journal directory cannot be used.
        """
        if self._task is not None:
            return
        if self.keeper is not None:
            await self.keeper.start(self._enqueue)
        self._task = asyncio.create_task(self._run(), name="redis-publisher")

    async def ping(self) -> bool:
        """True when Redis answers a PING (used by /readyz)."""
        try:
            await self.client.ping()
        except (RedisError, OSError):
            return False
        return True

    def publish(self, event: OutputEvent, *, received: float | None = None) -> None:
        """Queue one event; never blocks.

        The oldest event of the same kind is dropped (counted, logged) when its buffer is full.
        """
        ev = event.to_dict()
        item = PendingEvent.of(ev, json.dumps(ev, separators=(",", ":")),
                               is_alert=event.is_alert, received=received)
        if item.is_alert and self.keeper is not None:
            self.keeper.record(item, ev)
        self._enqueue(item)

    @property
    def journaling(self) -> bool:
        """True when alerts (and open channels) go to the alert journal."""
        return self.keeper is not None

    def channel_opened(self, event: OutputEvent) -> None:
        """A scored channel started: with the alert journal, remember it (nothing is sent)."""
        if self.keeper is not None:
            self.keeper.opened(event.to_dict())

    def _enqueue(self, item: PendingEvent) -> None:
        buf = self._alerts if item.is_alert else self._scores
        while buf.full(item.size):
            self._drop(buf, buf.popleft())
        buf.append(item)
        self._gauges()
        self._wakeup.set()

    def _ack(self, items: list[PendingEvent]) -> None:
        if self.keeper is not None:
            self.keeper.ack(items)

    def _drop(self, buf: EventBuffer, lost: PendingEvent) -> None:
        self._ack([lost])
        buf.dropped += 1
        self.metrics.events_dropped.labels(type=buf.kind).inc()
        now = time.monotonic()
        if buf.kind == "alert":
            log.error("redis buffer full, dropping oldest event", kind=buf.kind,
                      lost_event_id=lost.event_id, lost_call_id=lost.call_id,
                      buffered=len(buf), buffered_bytes=buf.bytes)
            return
        self._drops_unlogged += 1
        if now - self._drop_logged >= DROP_LOG_INTERVAL_S:
            log.error("redis buffer full, dropping oldest events", kind=buf.kind,
                      dropped_since_last_log=self._drops_unlogged, dropped_total=buf.dropped,
                      lost_event_id=lost.event_id, buffered=len(buf),
                      buffered_bytes=buf.bytes)
            self._drop_logged = now
            self._drops_unlogged = 0

    def _gauges(self) -> None:
        self.metrics.redis_buffered.set(self.buffered)
        self.metrics.redis_buffered_bytes.set(self.buffered_bytes)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Flush what is buffered (for up to ``grace_s``), then close."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                journaled = sum(i.seq is not None for i in self._alerts.items)
                log.error("redis flush timed out; events lost", buffered=self.buffered,
                          alerts=len(self._alerts) - journaled, scores=len(self._scores),
                          alerts_kept_in_journal=journaled, grace_s=grace_s)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self.keeper is not None:
            await self.keeper.close()
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._alerts and not self._scores:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # alerts first: they matter most and their buffer is the one that must not overflow
            buf = self._alerts if self._alerts else self._scores
            batch = [buf.items[i] for i in range(min(self.cfg.batch_size, len(buf)))]
            try:
                written, error = await self._write(batch)
            except (RedisError, OSError) as exc:
                written, error = 0, exc
            done = [buf.popleft() for _ in range(written)]
            if done:
                self._gauges()
                self._ack(done)
            if error is None:
                self._resumed()
                backoff = 0.05
                continue
            self._failed(error, written)
            if self._closing and backoff >= self.cfg.max_backoff_s:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.cfg.max_backoff_s)

    def _failed(self, exc: BaseException, written: int) -> None:
        self.errors += 1
        self._outage_errors += 1
        self.metrics.redis_errors.inc()
        now = time.monotonic()
        cause = _cause(exc)
        if self._outage_since is None:
            self._outage_since = self._outage_logged = now
            self._outage_cause = cause
            log.warning("redis write failed; buffering and retrying", cause=cause,
                        error=str(exc)[:200], buffered=self.buffered, written_of_batch=written)
        elif now - self._outage_logged >= OUTAGE_LOG_INTERVAL_S or cause != self._outage_cause:
            # also at once when the cause changes (a dropped connection, then a rotated password)
            self._outage_logged = now
            self._outage_cause = cause
            log.warning("redis still failing", cause=cause, error=str(exc)[:200],
                        outage_s=round(now - self._outage_since, 1),
                        failed_writes=self._outage_errors, buffered=self.buffered,
                        buffered_bytes=self.buffered_bytes, dropped=self.dropped)
        self.connected = False

    def _resumed(self) -> None:
        if self._outage_since is not None:
            log.info("redis writes resumed",
                     outage_s=round(time.monotonic() - self._outage_since, 2),
                     failed_writes=self._outage_errors, buffered=self.buffered,
                     dropped=self.dropped)
            self._outage_since = None
            self._outage_errors = 0
        self.connected = True

    async def _write(self, batch: list[PendingEvent]) -> tuple[int, BaseException | None]:
        """Write a batch: (leading events whose ``XADD`` was applied, the first error).

        A failure of the whole pipeline (connection lost, timeout) raises. When only some
        commands failed (e.g. ``OOM`` once Redis reached ``maxmemory``), the events before the
        first failed ``XADD`` count as written and that ``XADD``'s error is returned.
        """
        cfg = self.cfg
        pipe = self.client.pipeline(transaction=False)
        for item in batch:
            fields = {"event": item.doc, "type": item.type, "call_id": item.call_id,
                      "event_id": item.event_id}
            stream, maxlen = ((cfg.alerts_stream, cfg.alerts_maxlen) if item.is_alert
                              else (cfg.scores_stream, cfg.scores_maxlen))
            pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
            pipe.publish(cfg.channel, item.doc)
            key = cfg.call_key(item.call_id)
            pipe.hset(key, mapping=item.call_fields)  # type: ignore[arg-type]
            pipe.expire(key, cfg.call_ttl_s)
        results = await pipe.execute(raise_on_error=False)
        written, error = 0, None
        for i in range(len(batch)):
            if isinstance(results[4 * i], Exception):
                error = results[4 * i]
                break
            written += 1
        if written < len(batch) and written:
            self.partial_writes += 1
        now = time.monotonic()
        for item in batch[:written]:
            stream = "alerts" if item.is_alert else "scores"
            self.metrics.events_published.labels(stream=stream).inc()
            if item.is_alert:
                self.metrics.alerts_published.inc()
            if item.received is not None:
                self.metrics.window_latency.observe(now - item.received)
        self.published += written
        return written, error
