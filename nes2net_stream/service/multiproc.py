"""Several ingest worker processes feeding one device-owning scorer process.

One Python process tops out at a few thousand WebSocket packets per second (decoding,
resampling and VAD run in its event loop), far below what one GPU can score. With
``[server] workers = N > 1`` the parent process owns the model and the scoring engine, and N
worker processes each run the complete ingest side (WebSocket and TCP listeners sharing the
port through ``SO_REUSEPORT``, sessions, alert policy, Redis publishing). Workers send windows to
the scorer over a pipe (a request id and the raw float32 samples) and get the scores back; the
events they publish are the same as in single-process mode.

Faults: the scorer restarts a worker that dies (the calls of the other workers go on; those of
the dead one lose their summaries with it). A scoring-worker restart inside the scorer reaches
every worker with the next score (their calls are marked degraded). When the scorer process
itself dies, every worker notices the closed pipe, ends its calls with summaries and exits,
so an orchestrator restarts the whole service.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import shutil
import signal
import struct
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from prometheus_client.multiprocess import mark_process_dead

from nes2net_stream.logs import configure_logging, get_logger
from nes2net_stream.service.engine import (
    EngineRestarted,
    EngineStopped,
    ScoringEngine,
    WindowDropped,
    WindowResult,
)
from nes2net_stream.service.metrics import MULTIPROC_ENV
from nes2net_stream.settings import Settings

log = get_logger("nes2net.multiproc")
# request id, stream end (-1: none), stream key (16 bytes, zeros: none)
_HEADER = struct.Struct("<Qq16s")
_FORGET = 2**64 - 1  # request id of "this stream ended" messages (no samples, no reply)
_ERRORS = {"dropped": WindowDropped, "stopped": EngineStopped, "restarted": EngineRestarted}


class ScorerHub:
    """Scorer side: serves window requests of worker processes with the shared engine."""

    def __init__(self, engine: ScoringEngine):
        self.engine = engine
        self._threads: list[threading.Thread] = []

    def attach(self, conn: Connection, name: str) -> None:
        """Serve one worker's connection in a reader thread."""
        lock = threading.Lock()

        def reply(req: int, result: WindowResult | None, error: BaseException | None) -> None:
            if result is not None:
                msg: tuple = (req, (result.raw, result.llr, result.spoof_probability,
                                    result.bona_fide_logit, result.queue_delay_s,
                                    result.inference_s, result.batch_size), None)
            else:
                kind = next((k for k, cls in _ERRORS.items() if isinstance(error, cls)),
                            repr(error))
                msg = (req, None, kind)
            with lock, contextlib.suppress(OSError, EOFError, BrokenPipeError):
                conn.send((msg, self.engine.expected_wait_s, self.engine.restarts))

        def serve() -> None:
            while True:
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    return
                req, end, raw_key = _HEADER.unpack_from(data)
                key = raw_key.hex() if any(raw_key) else None
                if req == _FORGET:
                    if key is not None:
                        self.engine.forget(key)
                    continue
                samples = np.frombuffer(data, dtype=np.float32, offset=_HEADER.size).copy()
                self.engine.submit_callback(samples, lambda r, e, q=req: reply(q, r, e),
                                            key=key, end=None if end < 0 else end)

        t = threading.Thread(target=serve, name=f"scorer-{name}", daemon=True)
        t.start()
        self._threads.append(t)


class RemoteEngine:
    """Worker side: the :class:`ScoringEngine` interface over a pipe to the scorer process."""

    def __init__(self, conn: Connection, model_id: str, device: str, max_stride: int,
                 latency_target_s: float):
        self.conn = conn
        self._model_id = model_id
        self.device = device
        self.max_stride = max_stride
        self.latency_target_s = latency_target_s
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[WindowResult],
                                       asyncio.AbstractEventLoop]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wait_s = 0.0
        self._alive = False
        self._reader: threading.Thread | None = None
        self.windows_dropped = 0
        self.restarts = 0  # the scorer's engine restarts, as last reported
        self.on_lost: Any = None  # called (from the reader thread) when the scorer is gone

    @property
    def model_id(self) -> str:
        """Id of the model served by the scorer."""
        return self._model_id

    @property
    def queue_depth(self) -> int:
        """Windows of this worker waiting for their score."""
        return len(self._pending)

    @property
    def expected_wait_s(self) -> float:
        """The scorer's latest estimate of its queueing delay."""
        return self._wait_s

    @property
    def running(self) -> bool:
        """True while the connection to the scorer is up."""
        return self._alive

    def stride(self) -> int:
        """Hop multiplier under load (see :meth:`ScoringEngine.stride`)."""
        if self._wait_s <= self.latency_target_s:
            return 1
        return min(self.max_stride, 1 + int(self._wait_s / self.latency_target_s))

    def warmup(self) -> None:
        """The scorer warms up its own device."""

    def start(self) -> None:
        """Start receiving scores."""
        self._alive = True
        self._reader = threading.Thread(target=self._receive, name="remote-engine", daemon=True)
        self._reader.start()

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Wait (up to ``timeout``) for in-flight windows, then stop."""
        deadline = time.monotonic() + timeout
        while drain and self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
        self._alive = False

    def forget(self, key: str) -> None:
        """Tell the scorer that the stream ``key`` ended (its cached features can go)."""
        if not self._alive:
            return
        with contextlib.suppress(OSError, BrokenPipeError, ValueError), self._send_lock:
            self.conn.send_bytes(_HEADER.pack(_FORGET, -1, bytes.fromhex(key)))

    def submit(self, samples: np.ndarray, *, key: str | None = None,
               end: int | None = None) -> asyncio.Future[WindowResult]:
        """Send one window to the scorer; the future resolves when its score comes back."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WindowResult] = loop.create_future()
        if not self._alive:
            fut.set_exception(EngineStopped("scorer connection is closed"))
            return fut
        req = next(self._ids)
        with self._lock:
            self._pending[req] = (fut, loop)
        raw_key = bytes.fromhex(key) if key is not None else bytes(16)
        payload = (_HEADER.pack(req, -1 if end is None else end, raw_key)
                   + np.ascontiguousarray(samples, np.float32).tobytes())
        try:
            with self._send_lock:
                self.conn.send_bytes(payload)
        except (OSError, BrokenPipeError) as exc:
            with self._lock:
                self._pending.pop(req, None)
            fut.set_exception(EngineStopped(f"scorer connection lost: {exc}"))
        return fut

    def _receive(self) -> None:
        while True:
            try:
                (req, values, error), wait_s, restarts = self.conn.recv()
            except (EOFError, OSError):
                break
            self._wait_s = wait_s
            self.restarts = restarts
            with self._lock:
                entry = self._pending.pop(req, None)
            if entry is None:
                continue
            fut, loop = entry
            if values is not None:
                outcome: Any = WindowResult(*values)
                err = None
            else:
                outcome = None
                err = _ERRORS.get(error, RuntimeError)(error)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, fut, outcome, err)
        self._alive = False
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut, loop in pending.values():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, fut, None,
                                          EngineStopped("scorer connection lost"))
        if self.on_lost is not None:
            self.on_lost()


def _settle(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


def worker_main(settings_data: dict[str, Any], conn: Connection, index: int, model_id: str,
                device: str, spoof_prior: float) -> None:
    """Entry point of one ingest worker process."""
    from nes2net_stream.service.server import Service, build_context

    settings = Settings.model_validate(settings_data)
    configure_logging(settings.logging.level, settings.logging.format)
    engine = RemoteEngine(conn, model_id, device, settings.engine.max_hop_factor,
                          settings.engine.latency_target_ms / 1000.0)
    ctx = build_context(settings, engine=engine, spoof_prior=spoof_prior)
    service = Service(settings, ctx, reuse_port=True, worker_index=index)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def lost() -> None:
            if not ctx.draining:
                log.error("scorer process lost; ending this worker's calls and exiting",
                          worker=index, active_calls=len(ctx.calls))
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(service.request_stop)

        engine.on_lost = lost
        refresher = asyncio.create_task(_refresh_gauges(ctx, engine))
        try:
            await service.run_forever()
        finally:
            refresher.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


async def _refresh_gauges(ctx: Any, engine: RemoteEngine, period_s: float = 2.0) -> None:
    """Keep this worker's gauges current.

    A scrape is answered by any one worker and sums (for readiness: takes the minimum of) the
    values every worker last wrote.
    """
    m = ctx.metrics
    while True:
        m.queue_depth.set(engine.queue_depth)
        m.event_loop_tasks.set(len(asyncio.all_tasks()))
        ok = engine.running and not ctx.draining and await ctx.publisher.ping()
        m.ready.set(1 if ok else 0)
        await asyncio.sleep(period_s)


class WorkerPool:
    """Starts, watches (restarting crashed workers) and stops the ingest workers."""

    def __init__(self, settings: Settings, hub: ScorerHub, engine: ScoringEngine, n: int):
        self.settings = settings
        self.hub = hub
        self.engine = engine
        self.n = n
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = [None] * n
        self.restarts = 0
        self.stopping = False
        # prometheus_client multi-process mode for the workers (see metrics.py); the scorer
        # imported prometheus_client before this is set, so its own metrics stay in memory
        self.metrics_dir = tempfile.mkdtemp(prefix="nes2net-metrics-")
        os.environ[MULTIPROC_ENV] = self.metrics_dir

    def _spawn(self, i: int) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        prior = self.engine.detector.calibration.spoof_prior
        proc = self.ctx.Process(
            target=worker_main, name=f"nes2net-ingest-{i}", daemon=False,
            args=(self.settings.model_dump(), child, i, self.engine.model_id,
                  str(self.engine.device), prior))
        proc.start()
        child.close()
        self.hub.attach(parent, f"worker-{i}")
        self.procs[i] = proc
        log.info("ingest worker started", worker=i, pid=proc.pid)

    def start(self) -> None:
        """Start all workers."""
        for i in range(self.n):
            self._spawn(i)

    async def watch(self, stop: asyncio.Event) -> None:
        """Restart workers that die unexpectedly, until ``stop`` is set."""
        while not stop.is_set():
            for i, proc in enumerate(self.procs):
                if proc is not None and not proc.is_alive() and not self.stopping:
                    self.restarts += 1
                    mark_process_dead(proc.pid, self.metrics_dir)  # its live gauges go
                    log.error("ingest worker died; restarting", worker=i,
                              exitcode=proc.exitcode, restarts=self.restarts)
                    self._spawn(i)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def stop(self, timeout: float) -> None:
        """SIGTERM every worker (each drains its calls) and wait for them."""
        self.stopping = True
        for proc in self.procs:
            if proc is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc is not None:
                proc.join(max(0.1, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.kill()
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
