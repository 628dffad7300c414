"""The ingest-worker-to-scorer window channel: records, shared-memory slots, batching."""

import asyncio
import multiprocessing
import threading
import time

import numpy as np
import pytest

from nes2net_stream.service import ipc
from nes2net_stream.service.engine import WindowDropped, WindowResult
from nes2net_stream.service.metrics import ServiceMetrics
from nes2net_stream.service.multiproc import RemoteEngine, ScorerHub

pytestmark = pytest.mark.skipif(not ipc.memfd_available(), reason="needs memfd (Linux)")


class RecordingEngine:
    """Scores each window with its first sample, from its own thread, like the engine."""

    expected_wait_s = 0.25
    restarts = 0

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, int | None, float]] = []
        self.lock = threading.Lock()

    def submit_callback(self, samples, deliver, *, key=None, end=None):
        first, total = float(samples[0]), float(np.sum(samples))
        with self.lock:
            self.seen.append(("window", key, end, total))

        def later():
            deliver(WindowResult(first, first, 0.5, -first, 0.0, 0.001, 1), None)

        threading.Thread(target=later).start()

    def forget(self, key):
        with self.lock:
            self.seen.append(("forget", key, None, 0.0))


def window(i: int, n: int = 16_000) -> np.ndarray:
    x = np.full(n, 0.001, dtype=np.float32)
    x[0] = i
    return x


def test_records_round_trip_inline_and_in_slots():
    pool = ipc.SlotPool(limit=4, slot_samples=100, chunk=2)
    a, slot_a, arena = ipc.pack_window(7, "ab" * 16, 12_345, np.arange(100, dtype=np.float32),
                                       pool)
    assert slot_a == 0 and arena is pool.arenas[0]
    b, slot_b, _ = ipc.pack_window(8, None, None, np.ones(150, np.float32), pool)  # too long
    assert slot_b == -1
    recs = list(ipc.parse(a + b + ipc.pack_forget("cd" * 16)))
    assert [r.kind for r in recs] == [ipc.WINDOW, ipc.WINDOW, ipc.FORGET]
    assert (recs[0].req, recs[0].key, recs[0].end, recs[0].slot) == (7, "ab" * 16, 12_345, 0)
    assert np.array_equal(pool.view(0, 100), np.arange(100, dtype=np.float32))
    assert recs[1].key is None and recs[1].end is None and recs[1].samples.sum() == 150
    assert recs[2].key == "cd" * 16


def test_slot_pool_grows_by_arenas_up_to_its_limit_and_reuses_slots():
    pool = ipc.SlotPool(limit=5, slot_samples=10, chunk=2)
    got = [pool.acquire() for _ in range(4)]
    assert [s for s, _ in got] == [0, 1, 2, 3]
    assert [a is not None for _, a in got] == [True, False, True, False]
    assert pool.acquire() is None  # a third arena of 2 would pass the limit of 5
    pool.release(2)
    assert pool.acquire() == (2, None)


def test_outbox_batches_up_to_a_size():
    box = ipc.Outbox()
    for i in range(5):
        box.put(i, 10)
    assert box.take(max_bytes=25) == [0, 1]
    assert box.queued_bytes == 30
    assert box.take() == [2, 3, 4]
    box.close()
    assert box.take() is None


async def _run_channel(engine: RemoteEngine, count: int) -> list:
    futs = [engine.submit(window(i), key=f"{i % 3 + 1:032x}", end=16_000 + i) for i in range(count)]
    engine.forget(f"{1:032x}")
    return await asyncio.wait_for(asyncio.gather(*futs), 30)


@pytest.mark.parametrize("slots", [300, 0])
def test_windows_reach_the_scorer_and_scores_come_back(slots):
    """300 windows: three arenas of shared slots (or all inline), forget after them."""
    parent, child = multiprocessing.Pipe()
    scorer = RecordingEngine()
    ScorerHub(scorer).attach(parent, "w0")  # type: ignore[arg-type]
    remote = RemoteEngine(child, "m", "cpu", 8, 0.5, window_samples=16_000, slots=slots)
    remote.start()
    results = asyncio.run(_run_channel(remote, 300))
    assert [r.raw for r in results] == [float(i) for i in range(300)]
    assert remote.expected_wait_s == 0.25
    for _ in range(100):  # the forget record may still be on its way
        if len(scorer.seen) == 301:
            break
        time.sleep(0.05)
    kinds = [k for k, *_ in scorer.seen]
    assert kinds.count("window") == 300 and kinds[-1] == "forget"  # in the order sent
    assert all(abs(total - (i + 0.001 * 15_999)) < 1e-2
               for i, (_, _, _, total) in enumerate(scorer.seen[:300]))
    if slots:
        assert remote.pool is not None and len(remote.pool.arenas) >= 1
        assert remote.pool.free == remote.pool.allocated  # every slot came back
    assert remote.queue_depth == 0
    remote.stop(drain=False)
    child.close()


def test_submit_never_blocks_when_the_scorer_stops_reading():
    """Slots, then inline samples up to the cap; beyond it windows are shed, not waited on."""
    parent, child = multiprocessing.Pipe()  # nobody reads `parent`
    remote = RemoteEngine(child, "m", "cpu", 8, 0.5, window_samples=16_000, slots=64)
    remote.metrics = metrics = ServiceMetrics()
    remote.start()

    async def flood():
        futs = [remote.submit(window(i)) for i in range(1_400)]
        await asyncio.sleep(0.2)
        return futs

    futs = asyncio.run(flood())
    shed = [f for f in futs if f.done() and isinstance(f.exception(), WindowDropped)]
    assert shed and remote.windows_dropped == len(shed)
    value = metrics.registry.get_sample_value
    assert value("nes2net_windows_dropped_total", {"reason": "ingest_channel_full"}) == len(shed)
    inline = value("nes2net_ingest_channel_inline_windows_total")
    assert inline == 1_400 - 64 - len(shed)  # the first 64 took the slots
    assert remote.queue_depth == 1_400 - len(shed)
    parent.close()  # the scorer "dies": the rest fail with EngineStopped, none hang
    remote._reader.join(5)
    assert not remote.running and remote.queue_depth == 0


@pytest.mark.parametrize("message", [b"short", ipc.RECORD.pack(9, 1, -1, bytes(16), -1, 0),
                                     ipc.RECORD.pack(ipc.WINDOW, 1, -1, bytes(16), -1, 10_000)])
def test_a_malformed_message_closes_that_workers_connection(message):
    """Truncated record, unknown kind, inline samples past the end: the worker is dropped
    (and restarted by the pool), the scorer goes on."""
    parent, child = multiprocessing.Pipe()
    scorer = RecordingEngine()
    ScorerHub(scorer).attach(parent, "w0")  # type: ignore[arg-type]
    child.send_bytes(message)
    assert child.poll(5)
    with pytest.raises(EOFError):
        child.recv()
    assert scorer.seen == []


def test_a_window_naming_a_slot_that_was_never_shared_fails_alone():
    parent, child = multiprocessing.Pipe()
    scorer = RecordingEngine()
    ScorerHub(scorer).attach(parent, "w0")  # type: ignore[arg-type]
    child.send_bytes(ipc.RECORD.pack(ipc.WINDOW, 5, -1, bytes(16), 3, 100))
    assert child.poll(5)
    replies, _, _ = child.recv()
    assert replies == [(5, None, "RuntimeError('bad window slot')")]
