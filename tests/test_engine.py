import asyncio

import numpy as np
import pytest
import torch
from helpers import tiny_ssl_detector

from nes2net_stream.bundle import load_model
from nes2net_stream.service.capture import eager_capture
from nes2net_stream.service.engine import EngineStopped, ScoringEngine, WindowDropped
from nes2net_stream.service.runner import BatchRunner, buckets_up_to


@pytest.fixture()
def detector(small_bundle):
    return load_model(small_bundle)


def windows(n, samples=16000, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, samples))).astype(np.float32)


def test_buckets():
    assert buckets_up_to(32) == [1, 2, 4, 8, 16, 32]
    assert buckets_up_to(48) == [1, 2, 4, 8, 16, 32, 48]


def test_padding_to_buckets_does_not_change_scores(detector):
    runner = BatchRunner(detector, window_samples=16000, max_batch_size=16, use_buckets=True)
    x = windows(5)
    padded = runner.run(x)            # runs as a bucket of 8 with 3 silent rows
    assert runner.bucket(5) == 8
    with torch.inference_mode():
        plain = detector(torch.from_numpy(x))
    assert torch.allclose(padded, plain, atol=1e-5)
    one = runner.run(x[:1])
    assert torch.allclose(one, plain[:1], atol=1e-5)


@pytest.mark.parametrize("pipeline", [False, True])  # pipelined: the CUDA loop, forced on
async def test_engine_batches_and_matches_direct_scoring(detector, pipeline):
    engine = ScoringEngine(detector, max_batch_size=8, max_delay_ms=50, window_samples=16000,
                           pipeline=pipeline)
    assert engine.pipelined is pipeline
    engine.start()
    try:
        x = windows(12)
        results = await asyncio.gather(*[engine.submit(w) for w in x])
    finally:
        engine.stop()
    direct = detector.score(torch.from_numpy(x))
    got = torch.tensor([r.spoof_probability for r in results])
    assert torch.allclose(got, direct.spoof_probability, atol=1e-5)
    assert max(r.batch_size for r in results) > 1  # windows were batched together
    assert engine.windows_scored == 12
    assert not engine._inflight and engine._busy_since is None


async def test_full_queue_drops_oldest_and_counts(detector):
    engine = ScoringEngine(detector, max_batch_size=100, max_delay_ms=2000, max_queue=3,
                           window_samples=16000)
    engine.start()
    try:
        futs = [engine.submit(w) for w in windows(5)]
        results = await asyncio.gather(*futs, return_exceptions=True)
    finally:
        engine.stop()
    dropped = [r for r in results if isinstance(r, WindowDropped)]
    assert len(dropped) == 2 and engine.windows_dropped == 2
    assert isinstance(results[0], WindowDropped) and not isinstance(results[-1], Exception)


async def test_drop_newest_policy_and_stopped_engine(detector):
    engine = ScoringEngine(detector, max_batch_size=100, max_delay_ms=2000, max_queue=2,
                           drop_policy="drop_newest", window_samples=16000)
    engine.start()
    try:
        futs = [engine.submit(w) for w in windows(3)]
        results = await asyncio.gather(*futs, return_exceptions=True)
    finally:
        engine.stop()
    assert isinstance(results[2], WindowDropped) and not isinstance(results[0], Exception)
    with pytest.raises(EngineStopped):
        await engine.submit(windows(1)[0])


def test_stride_grows_with_expected_wait(detector):
    engine = ScoringEngine(detector, max_batch_size=8, latency_target_s=0.5, max_stride=6,
                           window_samples=16000)
    assert engine.stride() == 1
    engine._rate = 100.0  # windows per second
    engine._queue.extend([object()] * 40)   # 0.4 s of work queued: keeps up
    assert engine.stride() == 1
    engine._queue.extend([object()] * 110)  # 1.5 s queued
    assert engine.stride() == 4
    engine._queue.extend([object()] * 1000)
    assert engine.stride() == 6             # bounded


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_buckets_match_eager_on_gpu(detector):
    det = detector.to("cuda")
    graphs = BatchRunner(det, window_samples=16000, max_batch_size=8, dtype=torch.bfloat16)
    eager = BatchRunner(det, window_samples=16000, max_batch_size=8, dtype=torch.bfloat16,
                        use_buckets=False, cuda_graphs=False)
    x = windows(5)
    a, b = graphs.run(x), eager.run(x)
    assert graphs.bucket(5) in graphs._graphs          # replayed from a captured graph
    assert torch.allclose(a, b, atol=2e-2)               # bf16 tolerance
    with torch.inference_mode():
        fp32 = det(torch.from_numpy(x).cuda()).float().cpu()
    assert torch.allclose(a, fp32, atol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_backend_graph_of_large_buckets_matches_eager_on_gpu(detector):
    det = detector.to("cuda")
    graphs = BatchRunner(det, window_samples=16000, max_batch_size=32, dtype=torch.bfloat16,
                         graph_max_batch=4)
    eager = BatchRunner(det, window_samples=16000, max_batch_size=32, dtype=torch.bfloat16,
                        cuda_graphs=False, backend_graphs=False)
    x = windows(20)
    a = graphs.run(x)
    assert len([g for g in graphs._backend_graphs.values() if g is not None]) == 1
    again = graphs.run(list(windows(20, seed=1)))  # replayed: results of the new inputs
    assert torch.allclose(a, eager.run(x), atol=2e-2)
    assert torch.allclose(again, eager.run(windows(20, seed=1)), atol=2e-2)


def test_rows_given_as_a_list_match_an_array(detector):
    runner = BatchRunner(detector, window_samples=16000, max_batch_size=8, use_buckets=True)
    x = windows(3)
    assert torch.equal(runner.run(list(x)), runner.run(x))
    short = [w[:8000] for w in x]  # windows of another length run unbucketed
    with torch.inference_mode():
        want = detector(torch.from_numpy(np.stack(short)))
    assert torch.allclose(runner.run(short), want, atol=1e-5)


def test_weights_cast_to_bfloat16_score_close_to_float32(small_bundle):
    """``[model] dtype_mode = "weights"``: the whole model in bf16 (on any device)."""
    fp32 = load_model(small_bundle)
    runner = BatchRunner(load_model(small_bundle), window_samples=16000, max_batch_size=8,
                         dtype=torch.bfloat16, cast_weights=True, use_buckets=True)
    assert next(runner.detector.parameters()).dtype == torch.bfloat16
    x = windows(3)
    got = runner.run(x)
    with torch.inference_mode():
        want = fp32(torch.from_numpy(x))
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.allclose(got, want, atol=0.15), (got - want).abs().max()
    # without cast_weights a CPU runner ignores the dtype (autocast is CUDA only)
    plain = BatchRunner(load_model(small_bundle), window_samples=16000, max_batch_size=8,
                        dtype=torch.bfloat16)
    assert next(plain.detector.parameters()).dtype == torch.float32
    assert torch.allclose(plain.run(x), want, atol=1e-5)


def test_staging_buffers_do_not_grow_with_distinct_batch_sizes(detector):
    runner = BatchRunner(detector, window_samples=16000, max_batch_size=8, use_buckets=False)
    for n in range(1, 9):
        runner.run(windows(n, seed=n))
    # one input and one output buffer per parity, each of the largest batch, sliced per run
    assert len(runner._pinned) <= 4
    assert all(buf.numel() == 8 * 16000 for buf in runner._pinned.values())  # (CPU: windows)

# Graph paths on the CPU: CUDA graphs need a GPU (the CUDA tests above); here the same code paths
# run with eager_capture, which keeps graph semantics (a static input buffer, a static output
# overwritten by every replay, one capture per bucket or back-end shape) but executes eagerly.
# This checks the plumbing: bucket padding, copies into and out of the static buffers, outputs
# not aliased between batches, fall-back when a capture fails.


def graph_runner(det, **kw):
    return BatchRunner(det, window_samples=16000, max_batch_size=16, use_buckets=True,
                       cuda_graphs=True, graph_max_batch=4, graph_capture=eager_capture, **kw)


def test_graph_replay_equals_eager_for_every_batch_size(detector):
    eager = BatchRunner(detector, window_samples=16000, max_batch_size=16, use_buckets=False)
    runner = graph_runner(detector)
    x = windows(16)
    reference = eager.run(x)
    for n in range(1, 17):
        assert torch.allclose(runner.run(x[:n]), reference[:n], atol=1e-5), n
    assert sorted(runner._graphs) == [1, 2, 4]  # whole-model graphs up to graph_max_batch
    # larger buckets (8, 16) ran the front-end eagerly and the back-end from a graph
    assert len([g for g in runner._backend_graphs.values() if g is not None]) == 2


def test_results_are_not_overwritten_by_the_next_replay(detector):
    runner = graph_runner(detector)
    a, b = windows(3, seed=1), windows(3, seed=2)
    first = runner.launch(a)
    second = runner.launch(b)  # same bucket: replays into the same static output
    eager = BatchRunner(detector, window_samples=16000, max_batch_size=16, use_buckets=False)
    assert torch.allclose(first.result(), eager.run(a), atol=1e-5)
    assert torch.allclose(second.result(), eager.run(b), atol=1e-5)
    assert not torch.allclose(first.result(), second.result())


def test_a_failed_capture_falls_back_to_eager(detector):
    def broken(fn, static_in):
        raise RuntimeError("operation not permitted when stream is capturing")

    runner = graph_runner(detector)
    runner.capture = broken
    x = windows(5)
    eager = BatchRunner(detector, window_samples=16000, max_batch_size=16, use_buckets=False)
    assert torch.allclose(runner.run(x[:3]), eager.run(x[:3]), atol=1e-5)  # bucket 4
    assert torch.allclose(runner.run(x), eager.run(x), atol=1e-5)  # bucket 8, back-end
    assert 4 in runner._graph_failed and runner._graphs == {}
    assert all(g is None for g in runner._backend_graphs.values())


def test_cached_ssl_batches_use_back_end_graphs_and_stay_exact():
    """Large buckets with the feature cache: cached conv frames, graph-replayed back-end."""
    torch.manual_seed(0)
    det = tiny_ssl_detector()
    runner = graph_runner(det, feature_cache=True)
    reference = BatchRunner(det, window_samples=16000, max_batch_size=16, use_buckets=False)
    rng = np.random.default_rng(3)
    streams = (0.1 * rng.standard_normal((6, 3 * 16000))).astype(np.float32)
    keys = [f"{i + 1:032x}" for i in range(6)]
    for end in (16000, 16000 + 320 * 20, 16000 + 320 * 40):
        batch = streams[:, end - 16000:end]
        got = runner.run(batch, keys, [end] * 6)  # 6 rows: bucket 8, above graph_max_batch
        assert torch.allclose(got, reference.run(batch), atol=1e-4), end
    assert runner.cache is not None and runner.cache.hits == 12
    assert any(g is not None for g in runner._backend_graphs.values())


@pytest.mark.parametrize("pad", [False, True])
def test_front_end_runs_on_real_rows_unless_it_needs_bucket_shapes(monkeypatch, pad):
    """Without cuDNN in the front-end only the back-end sees the padded bucket; with it
    (``pad_frontend``) the whole bucket runs. Scores are the same either way."""
    torch.manual_seed(0)
    det = tiny_ssl_detector()
    monkeypatch.setattr(BatchRunner, "pad_frontend", property(lambda self: pad))
    runner = graph_runner(det, feature_cache=True)
    reference = BatchRunner(det, window_samples=16000, max_batch_size=16, use_buckets=False)
    seen = []
    det.frontend.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[0]))
    seen_tail = []
    det.frontend.model.encoder.register_forward_hook(
        lambda _m, args, _o: seen_tail.append(args[0].shape[0]))
    rng = np.random.default_rng(5)
    streams = (0.1 * rng.standard_normal((6, 2 * 16000))).astype(np.float32)
    keys = [f"{i + 1:032x}" for i in range(6)]
    first = runner.run(streams[:, :16000])  # no keys: the eager path, bucket 8
    assert seen == [8 if pad else 6]
    runner.run(streams[:, :16000], keys, [16000] * 6)  # fills the cache
    end = 16000 + 320 * 20
    seen_tail.clear()
    cached = runner.run(streams[:, end - 16000:end], keys, [end] * 6)  # the cache's path
    assert seen_tail == [8 if pad else 6]  # the transformer of the cached path
    assert torch.allclose(first, reference.run(streams[:, :16000]), atol=1e-5)
    assert torch.allclose(cached, reference.run(streams[:, end - 16000:end]), atol=1e-5)
