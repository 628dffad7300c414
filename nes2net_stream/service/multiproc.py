"""Several ingest worker processes feeding one device-owning scorer process.

One Python process tops out at a few thousand WebSocket packets per second (decoding,
resampling and VAD run in its event loop), far below what one GPU can score. With
``[server] workers = N > 1`` the parent process owns the model and the scoring engine, and N
worker processes each run the complete ingest side (WebSocket and TCP listeners sharing the
port through ``SO_REUSEPORT``, sessions, alert policy, Redis publishing). Workers send windows to
the scorer through the window channel (:mod:`nes2net_stream.service.ipc`: batched records over a
socket pair, samples in shared-memory slots) and get the scores back in batches; the events
they publish are the same as in single-process mode.

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
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from prometheus_client.multiprocess import mark_process_dead

from nes2net_stream.errors import ConfigError
from nes2net_stream.logs import configure_logging, get_logger
from nes2net_stream.service import event_loop, ipc
from nes2net_stream.service.engine import (
    EngineRestarted,
    EngineStopped,
    ScoringEngine,
    WindowDropped,
    WindowResult,
    _resolve,
)
from nes2net_stream.service.metrics import MULTIPROC_ENV
from nes2net_stream.service.tempdirs import owned_tempdir, release
from nes2net_stream.settings import Settings

log = get_logger("nes2net.multiproc")
_ERRORS = {"dropped": WindowDropped, "stopped": EngineStopped, "restarted": EngineRestarted}
EX_CONFIG = 78  # sysexits.h: a worker's exit code for a configuration it refused
MAX_INLINE_BYTES = 64 * 1024 * 1024  # inline window samples queued per worker, at most


class ScorerHub:
    """Scorer side: serves window requests of worker processes with the shared engine."""

    def __init__(self, engine: ScoringEngine):
        self.engine = engine
        self._threads: list[threading.Thread] = []

    def attach(self, conn: Connection, name: str) -> None:
        """Serve one worker's connection: a reader thread and a reply-sender thread."""
        outbox = ipc.Outbox()

        def reply(req: int, result: WindowResult | None, error: BaseException | None) -> None:
            # runs in the engine thread: queue only, the sender thread does the system call
            if result is not None:
                outbox.put((req, (result.raw, result.llr, result.spoof_probability,
                                  result.bona_fide_logit, result.queue_delay_s,
                                  result.inference_s, result.batch_size), None))
            else:
                kind = next((k for k, cls in _ERRORS.items() if isinstance(error, cls)),
                            repr(error))
                outbox.put((req, None, kind))

        def send() -> None:
            while (batch := outbox.take()) is not None:
                try:
                    conn.send((batch, self.engine.expected_wait_s, self.engine.restarts))
                except (OSError, EOFError, ValueError):  # the worker is gone
                    return

        def serve() -> None:
            arenas: list[ipc.SlotArena] = []
            try:
                while True:
                    try:
                        data = conn.recv_bytes()
                    except (EOFError, OSError):
                        return
                    for rec in ipc.parse(data):
                        self._handle(conn, rec, arenas, reply)
            except Exception as exc:  # a malformed message: drop this worker, it is restarted
                log.error("bad message from an ingest worker; closing its connection",
                          worker=name, error=repr(exc))
                conn.close()
            finally:
                outbox.close()

        for target, role in ((serve, "scorer"), (send, "replies")):
            t = threading.Thread(target=target, name=f"{role}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float) -> bool:
        """Wait for every reader and sender thread to end; True when all did."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _handle(self, conn: Connection, rec: ipc.Record, arenas: list[ipc.SlotArena],
                reply: Any) -> None:
        """Act on one worker record: submit a window, forget a stream, or map a new arena."""
        if rec.kind == ipc.WINDOW:
            if rec.samples is not None:
                samples = rec.samples
            elif (arenas and 0 <= rec.slot < len(arenas) * arenas[0].slots
                  and rec.n <= arenas[0].slot_samples):
                chunk = arenas[0].slots
                samples = arenas[rec.slot // chunk].view(rec.slot % chunk, rec.n)
            else:
                reply(rec.req, None, RuntimeError("bad window slot"))
                return
            self.engine.submit_callback(samples, lambda r, e, q=rec.req: reply(q, r, e),
                                        key=rec.key, end=rec.end)
        elif rec.kind == ipc.FORGET and rec.key is not None:
            self.engine.forget(rec.key)
        elif rec.kind == ipc.HELLO:
            fd = ipc.recv_fd(conn)
            try:
                slots, samples_per_slot = rec.slot, rec.end or 0
                if slots <= 0 or samples_per_slot <= 0 or (arenas and (
                        slots, samples_per_slot) != (arenas[0].slots, arenas[0].slot_samples)):
                    raise ValueError(f"bad slot arena {slots} x {samples_per_slot}")
                arenas.append(ipc.SlotArena(slots, samples_per_slot, fd=fd))
            finally:
                os.close(fd)  # the mapping keeps the memory
        else:
            raise ValueError(f"unknown record kind {rec.kind}")


class RemoteEngine:
    """Worker side: the :class:`ScoringEngine` interface over a pipe to the scorer process.

    ``submit`` never blocks the event loop on the pipe: it writes the samples into a shared
    memory slot (or queues them inline) and a sender thread sends what accumulated.
    """

    def __init__(self, conn: Connection, model_id: str, device: str, max_stride: int,
                 latency_target_s: float, *, window_samples: int = 64_000, slots: int = 512):
        self.conn = conn
        self._model_id = model_id
        self.device = device
        self.max_stride = max_stride
        self.latency_target_s = latency_target_s
        self._ids = itertools.count(1)
        # request id -> (future, its loop, shared-memory slot or -1)
        self._pending: dict[int, tuple[asyncio.Future[WindowResult],
                                       asyncio.AbstractEventLoop, int]] = {}
        self._lock = threading.Lock()
        self._outbox = ipc.Outbox()
        self._wait_s = 0.0
        self._alive = False
        self._reader: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self.window_samples = window_samples
        self.pool = (ipc.SlotPool(slots, window_samples)
                     if slots and ipc.memfd_available() else None)
        self._submit_lock = threading.Lock()
        self.windows_dropped = 0
        self.restarts = 0  # the scorer's engine restarts, as last reported
        self.on_lost: Any = None  # called (from the reader thread) when the scorer is gone
        self.metrics: Any = None  # the worker's ServiceMetrics, once built
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
        """Start the sender and receiver threads."""
        self._alive = True
        self._reader = threading.Thread(target=self._receive, name="remote-engine", daemon=True)
        self._sender = threading.Thread(target=self._send, name="remote-engine-send",
                                        daemon=True)
        self._reader.start()
        self._sender.start()

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Wait (up to ``timeout``) for in-flight windows, then stop."""
        deadline = time.monotonic() + timeout
        while drain and self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
        self._alive = False
        self._outbox.close()

    def forget(self, key: str) -> None:
        """Tell the scorer that the stream ``key`` ended (its cached features can go)."""
        if self._alive:
            rec = ipc.pack_forget(key)
            self._outbox.put(rec, len(rec))

    def submit(self, samples: np.ndarray, *, key: str | None = None,
               end: int | None = None) -> asyncio.Future[WindowResult]:
        """Queue one window for the scorer; the future resolves when its score comes back."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WindowResult] = loop.create_future()
        if not self._alive:
            fut.set_exception(EngineStopped("scorer connection is closed"))
            return fut
        if self._outbox.queued_bytes > MAX_INLINE_BYTES:
            self.windows_dropped += 1  # the scorer is not reading: shed, do not queue more
            if self.metrics is not None:
                self.metrics.windows_dropped.labels(reason="ingest_channel_full").inc()
            fut.set_exception(WindowDropped("ingest-to-scorer channel full"))
            return fut
        req = next(self._ids)
        with self._submit_lock:  # a new arena must be queued before the records using it
            try:
                message, slot, arena = ipc.pack_window(req, key, end, samples, self.pool)
            except OSError as exc:  # no more shared memory: send samples inline from now on
                log.warning("shared-memory window slots unavailable; sending samples inline",
                            error=str(exc))
                self.pool = None
                message, slot, arena = ipc.pack_window(req, key, end, samples, None)
            with self._lock:
                self._pending[req] = (fut, loop, slot)
            if slot < 0 and self.metrics is not None:
                self.metrics.channel_inline.inc()
            if arena is not None:
                self._outbox.put(arena)
            self._outbox.put(message, len(message))
        return fut

    def _send(self) -> None:
        """Sender thread: everything queued since the last send goes out as one message."""
        while (batch := self._outbox.take(ipc.MAX_MESSAGE_BYTES)) is not None:
            try:
                records: list[bytes] = []
                for item in batch:
                    if isinstance(item, ipc.SlotArena):  # announce it, then pass its fd
                        if records:
                            self.conn.send_bytes(b"".join(records))
                            records = []
                        self.conn.send_bytes(ipc.pack_hello(item))
                        ipc.send_fd(self.conn, item.fd)
                    else:
                        records.append(item)
                if records:
                    self.conn.send_bytes(b"".join(records))
            except (OSError, ValueError):
                return  # the receiver sees the closed connection and fails what is pending

    def _receive(self) -> None:
        while True:
            try:
                replies, wait_s, restarts = self.conn.recv()
            except (EOFError, OSError):
                break
            self._wait_s = wait_s
            self.restarts = restarts
            settled: dict[asyncio.AbstractEventLoop, list[tuple]] = {}
            with self._lock:
                entries = [(self._pending.pop(req, None), values, error)
                           for req, values, error in replies]
            for entry, values, error in entries:
                if entry is None:
                    continue
                fut, loop, slot = entry
                if slot >= 0 and self.pool is not None:
                    self.pool.release(slot)
                if values is not None:
                    outcome: Any = (WindowResult(*values), None)
                else:
                    outcome = (None, _ERRORS.get(error, RuntimeError)(error))
                settled.setdefault(loop, []).append((fut, *outcome))
            for loop, items in settled.items():  # one wake-up of each loop per message
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle_all, items)
        self._alive = False
        self._outbox.close()
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut, loop, _ in pending.values():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, [(fut, None, EngineStopped(
                    "scorer connection lost"))])
        if self.on_lost is not None:
            self.on_lost()


def _settle_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, error in items:
        _resolve(fut, value, error)


def worker_main(settings_data: dict[str, Any], conn: Connection, index: int, model_id: str,
                device: str, spoof_prior: float) -> None:
    """Entry point of one ingest worker process."""
    from nes2net_stream.service.server import Service, build_context

    settings = Settings.model_validate(settings_data)
    configure_logging(settings.logging.level, settings.logging.format)
    engine = RemoteEngine(conn, model_id, device, settings.engine.max_hop_factor,
                          settings.engine.latency_target_ms / 1000.0,
                          window_samples=int(round(settings.windows.window_s * 16000)),
                          slots=settings.server.worker_window_slots)
    try:
        ctx = build_context(settings, engine=engine, spoof_prior=spoof_prior, worker_index=index)
        engine.metrics = ctx.metrics
        service = Service(settings, ctx, reuse_port=True, worker_index=index)
    except ConfigError as exc:  # restarting cannot help: the pool stops the service
        log.error("invalid configuration", worker=index, error=str(exc))
        sys.exit(EX_CONFIG)

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
        event_loop.run(main(), settings.server.event_loop)


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
        self.config_error: str | None = None  # set when a worker exits with EX_CONFIG
        # prometheus_client multi-process mode for the workers (see metrics.py); the scorer
        # imported prometheus_client before this is set, so its own metrics stay in memory
        self.metrics_dir = owned_tempdir("nes2net-metrics-")  # removes ones of killed scorers
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
                    if proc.exitcode == EX_CONFIG:
                        self.config_error = f"ingest worker {i} refused the configuration"
                        log.error(self.config_error + "; stopping", worker=i)
                        return
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
        # the workers are gone: their connections end, and so do the threads serving them
        if not self.hub.join(max(1.0, deadline - time.monotonic())):
            log.warning("scorer threads still running after the ingest workers stopped")
        os.environ.pop(MULTIPROC_ENV, None)
        release(self.metrics_dir)
