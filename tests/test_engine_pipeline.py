"""The pipelined engine loop (on by default on CUDA): the next batch is queued on the device
while the previous one runs. Forced on here so the CPU exercises the same loop."""

import asyncio
import threading

import numpy as np
import pytest
import torch

from nes2net_stream.bundle import load_model
from nes2net_stream.service.capture import Launched
from nes2net_stream.service.engine import EngineRestarted, ScoringEngine


class Crash(BaseException):
    """Escapes ``except Exception``, like a fault in a native extension."""


@pytest.fixture()
def detector(small_bundle):
    return load_model(small_bundle)


def windows(n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, 16000))).astype(np.float32)


class Deferred:
    """Wraps a Launched result: blocks in result() until released (a batch still running)."""

    def __init__(self, launched: Launched, gate: threading.Event, fail: bool = False):
        self.inner, self.gate, self.fail = launched, gate, fail
        self.n = launched.n

    def ready(self) -> bool:
        return self.gate.is_set()

    def result(self) -> torch.Tensor:
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("device error reported at synchronisation")
        return self.inner.result()


async def test_next_batch_is_launched_before_the_previous_one_finishes(detector):
    engine = ScoringEngine(detector, max_batch_size=2, max_delay_ms=1, window_samples=16000,
                           pipeline=True)
    gate = threading.Event()
    original = engine.runner.launch
    order: list[str] = []

    def launch(rows, *args, **kwargs):
        order.append(f"launch{len(order)}")
        return Deferred(original(rows, *args, **kwargs), gate)

    engine.runner.launch = launch
    engine.start()
    try:
        futs = [engine.submit(w) for w in windows(2)]
        await asyncio.sleep(0.2)  # batch 1 is in flight, its result() blocked
        futs += [engine.submit(w) for w in windows(2, seed=1)]
        for _ in range(100):
            if len(order) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(order) == 2 and not any(f.done() for f in futs)  # two batches pending
        assert engine._busy_since is not None
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*futs), 10)
    finally:
        gate.set()
        engine.stop()
    assert len(results) == 4 and all(r.batch_size == 2 for r in results)


async def test_a_batch_failing_at_synchronisation_fails_only_its_windows(detector):
    engine = ScoringEngine(detector, max_batch_size=2, max_delay_ms=1, window_samples=16000,
                           pipeline=True)
    original = engine.runner.launch
    calls = []

    def launch(rows, *args, **kwargs):
        calls.append(1)
        gate = threading.Event()
        gate.set()
        return Deferred(original(rows, *args, **kwargs), gate, fail=len(calls) == 1)

    engine.runner.launch = launch
    engine.start()
    try:
        first = [engine.submit(w) for w in windows(2)]
        bad = await asyncio.gather(*first, return_exceptions=True)
        good = await asyncio.gather(*[engine.submit(w) for w in windows(2, seed=2)])
    finally:
        engine.stop()
    assert all(isinstance(r, RuntimeError) for r in bad)
    assert len(good) == 2 and engine.restarts == 0


async def test_crash_with_two_batches_in_flight_fails_both_and_restarts(detector):
    engine = ScoringEngine(detector, max_batch_size=2, max_delay_ms=1, window_samples=16000,
                           pipeline=True)
    original = engine.runner.launch
    gate = threading.Event()
    launched = []

    class Crashing(Deferred):
        def result(self):
            self.gate.wait(10)
            raise Crash("the worker thread dies while batch 2 is queued behind batch 1")

    def launch(rows, *args, **kwargs):
        launched.append(len(rows))
        kind = Crashing if len(launched) == 1 else Deferred
        return kind(original(rows, *args, **kwargs), gate)

    engine.runner.launch = launch
    engine.start()
    try:
        pending = [engine.submit(w) for w in windows(2)]
        await asyncio.sleep(0.2)  # batch 1 on the device, blocked
        pending += [engine.submit(w) for w in windows(2, seed=1)]
        for _ in range(100):
            if len(launched) == 2:
                break
            await asyncio.sleep(0.02)
        assert launched == [2, 2]  # batch 2 queued behind batch 1
        gate.set()
        done = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
        after = await asyncio.wait_for(engine.submit(windows(1, seed=3)[0]), 10)
    finally:
        gate.set()
        engine.stop()
    # both batches' windows fail (none is lost), and the restarted worker scores again
    assert all(isinstance(r, EngineRestarted) for r in done), done
    assert engine.restarts == 1 and after.batch_size == 1 and not engine._inflight
