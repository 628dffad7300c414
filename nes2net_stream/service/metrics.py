"""Prometheus metrics of the service (base units, no per-call labels).

With ``[server] workers > 1`` the ingest processes share one listening port, so a scrape of
``/metrics`` reaches whichever worker the kernel picks. The scorer then gives every worker the
same ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multi-process mode: each process keeps
its values in files there) and every worker answers with the sum over all of them: counters and
histograms add up, gauges of calls, queues and buffers are summed over the live workers, and
``nes2net_ready`` is the minimum. ``process_*`` metrics are then left out (they would describe
only the worker that answered); the scorer's own metrics are on ``scorer_metrics_port``.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """All metrics of one service instance, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "nes2net"):
        r = self.registry = registry or CollectorRegistry()
        p = prefix
        self.active_calls = Gauge(f"{p}_active_calls", "Calls being streamed now", registry=r,
                                  multiprocess_mode="livesum")
        self.calls_started = Counter(f"{p}_calls_started_total", "Calls accepted",
                                     ["gateway"], registry=r)
        self.calls_ended = Counter(f"{p}_calls_ended_total", "Calls ended, by reason",
                                   ["reason"], registry=r)
        self.state_changes = Counter(f"{p}_state_changes_total",
                                     "Scored channels entering a state, by state and ingress",
                                     ["state", "gateway"], registry=r)
        self.calls_rejected = Counter(f"{p}_calls_rejected_total",
                                      "Connections or calls refused, by reason", ["reason"],
                                      registry=r)
        self.protocol_errors = Counter(f"{p}_protocol_errors_total",
                                       "Protocol errors sent to clients, by error code",
                                       ["code"], registry=r)
        self.audio_seconds = Counter(f"{p}_audio_seconds_total", "Seconds of call audio received",
                                     registry=r)
        self.windows_scored = Counter(f"{p}_windows_scored_total", "Windows scored", registry=r)
        self.windows_dropped = Counter(f"{p}_windows_dropped_total",
                                       "Windows not scored, by reason", ["reason"], registry=r)
        self.channel_inline = Counter(
            f"{p}_ingest_channel_inline_windows_total",
            "Windows an ingest worker sent inside its messages because all its shared-memory "
            "slots were in use (workers > 1)", registry=r)
        self.batch_size = Histogram(f"{p}_batch_size", "Windows per model forward pass",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.queue_delay = Histogram(f"{p}_queue_delay_seconds",
                                     "Time a window waited for its batch",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.inference = Histogram(f"{p}_inference_seconds", "Model time per batch",
                                   buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge(f"{p}_queue_depth", "Windows waiting for the model",
                                 registry=r, multiprocess_mode="livesum")
        self.window_latency = Histogram(
            f"{p}_window_latency_seconds",
            "From a window's last audio sample received to its event written to Redis",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.events_published = Counter(f"{p}_events_published_total",
                                        "Events written to Redis, by stream", ["stream"],
                                        registry=r)
        self.alerts_published = Counter(f"{p}_alerts_published_total",
                                        "State changes and summaries written to Redis",
                                        registry=r)
        self.events_dropped = Counter(f"{p}_events_dropped_total",
                                      "Events dropped because the Redis buffer was full",
                                      ["type"], registry=r)
        self.redis_errors = Counter(f"{p}_redis_errors_total", "Failed Redis writes",
                                    registry=r)
        self.redis_buffered = Gauge(f"{p}_redis_buffered_events",
                                    "Events waiting to be written to Redis", registry=r,
                                    multiprocess_mode="livesum")
        self.redis_buffered_bytes = Gauge(f"{p}_redis_buffered_bytes",
                                          "Approximate memory held by events waiting for Redis",
                                          registry=r, multiprocess_mode="livesum")
        self.alerts_replayed = Counter(f"{p}_alerts_replayed_total",
                                       "Alerts read back from the alert journal at start "
                                       "(written by an earlier process, not yet in Redis)",
                                       registry=r)
        self.alert_journal_errors = Counter(f"{p}_alert_journal_errors_total",
                                            "Failed writes to the alert journal (the alerts "
                                            "stay in memory only)", registry=r)
        self.engine_restarts = Counter(f"{p}_engine_restarts_total",
                                       "Scoring worker crashes (each followed by a restart)",
                                       registry=r)
        self.feature_cache_windows = Counter(
            f"{p}_feature_cache_windows_total",
            "Windows through the SSL conv encoder, by whether the previous window's frames were "
            "reused (hit) or the whole window was encoded (miss)", ["result"], registry=r)
        self.engine_host_seconds = Counter(
            f"{p}_engine_host_seconds_total",
            "Time the scoring worker spent on the host (staging and queuing batches, delivering "
            "scores), not waiting for the device: near 1 s per second, the host is the limit",
            registry=r)
        self.event_loop_tasks = Gauge(f"{p}_event_loop_tasks", "asyncio tasks alive in the "
                                      "ingest process(es)", registry=r,
                                      multiprocess_mode="livesum")
        self.ready = Gauge(f"{p}_ready", "1 when the service accepts calls", registry=r,
                           multiprocess_mode="livemin")
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV)) and registry is None
        if not self.multiprocess:
            ProcessCollector(registry=r)  # process_*: memory, CPU, open file descriptors

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one model forward pass (called from the engine thread)."""
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.windows_scored.inc(size)

    def render(self) -> bytes:
        """Prometheus text exposition (summed over all ingest processes in multi-process mode)."""
        if self.multiprocess:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
