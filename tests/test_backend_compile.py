"""The compiled back-end (``[engine] compile_backend``): same scores as eager, falls back."""

import numpy as np
import pytest
import torch
from helpers import tiny_hf_config

from nes2net_stream.models.config import BackendConfig, SSLConfig
from nes2net_stream.models.detector import Detector
from nes2net_stream.service.capture import eager_capture
from nes2net_stream.service.engine import ScoringEngine
from nes2net_stream.service.runner import BatchRunner


@pytest.fixture(scope="module")
def det():
    torch.manual_seed(0)
    cfg = BackendConfig(variant="nes2net_x", input_dim=32, outer_ratio=4, inner_ratio=3,
                        se_ratio=2, dilation=2)
    return Detector(SSLConfig(family="wav2vec2", aggregation="last",
                              hf_config=tiny_hf_config("wav2vec2")), cfg).eval()


def runner(det, **kw):
    return BatchRunner(det, window_samples=16000, max_batch_size=8, use_buckets=True,
                       cuda_graphs=True, graph_max_batch=2, graph_capture=eager_capture,
                       feature_cache=True, **kw)


@pytest.mark.timeout(600)
def test_compiled_back_end_scores_like_eager_on_every_path(det):
    """torch.compile (inductor, on the CPU here) in back-end graphs and the feature cache's
    path for buckets from ``compile_min_batch`` (each compiled for its shape), the eager
    back-end in whole-model graphs and smaller buckets."""
    compiled = runner(det, compile_backend=True, compile_min_batch=4)
    reference = BatchRunner(det, window_samples=16000, max_batch_size=8, use_buckets=False)
    assert compiled.backend_compiled
    rng = np.random.default_rng(0)
    streams = (0.1 * rng.standard_normal((8, 2 * 16000))).astype(np.float32)
    keys = [f"{i + 1:032x}" for i in range(8)]
    for n, end in ((2, 16000), (5, 16000), (8, 16000 + 320 * 25), (5, 16000 + 320 * 50)):
        batch = streams[:n, end - 16000:end]
        got = compiled.run(batch, keys[:n], [end] * n)
        assert torch.allclose(got, reference.run(batch), atol=1e-5), (n, end)
    assert compiled.backend_compiled  # no fall-back happened
    assert compiled.cache is not None and compiled.cache.hits > 0
    assert any(g is not None for g in compiled._backend_graphs.values())


def test_only_buckets_from_the_minimum_run_compiled_each_for_its_shape(det):
    shapes = []

    def spy_compiler(module):
        def run(x):
            shapes.append(tuple(x.shape))
            return module(x)
        return run

    r = runner(det, compile_backend=True, compile_min_batch=4, compiler=spy_compiler)
    assert r.compile_min_batch == 4
    x = (0.1 * np.random.default_rng(2).standard_normal((8, 16000))).astype(np.float32)
    for n in (1, 3, 4, 6, 8):
        r.run(x[:n])
    assert {s[0] for s in shapes} == {4, 8}  # buckets 4 and 8; 1-2 whole graphs, none below 4
    # without buckets (the CPU default) every batch size runs compiled, one dynamic version
    plain = BatchRunner(det, window_samples=16000, max_batch_size=8, compile_backend=True,
                        compiler=spy_compiler)
    assert not plain.use_buckets and plain.compile_min_batch == 1
    shapes.clear()
    plain.run(x[:3])
    assert [s[0] for s in shapes] == [3]


def test_the_default_compiler_is_static_with_buckets(det, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append(kw) or m)
    runner(det, compile_backend=True)
    BatchRunner(det, window_samples=16000, max_batch_size=8, compile_backend=True)
    assert calls == [{"dynamic": False}, {"dynamic": None}]


def test_a_back_end_that_fails_to_compile_runs_eagerly(det):
    calls = []

    def broken_compiler(module):
        def run(x):
            calls.append(x.shape)
            raise RuntimeError("no C compiler found")
        return run

    r = runner(det, compile_backend=True, compile_min_batch=4, compiler=broken_compiler)
    reference = BatchRunner(det, window_samples=16000, max_batch_size=8, use_buckets=False)
    x = (0.1 * np.random.default_rng(1).standard_normal((5, 16000))).astype(np.float32)
    assert torch.allclose(r.run(x), reference.run(x), atol=1e-5)
    assert torch.allclose(r.run(x[:1]), reference.run(x[:1]), atol=1e-5)  # whole-model graph
    assert len(calls) == 1 and not r.backend_compiled  # tried once, then eager for good


def test_engine_passes_the_setting_to_its_runner(det):
    assert ScoringEngine(det, window_samples=16000, compile_backend=True).runner.backend_compiled
    assert not ScoringEngine(det, window_samples=16000).runner.backend_compiled
