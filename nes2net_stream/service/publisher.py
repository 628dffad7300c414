"""Publishing events to Redis without ever stalling call ingest.

Events are queued in memory (bounded) and written by one background task in pipelined batches:

* ``XADD nes2net:alerts MAXLEN ~ N`` for state changes and call summaries,
* ``XADD nes2net:scores MAXLEN ~ N`` for every window score,
* ``PUBLISH nes2net:events`` for live dashboards (best effort),
* ``HSET nes2net:call:{call_id}`` with the latest state, refreshed with a TTL.

When Redis is down, slow or out of memory, the batch stays at the head of its queue and is
retried with exponential backoff, so order is kept and nothing is lost while the buffer has
room. The alert and score buffers are bounded separately; when one is full its oldest event is
dropped, counted and logged. Delivery is at least once: a write that timed out may have
succeeded, so consumers de-duplicate on ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from nes2net_stream.logs import get_logger
from nes2net_stream.service.events import OutputEvent
from nes2net_stream.service.metrics import ServiceMetrics
from nes2net_stream.service.redis_client import create_redis_client

log = get_logger("nes2net.redis")


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
    batch_size: int = 256
    socket_timeout_s: float = 5.0
    max_backoff_s: float = 5.0

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


@dataclass
class _Pending:
    event: dict[str, Any]
    is_alert: bool
    received: float | None  # monotonic time the window's last sample arrived


class RedisPublisher:
    """Background writer of events to Redis with bounded buffering and retries."""

    def __init__(self, cfg: RedisConfig, metrics: ServiceMetrics | None = None):
        self.cfg = cfg
        self.metrics = metrics or ServiceMetrics()
        self.client = create_redis_client(cfg.url, socket_timeout=cfg.socket_timeout_s)
        self._alerts: deque[_Pending] = deque()
        self._scores: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = False
        self.published = 0
        self.dropped = {"alert": 0, "score": 0}
        self.errors = 0

    @property
    def buffered(self) -> int:
        """Events waiting to be written."""
        return len(self._alerts) + len(self._scores)

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
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
        item = _Pending(event.to_dict(), event.is_alert, received)
        queue, cap, kind = ((self._alerts, self.cfg.alert_buffer, "alert") if item.is_alert
                            else (self._scores, self.cfg.score_buffer, "score"))
        if len(queue) >= cap:
            lost = queue.popleft()
            self.dropped[kind] += 1
            self.metrics.events_dropped.labels(type=kind).inc()
            log.error("redis buffer full, dropping oldest event", kind=kind,
                      lost_event_id=lost.event["event_id"], lost_call_id=lost.event["call_id"],
                      buffered=len(queue))
        queue.append(item)
        self.metrics.redis_buffered.set(self.buffered)
        self._wakeup.set()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Flush what is buffered (for up to ``grace_s``), then close."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                log.error("redis flush timed out; events lost", buffered=self.buffered)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
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
            queue = self._alerts if self._alerts else self._scores
            batch = [queue[i] for i in range(min(self.cfg.batch_size, len(queue)))]
            try:
                await self._write(batch)
            except (RedisError, OSError) as exc:
                self.errors += 1
                self.metrics.redis_errors.inc()
                if self.connected or self.errors == 1:
                    log.warning("redis write failed; buffering and retrying", error=str(exc),
                                buffered=self.buffered)
                self.connected = False
                if self._closing and backoff >= self.cfg.max_backoff_s:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.max_backoff_s)
                continue
            if not self.connected and self.errors:
                log.info("redis writes resumed", buffered=self.buffered, errors=self.errors)
            self.connected = True
            backoff = 0.05
            for _ in batch:
                queue.popleft()
            self.metrics.redis_buffered.set(self.buffered)

    async def _write(self, batch: list[_Pending]) -> None:
        cfg = self.cfg
        pipe = self.client.pipeline(transaction=False)
        for item in batch:
            ev = item.event
            doc = json.dumps(ev, separators=(",", ":"))
            fields = {"event": doc, "type": ev["type"], "call_id": ev["call_id"],
                      "event_id": ev["event_id"]}
            stream, maxlen = ((cfg.alerts_stream, cfg.alerts_maxlen) if item.is_alert
                              else (cfg.scores_stream, cfg.scores_maxlen))
            pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
            pipe.publish(cfg.channel, doc)
            key = cfg.call_key(ev["call_id"])
            pipe.hset(key, mapping=_call_fields(ev, doc))
            pipe.expire(key, cfg.call_ttl_s)
        results = await pipe.execute(raise_on_error=True)
        now = time.monotonic()
        for item in batch:
            stream = "alerts" if item.is_alert else "scores"
            self.metrics.events_published.labels(stream=stream).inc()
            if item.is_alert:
                self.metrics.alerts_published.inc()
            if item.received is not None:
                self.metrics.window_latency.observe(now - item.received)
        self.published += len(batch)
        del results


def _call_fields(ev: dict[str, Any], doc: str) -> dict[str, str]:
    fields = {"call_id": ev["call_id"], "updated": ev["ts"], "model_id": ev["model_id"],
              "gateway": ev["source"]["gateway"], f"last_{ev['type']}": doc}
    if ev.get("state"):
        fields["state"] = ev["state"]
    score = ev.get("running") or {}
    if "spoof_probability" in score:
        fields["running_spoof_probability"] = str(score["spoof_probability"])
    if ev["type"] == "summary":
        fields["ended"] = "1"
    return fields
