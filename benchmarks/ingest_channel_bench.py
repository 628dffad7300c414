"""The ingest-worker-to-scorer window channel alone, with and without a GIL-busy scorer.

One ingest worker process (a real :class:`RemoteEngine` in an asyncio loop) submits 4 s windows
at a paced rate to a real :class:`ScorerHub` in this process, whose engine stand-in replies at
once: only the channel is measured. ``--busy-threads`` threads in the scorer process run Python
code that holds the GIL, as the model thread of a real scorer does (eager PyTorch dispatch).
A 5 ms ticker in the worker's event loop measures how long the loop is held up (loop lag): a
stalled loop stops reading every call's WebSocket. Prints JSON.

    python benchmarks/ingest_channel_bench.py --rates 1000,2000,4000 --busy-threads 0,1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from nes2net_stream.bench.engine import emit
from nes2net_stream.service.engine import WindowResult
from nes2net_stream.service.multiproc import RemoteEngine, ScorerHub


class InstantEngine:
    """Replies to every window at once (from the hub's reader thread)."""

    expected_wait_s = 0.0
    restarts = 0

    def submit_callback(self, samples: Any, deliver: Any, *, key: Any = None,
                        end: Any = None) -> None:
        deliver(WindowResult(0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1), None)

    def forget(self, key: str) -> None:
        """Nothing cached."""


def worker(conn: Any, rate: int, seconds: float, samples: int, out: Any) -> None:
    """Submit ``rate`` windows/s for ``seconds``; report throughput, CPU and loop lag."""

    async def main() -> dict:
        engine = RemoteEngine(conn, "bench", "cpu", 8, 0.5, window_samples=samples)
        engine.start()
        window = (0.1 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)
        lags: list[float] = []

        async def ticker() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t - 0.005)

        tick = asyncio.create_task(ticker())
        futs = []
        sent = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(rate * elapsed) + 1
            while sent < due:
                futs.append(engine.submit(window, key=f"{sent % 500 + 1:032x}",
                                          end=samples + sent))
                sent += 1
            await asyncio.sleep(0.002)
        results = await asyncio.gather(*futs, return_exceptions=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tick.cancel()
        lags.sort()
        return {"offered_per_s": rate, "windows_per_s": round(sent / wall, 1),
                "failed": sum(isinstance(r, BaseException) for r in results),
                "failures": sorted({type(r).__name__ for r in results
                                    if isinstance(r, BaseException)}),
                "worker_cpu_us_per_window": round(1e6 * cpu / max(1, sent), 1),
                "loop_lag_p50_ms": round(1000 * lags[len(lags) // 2], 2),
                "loop_lag_p99_ms": round(1000 * lags[int(0.99 * (len(lags) - 1))], 2),
                "loop_lag_max_ms": round(1000 * lags[-1], 2),
                "shared_memory_slots": engine.pool.allocated if engine.pool else 0}

    out.put(asyncio.run(main()))


def busy(stop: threading.Event, duty: float = 1.0) -> None:
    """Python work that holds the GIL for ``duty`` of the time (in 10 ms periods).

    ``duty`` 1 holds it almost all the time (a CPU model thread); below 1 the thread sleeps
    the rest of each period with the GIL released, as a GPU model thread does while it waits
    for the device (its Python time is launching kernels and delivering scores).
    """
    x = 0
    period = 0.010
    while not stop.is_set():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < duty * period:
            for i in range(200):
                x += i
        if duty < 1.0:
            time.sleep((1.0 - duty) * period)


def measure(rate: int, busy_threads: int, seconds: float, samples: int,
            duty: float = 1.0) -> dict:
    """One level: a fresh worker process and hub."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    out = ctx.Queue()
    stop = threading.Event()
    threads = [threading.Thread(target=busy, args=(stop, duty), daemon=True)
               for _ in range(busy_threads)]
    for t in threads:
        t.start()
    proc = ctx.Process(target=worker, args=(child, rate, seconds, samples, out))
    proc.start()
    ScorerHub(InstantEngine()).attach(parent, "bench")  # type: ignore[arg-type]
    try:
        result = out.get(timeout=seconds + 120)
    finally:
        stop.set()
        proc.join(10)
    return {"busy_threads": busy_threads, "busy_duty": duty if busy_threads else None,
            **result}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,2000,4000")
    ap.add_argument("--busy-threads", default="0,1")
    ap.add_argument("--busy-duty", default="1.0",
                    help="share of each 10 ms the busy threads hold the GIL (comma list)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--window-samples", type=int, default=64_000)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.smoke:
        a.rates, a.busy_threads, a.busy_duty, a.seconds = "200", "0,1", "1.0,0.3", 1.0
    rows = []
    duties = [float(d) for d in a.busy_duty.split(",")]
    for busy_threads in [int(b) for b in a.busy_threads.split(",")]:
        for duty in duties if busy_threads else duties[:1]:
            for rate in [int(r) for r in a.rates.split(",")]:
                row = measure(rate, busy_threads, a.seconds, a.window_samples, duty)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    emit({"benchmark": "ingest_channel", "smoke": a.smoke, "seconds": a.seconds,
          "window_samples": a.window_samples, "rows": rows}, a.out)


if __name__ == "__main__":
    main()
