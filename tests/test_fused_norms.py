"""Compiled norm kernels (``[engine] compile_norms``): same features as PyTorch's operations."""

import copy

import numpy as np
import pytest
import torch
from helpers import cuda_bf16_frontend, tiny_hf_config, tiny_ssl_detector

from nes2net_stream.models.config import SSLConfig
from nes2net_stream.models.fused_norms import NormKernels, exact_gelu, supports_kernels
from nes2net_stream.models.ssl_frontend import SSLFrontend
from nes2net_stream.service.capture import cuda_capture
from nes2net_stream.service.engine import ScoringEngine
from nes2net_stream.service.runner import BatchRunner


def frontend(*, stable: bool = True, seed: int = 0) -> SSLFrontend:
    torch.manual_seed(seed)
    cfg = SSLConfig(family="wav2vec2", aggregation="weighted_sum",
                    hf_config=tiny_hf_config("wav2vec2", stable_layer_norm=stable, layers=3))
    fe = SSLFrontend(cfg).eval()
    fe.conv_impl = "gemm"
    fe.layers_impl = "fused"
    return fe


def identity(fn):
    """A 'compiler' that runs the functions as written: checks the plumbing exactly."""
    return fn


def spy(calls):
    def compiler(fn):
        def run(*args):
            calls.append(fn.__name__)
            return fn(*args)
        return run
    return compiler


@pytest.mark.parametrize("stable", [True, False])
def test_kernel_functions_compute_what_the_separate_operations_do(stable):
    fe = frontend(stable=stable)
    x = 0.1 * torch.randn(2, 16000)
    calls: list[str] = []
    with torch.inference_mode():
        plain = fe(x)
        fe.use_norm_kernels(NormKernels(spy(calls)))
        got = fe(x)
    assert torch.allclose(got, plain, atol=1e-6)
    names = set(calls)
    if stable:  # pre-LN: LN alone, add + LN keeping the sum; GEMM encoder: LN + GELU
        assert names == {"_layer_norm", "_add_layer_norm", "_layer_norm_gelu"}
        # only the first layer's first norm runs alone: each later one comes with the previous
        # layer's last residual add (3 layers: 3 + 2 add + LN kernels)
        assert calls.count("_layer_norm_gelu") == 7 and calls.count("_add_layer_norm") == 5
        assert calls.count("_layer_norm") == 1
    else:  # post-LN: both norms take the add; group-norm encoder: not a layer norm
        assert names == {"_add_layer_norm_only"} and len(calls) == 6


def test_compiled_kernels_match_on_the_cpu_for_every_row_count():
    """torch.compile (inductor, C++ on the CPU here): one dynamic version for all row counts."""
    fe = frontend(seed=1)
    kernels = NormKernels()
    with torch.inference_mode():
        for n, seconds in ((2, 1.0), (3, 1.5), (1, 2.0)):
            x = 0.1 * torch.randn(n, int(16000 * seconds))
            fe.use_norm_kernels(None)
            plain = fe(x)
            fe.use_norm_kernels(kernels)
            assert torch.allclose(fe(x), plain, atol=1e-5)
    assert kernels.active and kernels.compiled_calls == 3 * (7 + 3 + 3)


def test_a_failed_compilation_is_tried_once_then_runs_eagerly():
    tried: list[str] = []

    def broken(fn):
        def run(*args):
            tried.append(fn.__name__)
            raise RuntimeError("no working C compiler")
        return run

    fe = frontend(seed=2)
    x = 0.1 * torch.randn(2, 16000)
    kernels = NormKernels(broken)
    with torch.inference_mode():
        plain = fe(x)
        fe.use_norm_kernels(kernels)
        assert torch.allclose(fe(x), plain, atol=1e-6)
        assert torch.allclose(fe(x), plain, atol=1e-6)
    assert len(tried) == 1 and not kernels.active and kernels.compiled_calls == 0


def test_kernels_reach_layers_fused_later_and_leave_with_native_layers():
    fe = frontend()
    kernels = NormKernels(identity)
    fe.layers_impl = "native"
    fe.use_norm_kernels(kernels)
    fe.layers_impl = "fused"
    assert all(m.forward.kernels is kernels for m in fe.model.encoder.layers)
    copied = copy.deepcopy(fe)  # a copy shares the (parameter-free) kernels
    assert copied.norm_kernels is kernels
    assert all(m.forward.kernels is kernels for m in copied.model.encoder.layers)
    layers, copied_layers = fe.model.encoder.layers, copied.model.encoder.layers
    # the hand-over links each layer to the next one's first norm, in the copy to its own
    assert [m.forward.next_norm for m in layers] == [layers[1].layer_norm,
                                                     layers[2].layer_norm, None]
    assert copied_layers[0].forward.next_norm is copied_layers[1].layer_norm
    assert copied_layers[0].forward.handoff is copied_layers[2].forward.handoff
    assert copied_layers[0].forward.handoff is not layers[0].forward.handoff
    fe.use_norm_kernels(None)
    assert all(m.forward.kernels is None and m.forward.next_norm is None
               and m.forward.handoff is None for m in fe.model.encoder.layers)


def test_a_hook_changing_the_hidden_states_stops_the_hand_over():
    """The next layer uses the handed-over norm only for the very tensor it was computed from."""
    fe = frontend(seed=3)
    x = 0.1 * torch.randn(2, 16000)
    calls: list[str] = []
    layer = fe.model.encoder.layers[1]

    def in_place(_m, args):  # modifies the hidden states: the hand-over is stale
        args[0].mul_(1.5)

    def replace(_m, args):  # a new tensor: not the one the norm was computed from
        return (args[0] * 1.5,)

    for hook in (in_place, replace):
        handle = layer.register_forward_pre_hook(hook)
        try:
            with torch.inference_mode():
                fe.use_norm_kernels(None)
                plain = fe(x)
                calls.clear()
                fe.use_norm_kernels(NormKernels(spy(calls)))
                got = fe(x)
        finally:
            handle.remove()
        assert torch.allclose(got, plain, atol=1e-6), hook.__name__
        assert calls.count("_layer_norm") == 2, hook.__name__  # layer 1 computed its own


def test_which_norms_and_activations_qualify():
    assert supports_kernels(torch.nn.LayerNorm(8), 8)
    assert not supports_kernels(torch.nn.LayerNorm(8), 4)
    assert not supports_kernels(torch.nn.GroupNorm(8, 8), 8)
    assert not supports_kernels(None, 8)
    assert exact_gelu(torch.nn.GELU()) and not exact_gelu(torch.nn.GELU(approximate="tanh"))
    assert not exact_gelu(torch.nn.ReLU())


def test_runner_with_compiled_norms_scores_like_without_on_the_cached_path():
    det = tiny_ssl_detector()
    plain = BatchRunner(copy.deepcopy(det), window_samples=16000, max_batch_size=4,
                        feature_cache=True)
    compiled = BatchRunner(det, window_samples=16000, max_batch_size=4, feature_cache=True,
                           compile_norms=True)
    assert compiled.norms_compiled and not plain.norms_compiled
    rng = np.random.default_rng(0)
    signal = (0.1 * rng.standard_normal((3, 16000 + 3 * 3200))).astype(np.float32)
    keys = ["a", "b", "c"]
    for k in range(4):
        end = 16000 + 3200 * k
        batch = signal[:, end - 16000:end]
        assert torch.allclose(compiled.run(batch, keys, [end] * 3),
                              plain.run(batch, keys, [end] * 3), atol=1e-4)
    assert compiled.cache is not None and compiled.cache.hits > 0
    assert compiled.norms_compiled  # no fall-back happened
    assert det.frontend.norm_kernels.compiled_calls > 0


def test_engine_passes_compile_norms_on():
    det = tiny_ssl_detector()
    assert not ScoringEngine(det, window_samples=16000).runner.norms_compiled
    assert ScoringEngine(det, window_samples=16000, compile_norms=True).runner.norms_compiled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_norms_on_cuda_in_bf16_and_in_a_graph():
    fe, x = cuda_bf16_frontend(4)
    fe.conv_impl, fe.layers_impl = "gemm", "fused"
    kernels = NormKernels()
    with torch.inference_mode():
        plain = fe(x).float()
        fe.use_norm_kernels(kernels)
        got = fe(x).float()
        scale = float(plain.abs().max())
        assert float((got - plain).abs().max()) < 0.05 * scale
        assert kernels.active and kernels.compiled_calls > 0
        replay, out = cuda_capture(fe, x.clone())  # Triton kernels inside a CUDA graph
        replay()
        torch.cuda.synchronize()
        assert torch.allclose(out.float(), got, atol=1e-2 * scale)


def test_warm_up_compiles_before_calls_arrive_without_buckets():
    """On the CPU (no buckets) the warm-up runs two batch sizes when something is compiled."""
    det = tiny_ssl_detector()
    calls: list[str] = []
    compiled_backend: list[int] = []

    def backend_compiler(module):
        def run(x):
            compiled_backend.append(x.shape[0])
            return module(x)
        return run

    runner = BatchRunner(det, window_samples=16000, max_batch_size=4, compile_norms=True,
                         compile_backend=True, compiler=backend_compiler)
    det.frontend.use_norm_kernels(NormKernels(spy(calls)))
    runner.warmup()
    assert calls and compiled_backend == [1, 2]
    plain = BatchRunner(tiny_ssl_detector(), window_samples=16000, max_batch_size=4)
    ran: list[int] = []
    plain.run = lambda windows, *rest: ran.append(len(windows))  # type: ignore[method-assign]
    plain.warmup()
    assert ran == []  # nothing compiled, no buckets: nothing to run


def test_gradients_take_the_plain_operations():
    kernels = NormKernels(identity)
    norm = torch.nn.LayerNorm(8)
    x = torch.randn(3, 8, requires_grad=True)
    out = kernels.layer_norm_gelu(x, norm)
    out.sum().backward()  # autograd through PyTorch's own operations
    assert x.grad is not None and kernels.compiled_calls == 0
    with torch.no_grad():
        kernels.layer_norm_gelu(x, norm)
    assert kernels.compiled_calls == 1
