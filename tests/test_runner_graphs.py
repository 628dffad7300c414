"""The runner's graph paths against eager execution, on the CPU.

CUDA graphs need a GPU (``test_engine.py`` has the CUDA checks); here the same code paths run
with :func:`eager_capture`, which keeps graph semantics (a static input buffer, a static output
buffer overwritten by every replay, one capture per bucket or back-end shape) but executes
eagerly. This checks the plumbing around graphs: bucket padding, copies into and out of the
static buffers, outputs not aliased between batches, fall-back when a capture fails.
"""

import numpy as np
import pytest
import torch
from helpers import tiny_hf_config

from nes2net_stream.bundle import load_model
from nes2net_stream.models.config import BackendConfig, SSLConfig
from nes2net_stream.models.detector import Detector
from nes2net_stream.service.runner import BatchRunner, eager_capture


@pytest.fixture()
def detector(small_bundle):
    return load_model(small_bundle)


def windows(n, samples=16000, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, samples))).astype(np.float32)


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
    det = Detector(SSLConfig(family="wav2vec2", aggregation="last",
                             hf_config=tiny_hf_config("wav2vec2")),
                   BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2)).eval()
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
