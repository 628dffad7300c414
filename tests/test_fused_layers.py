"""The fused transformer-layer forward equals transformers' own, and steps aside where it must."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import cuda_bf16_frontend, tiny_hf_config, tiny_ssl_detector

from nes2net_stream.models.config import SSLConfig
from nes2net_stream.models.fused_layers import (
    FusedLayerForward,
    supports_fused,
    use_fused,
    uses_fused,
)
from nes2net_stream.models.ssl_frontend import SSLFrontend
from nes2net_stream.service.capture import cuda_capture, eager_capture
from nes2net_stream.service.runner import BatchRunner


def frontend(family: str, *, stable: bool = True, aggregation: str = "last",
             seed: int = 0) -> SSLFrontend:
    torch.manual_seed(seed)
    cfg = SSLConfig(family=family, aggregation=aggregation,
                    hf_config=tiny_hf_config(family, stable_layer_norm=stable, layers=3))
    return SSLFrontend(cfg).eval()


def fused_calls(fe: SSLFrontend) -> int:
    return sum(m.forward.fused_calls for m in fe.model.encoder.layers if uses_fused(m))


@pytest.mark.parametrize("family,stable", [("wav2vec2", True), ("wav2vec2", False),
                                           ("hubert", True), ("hubert", False)])
@pytest.mark.parametrize("aggregation", ["last", "weighted_sum", "sea"])
def test_fused_layers_equal_transformers_layers(family, stable, aggregation):
    fe = frontend(family, stable=stable, aggregation=aggregation)
    keys = set(fe.state_dict())
    x = 0.1 * torch.randn(3, 16000)
    with torch.inference_mode():
        native = fe(x)
        fe.layers_impl = "fused"
        assert fe.layers_impl == "fused"
        got = fe(x)
        assert fused_calls(fe) == 3  # every layer took the fused path (hooks still fired)
        assert torch.allclose(got, native, atol=1e-5)
        fe.layers_impl = "native"
        assert fe.layers_impl == "native" and torch.equal(fe(x), native)
    assert set(fe.state_dict()) == keys
    with pytest.raises(ValueError):
        fe.layers_impl = "flash"


def test_wavlm_layers_have_no_fused_form_and_keep_their_own():
    fe = frontend("wavlm")
    assert not any(supports_fused(m) for m in fe.model.encoder.layers)
    x = 0.1 * torch.randn(2, 16000)
    with torch.inference_mode():
        native = fe(x)
        fe.layers_impl = "fused"  # nothing to fuse: a no-op, not an error
        assert fe.layers_impl == "native" and torch.equal(fe(x), native)
    with pytest.raises(ValueError, match="no fused form"):
        use_fused(fe.model.encoder.layers[0], True)


def test_attention_mask_training_and_gradients_take_the_layers_own_forward():
    fe = frontend("wav2vec2")
    layer = fe.model.encoder.layers[0]
    reference = copy.deepcopy(layer)
    use_fused(layer, True)
    x = torch.randn(2, 7, 32)
    mask = torch.zeros(2, 1, 7, 7)
    mask[..., -2:] = float("-inf")
    with torch.no_grad():
        assert torch.allclose(layer(x, attention_mask=mask), reference(x, attention_mask=mask))
    assert layer.forward.fused_calls == 0
    layer.train()
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    assert torch.equal(a, reference.train()(x))  # dropout as transformers applies it
    layer.eval()
    out = layer(x.requires_grad_(True))  # gradients recorded: the autograd-friendly path
    out.sum().backward()
    assert x.grad is not None and layer.forward.fused_calls == 0
    with torch.inference_mode():
        layer(x.detach())
    assert layer.forward.fused_calls == 1


def test_packed_weights_follow_parameter_changes_and_copies():
    fe = frontend("wav2vec2", seed=1)
    other = frontend("wav2vec2", seed=2)
    x = 0.1 * torch.randn(2, 16000)
    fe.layers_impl = "fused"
    with torch.inference_mode():
        before = fe(x)
        fe.load_state_dict(other.state_dict())  # same parameter tensors, new values
        assert torch.allclose(fe(x), other(x), atol=1e-5)
        assert not torch.allclose(fe(x), before, atol=1e-3)
        copied = copy.deepcopy(fe)
        assert copied.layers_impl == "fused"
        assert copied.model.encoder.layers[0].forward.layer is copied.model.encoder.layers[0]
        assert not copied.model.encoder.layers[0].forward._packed  # packs its own
        assert torch.allclose(copied(x), other(x), atol=1e-5)


def test_bf16_weights_stay_close_to_float32():
    fe = frontend("wav2vec2", seed=3)
    x = 0.1 * torch.randn(2, 16000)
    with torch.inference_mode():
        expected = fe(x)
        fe16 = copy.deepcopy(fe).to(torch.bfloat16)
        native16 = fe16(x.to(torch.bfloat16))
        fe16.layers_impl = "fused"
        got = fe16(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    scale = float(expected.abs().max())
    # no further from float32 than transformers' own bf16 layers are
    assert float((got.float() - expected).abs().max()) <= max(
        0.03 * scale, 1.5 * float((native16.float() - expected).abs().max()))


def test_layers_returning_tuples_keep_returning_tuples():
    """Older transformers layers return a 1-tuple; the fused forward answers in kind."""
    fe = frontend("wav2vec2")
    base = type(fe.model.encoder.layers[0])

    class Wav2Vec2EncoderLayerStableLayerNorm(base):  # same name: a supported layer
        def forward(self, hidden_states, attention_mask=None, **kwargs):
            return (super().forward(hidden_states, attention_mask, **kwargs),)

    layer = copy.deepcopy(fe.model.encoder.layers[0])
    layer.__class__ = Wav2Vec2EncoderLayerStableLayerNorm
    x = torch.randn(2, 5, 32)
    with torch.inference_mode():
        expected = layer(x)
        use_fused(layer, True)
        got = layer(x)
    assert isinstance(got, tuple) and len(got) == 1
    assert torch.allclose(got[0], expected[0], atol=1e-5)
    use_fused(layer, False)
    assert not uses_fused(layer)


def test_the_tanh_gelu_of_the_cuda_epilogue_is_within_half_a_thousandth_of_the_exact():
    """cuBLASLt's GELU epilogue (what ``torch._addmm_activation`` runs on CUDA) computes the tanh
    form; the model was trained with the exact one. The difference is bounded by 5e-4."""
    grid = torch.linspace(-8, 8, 100_001, dtype=torch.float64)
    assert float((F.gelu(grid, approximate="tanh") - F.gelu(grid)).abs().max()) < 5e-4
    torch.manual_seed(4)
    x, w, b = torch.randn(64, 32), torch.randn(48, 32) / 6, torch.randn(48)
    got = torch._addmm_activation(b, x, w.t(), use_gelu=True)  # the op exists with this form
    assert float((got - F.gelu(torch.addmm(b, x, w.t()))).abs().max()) < 5e-4


def test_runner_uses_fused_layers_by_default_and_matches_native():
    det = tiny_ssl_detector()
    rng = np.random.default_rng(0)
    windows = (0.1 * rng.standard_normal((3, 16000))).astype(np.float32)
    native = BatchRunner(copy.deepcopy(det), window_samples=16000, max_batch_size=4,
                         encoder_layers="native").run(windows)
    runner = BatchRunner(copy.deepcopy(det), window_samples=16000, max_batch_size=4,
                         cuda_graphs=True, graph_max_batch=2, graph_capture=eager_capture,
                         use_buckets=True)
    assert runner.detector.frontend.layers_impl == "fused"
    assert torch.allclose(runner.run(windows), native, atol=1e-5)
    assert torch.allclose(runner.run(windows[:2]), native[:2], atol=1e-5)  # graph bucket


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_layers_on_cuda_in_bf16_and_in_a_graph():
    fe, x = cuda_bf16_frontend(8)
    with torch.inference_mode():
        expected = fe.float()(x.float())
        fe = fe.to(torch.bfloat16)
        native = fe(x)
        fe.layers_impl = "fused"
        got = fe(x)
        layer_fwd = fe.model.encoder.layers[0].forward
        assert isinstance(layer_fwd, FusedLayerForward) and layer_fwd.gelu_epilogue
        err_native = float((native.float() - expected).abs().max())
        err_fused = float((got.float() - expected).abs().max())
        assert err_fused <= max(1.5 * err_native, 0.02 * float(expected.abs().max()))
        replay, out = cuda_capture(fe, x.clone())
        replay()
        torch.cuda.synchronize()
        # the captured kernels may be other cuBLAS algorithms: within a bf16 rounding step
        assert torch.allclose(out.float(), got.float(), atol=2e-2, rtol=2e-2)
