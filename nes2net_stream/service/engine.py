"""The scoring engine: one worker thread owns the model and its device and batches windows.

Calls submit windows from the event loop with :meth:`ScoringEngine.submit` (never blocks) and
await the returned future. The worker takes the oldest window, waits at most
``max_delay_ms`` for more (or until ``max_batch_size`` are queued), runs one forward pass and
resolves every future of the batch. On CUDA the loop is pipelined: the next batch is staged and
queued on the device before the previous one's results are collected, so host work (staging,
kernel launches, delivering scores) overlaps device work. The queue is bounded: when it is full
the configured drop policy rejects the newest window or evicts the oldest one, and the drop is
counted.

Anything that escapes the worker's loop (a bug, a ``BaseException`` from a native extension)
kills the thread: the engine logs it, fails the windows of the batch being run with
:class:`EngineRestarted`, counts it in ``nes2net_engine_restarts_total`` and starts a new worker
(with a growing pause when crashes repeat). Calls active at that moment see
:attr:`ScoringEngine.restarts` change and mark their events ``"degraded": "engine_restart"``.
A worker stuck in one batch for longer than ``stall_timeout_s`` makes :attr:`stalled` true
(``/readyz`` then fails), since a Python thread cannot be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from nes2net_stream.logs import get_logger
from nes2net_stream.models.detector import Detector
from nes2net_stream.service.capture import Launched
from nes2net_stream.service.runner import BatchRunner

log = get_logger("nes2net.engine")

DropPolicy = Literal["drop_newest", "drop_oldest"]


class WindowDropped(Exception):
    """The engine's queue was full and this window was not scored."""


class EngineStopped(Exception):
    """The engine is stopped and accepts no more windows."""


class EngineRestarted(Exception):
    """The scoring worker crashed while this window's batch ran; a new worker was started."""


@dataclass(frozen=True)
class WindowResult:
    """Scores of one window plus how long it queued and how long its batch took."""

    raw: float
    llr: float
    spoof_probability: float
    bona_fide_logit: float
    queue_delay_s: float
    inference_s: float
    batch_size: int


Deliver = Callable[[WindowResult | None, BaseException | None], None]


@dataclass
class _Item:
    samples: np.ndarray
    deliver: Deliver
    enqueued: float
    key: str | None = None  # the stream (call channel) for the feature cache
    end: int | None = None  # the stream's samples up to this window's end


@dataclass
class _Batch:
    items: list[_Item]
    launched: Launched
    started: float


def _resolve(fut: asyncio.Future[Any], value: Any = None, error: BaseException | None = None
             ) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


def _future_deliver(fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> Deliver:
    def deliver(result: WindowResult | None, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(_resolve, fut, result, error)

    return deliver


class ScoringEngine:
    """Dynamic batching over one detector on one device."""

    def __init__(self, detector: Detector, *, max_batch_size: int = 32,
                 max_delay_ms: float = 10.0, max_queue: int = 4096,
                 drop_policy: DropPolicy = "drop_oldest", dtype: torch.dtype | None = None,
                 threads: int | None = None, metrics: Any = None,
                 window_samples: int = 64_000, cuda_graphs: bool = True,
                 cuda_graph_max_batch: int = 16, cuda_graph_backend: bool = True,
                 cast_weights: bool = False, conv_encoder: str = "gemm",
                 pos_conv: str = "fft", encoder_layers: str = "fused",
                 compile_backend: bool = False, compile_min_batch: int = 128,
                 compile_norms: bool = False, latency_target_s: float = 0.5,
                 max_stride: int = 8, stall_timeout_s: float = 120.0,
                 feature_cache: bool = True, feature_cache_entries: int = 10_000,
                 pipeline: bool | None = None, copy_stream: bool = True):
        self.detector = detector.eval()
        self.device = next(detector.parameters()).device
        self.dtype = dtype
        self.runner = BatchRunner(detector, window_samples=window_samples,
                                  max_batch_size=max_batch_size, dtype=dtype,
                                  cuda_graphs=cuda_graphs,
                                  graph_max_batch=cuda_graph_max_batch,
                                  backend_graphs=cuda_graph_backend,
                                  cast_weights=cast_weights, conv_encoder=conv_encoder,
                                  pos_conv=pos_conv, encoder_layers=encoder_layers,
                                  compile_backend=compile_backend,
                                  compile_min_batch=compile_min_batch,
                                  compile_norms=compile_norms,
                                  feature_cache=feature_cache,
                                  feature_cache_entries=feature_cache_entries,
                                  copy_stream=copy_stream)
        self.latency_target_s = latency_target_s
        self.max_stride = max_stride
        self._rate = 0.0  # EWMA of windows per second of model time
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.drop_policy = drop_policy
        self.threads = threads
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False
        self.windows_scored = 0
        self.windows_dropped = 0
        # seconds the worker spent on the host in _launch and _finish (not waiting for results)
        self.host_seconds = 0.0
        self.batches = 0
        self.restarts = 0
        self.stall_timeout_s = stall_timeout_s
        self._busy_since: float | None = None
        # pipelining (CUDA): the next batch is queued while the previous one runs
        self.pipelined = self.runner.cuda if pipeline is None else pipeline
        self._inflight: deque[_Batch] = deque()
        self._taking: list[_Item] = []  # the batch being launched or finished right now
        self._last_done = 0.0
        self._crash_times: deque[float] = deque(maxlen=5)

    @property
    def model_id(self) -> str:
        """Id of the model being served."""
        return self.detector.model_id

    @property
    def queue_depth(self) -> int:
        """Windows waiting to be scored."""
        return len(self._queue)

    @property
    def expected_wait_s(self) -> float:
        """Estimated time a window queued now waits (queue depth / measured throughput)."""
        if self._rate <= 0:
            return 0.0
        return len(self._queue) / self._rate

    def stride(self) -> int:
        """How many hops a call should skip between scored windows under the current load.

        1 while the engine keeps up; grows (up to ``max_stride``) when the expected queueing
        delay exceeds ``latency_target_s``, so every call keeps being scored at a longer hop
        instead of some calls losing all their windows.
        """
        wait = self.expected_wait_s
        if wait <= self.latency_target_s:
            return 1
        return min(self.max_stride, 1 + int(wait / self.latency_target_s))

    def warmup(self) -> None:
        """Run (and on CUDA capture) every batch bucket once before serving."""
        self.runner.warmup()

    @property
    def running(self) -> bool:
        """True while the worker thread is alive (or being restarted after a crash)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stalled(self) -> bool:
        """True when one batch has been running for more than ``stall_timeout_s``."""
        since = self._busy_since
        return since is not None and time.monotonic() - since > self.stall_timeout_s

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self.running:
            return
        self._running = True
        self._spawn()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._worker, name="nes2net-engine", daemon=True)
        self._thread.start()

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the worker; with ``drain`` the queued windows are scored first."""
        with self._cond:
            if not drain:
                while self._queue:
                    self._queue.popleft().deliver(None, EngineStopped("engine stopped"))
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("scoring worker still busy after stop", timeout_s=timeout,
                            queued_windows=len(self._queue))

    def submit(self, samples: np.ndarray, *, key: str | None = None,
               end: int | None = None) -> asyncio.Future[WindowResult]:
        """Queue one window (float32, the model's window length); never blocks.

        ``key`` names the window's stream and ``end`` counts the stream's samples up to the
        window's end; give both only for windows that are contiguous slices of their stream,
        so the feature cache can reuse the previous window's frames.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WindowResult] = loop.create_future()
        self.submit_callback(samples, _future_deliver(fut, loop), key=key, end=end)
        return fut

    def forget(self, key: str) -> None:
        """The stream ``key`` ended: drop its cached features."""
        if self.runner.cache is not None:
            self.runner.cache.forget(key)

    @property
    def feature_cache_stats(self) -> dict[str, int]:
        """Hits, misses and entries of the convolutional feature cache (zeros when off)."""
        cache = self.runner.cache
        if cache is None:
            return {"hits": 0, "misses": 0, "entries": 0}
        return {"hits": cache.hits, "misses": cache.misses, "entries": len(cache)}

    def submit_callback(self, samples: np.ndarray, deliver: Deliver, *, key: str | None = None,
                        end: int | None = None) -> None:
        """Queue one window from any thread.

        ``deliver(result, error)`` runs in the engine thread (or at once when refused).
        """
        if not self._running:
            deliver(None, EngineStopped("engine is not running"))
            return
        item = _Item(samples, deliver, time.monotonic(), key, end)
        evicted: _Item | None = None
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self.windows_dropped += 1
                if self.metrics is not None:
                    self.metrics.windows_dropped.labels(reason="queue_full").inc()
                if self.drop_policy == "drop_newest":
                    deliver(None, WindowDropped("scoring queue full"))
                    return
                evicted = self._queue.popleft()
            self._queue.append(item)
            self._cond.notify()
        if evicted is not None:
            evicted.deliver(None, WindowDropped("scoring queue full (evicted)"))

    def _take_batch(self, running: Launched | None = None) -> list[_Item]:
        """The next batch (or none once ``running``, a batch on the device, is done).

        Waits for a first window, then up to ``max_delay_ms`` for the batch to fill (less if
        ``running`` finishes first: the device should not idle while a batch fills).
        """
        with self._cond:
            while self._running and not self._queue:
                if running is not None and running.ready():
                    return []
                self._cond.wait(0.5 if running is None else 0.001)
            if not self._queue:
                return []
            deadline = self._queue[0].enqueued + self.max_delay_s
            while (len(self._queue) < self.max_batch_size and self._running
                   and (remaining := deadline - time.monotonic()) > 0):
                if running is not None:  # stop filling once the device has gone idle
                    if running.ready():
                        break
                    remaining = min(remaining, 0.001)
                self._cond.wait(remaining)
            n = min(self.max_batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _worker(self) -> None:
        """Take, launch and finish batches (the worker thread's loop).

        Pipelined, the next batch is staged and queued on the device while the previous one
        still runs (at most two in flight).
        """
        if self.threads:
            torch.set_num_threads(self.threads)
        self._inflight.clear()
        try:
            while True:
                batch = self._take_batch(self._inflight[0].launched if self._inflight
                                         else None)
                launched = self._launch(batch) if batch else None
                if launched is not None:
                    self._inflight.append(launched)
                # pipelined: finish the previous batch while this one is queued behind it
                keep = 1 if self.pipelined and launched is not None else 0
                while len(self._inflight) > keep:
                    self._finish(self._inflight[0])
                    self._inflight.popleft()
                if not batch and not self._inflight and not self._running:
                    return
        except BaseException as exc:  # anything escaping the loop: restart, never go silent
            self._busy_since = None
            failed = list(self._taking) + [it for b in self._inflight for it in b.items
                                           if b.items is not self._taking]
            self._inflight.clear()
            self._on_crash(exc, failed)

    def _on_crash(self, exc: BaseException, batch: list[_Item]) -> None:
        self.restarts += 1
        now = time.monotonic()
        self._crash_times.append(now)
        recent = sum(1 for t in self._crash_times if now - t < 10.0)
        pause = 0.0 if recent <= 1 else min(5.0, 0.1 * 2 ** (recent - 2))
        log.error("scoring worker crashed; restarting it", error=repr(exc),
                  restarts=self.restarts, failed_windows=len(batch),
                  queued_windows=len(self._queue), pause_s=pause, exc_info=exc)
        if self.metrics is not None:
            self.metrics.engine_restarts.inc()
            self.metrics.windows_dropped.labels(reason="engine_restart").inc(len(batch))
        for it in batch:
            with contextlib.suppress(Exception):
                it.deliver(None, EngineRestarted(f"scoring worker crashed: {exc!r}"))
        if pause:
            time.sleep(pause)
        if self._running:
            self._spawn()

    def _launch(self, batch: list[_Item]) -> _Batch | None:
        """Queue one batch on the device (its windows fail at once if that raises)."""
        started = time.monotonic()
        if self._busy_since is None:
            self._busy_since = started
        self._taking = batch
        cache = self.runner.cache
        hits, misses = (cache.hits, cache.misses) if cache is not None else (0, 0)
        try:
            launched = self.runner.launch([it.samples for it in batch],
                                          [it.key for it in batch], [it.end for it in batch])
        except Exception as exc:  # a failed batch fails its windows, not the engine
            self._taking = []
            self._busy_since = self._inflight[0].started if self._inflight else None
            for it in batch:
                it.deliver(None, exc)
            return None
        self._taking = []
        if cache is not None and self.metrics is not None:
            self.metrics.feature_cache_windows.labels(result="hit").inc(cache.hits - hits)
            self.metrics.feature_cache_windows.labels(result="miss").inc(cache.misses - misses)
        self._host_time(time.monotonic() - started)
        return _Batch(batch, launched, started)

    def _host_time(self, seconds: float) -> None:
        self.host_seconds += seconds
        if self.metrics is not None:
            self.metrics.engine_host_seconds.inc(seconds)

    def _next_busy(self, finished: _Batch) -> float | None:
        """Launch time of the oldest batch still on the device after ``finished``."""
        return next((b.started for b in self._inflight if b is not finished), None)

    def _finish(self, b: _Batch) -> None:
        """Wait for a launched batch and deliver its scores."""
        batch = self._taking = b.items  # until delivered: a crash fails what is left
        try:
            logits = b.launched.result()
            scores = self.detector.scores_from_logits(logits)
        except Exception as exc:  # a failed batch fails its windows, not the engine
            self._busy_since = self._next_busy(b)
            for it in batch:
                it.deliver(None, exc)
            self._taking = []
            return
        self._busy_since = self._next_busy(b)
        done = time.monotonic()  # the host work of this batch starts once its results are in
        elapsed = done - b.started
        # device time of this batch alone: pipelined, it started when the previous one ended
        busy = done - max(b.started, self._last_done)
        self._last_done = done
        rate = len(batch) / max(busy, 1e-6)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        self.batches += 1
        self.windows_scored += len(batch)
        if self.metrics is not None:
            self.metrics.observe_batch(len(batch), elapsed)
        for i, it in enumerate(batch):
            result = WindowResult(
                raw=float(scores.raw[i]), llr=float(scores.llr[i]),
                spoof_probability=float(scores.spoof_probability[i]),
                bona_fide_logit=float(scores.bona_fide_logit[i]),
                queue_delay_s=b.started - it.enqueued, inference_s=elapsed,
                batch_size=len(batch))
            if self.metrics is not None:
                self.metrics.queue_delay.observe(result.queue_delay_s)
            it.deliver(result, None)
        self._taking = []
        self._host_time(time.monotonic() - done)
