"""The SSL positional convolution through FFTs equals the direct convolution."""

import copy

import numpy as np
import pytest
import torch
from helpers import tiny_hf_config, tiny_ssl_detector
from torch import nn

from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import SSLConfig
from nes2net_stream.models.pos_conv_fft import fft_size, use_fft, uses_fft
from nes2net_stream.models.ssl_frontend import SSLFrontend
from nes2net_stream.service.capture import cuda_capture, eager_capture
from nes2net_stream.service.runner import BatchRunner


def test_fft_sizes_are_seven_smooth_and_minimal():
    def smooth(n):
        for p in (2, 3, 5, 7):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 700):
        size = fft_size(n)
        assert size >= n and smooth(size)
        assert all(not smooth(m) for m in range(n, size))
    assert fft_size(326) == 336  # XLS-R: 199 frames + kernel 128 - 1


@pytest.mark.parametrize("channels,groups,kernel,padding,frames,bias", [
    (32, 2, 16, 8, 50, True),      # the tiny test geometry
    (64, 16, 128, 64, 199, True),  # XLS-R's kernel and groups (narrower)
    (24, 3, 7, 3, 40, False),      # odd kernel, no bias
    (16, 1, 5, 0, 9, True),        # no padding, one group
    (16, 4, 33, 16, 10, True),     # input shorter than the kernel
])
def test_fft_convolution_equals_conv1d(channels, groups, kernel, padding, frames, bias):
    torch.manual_seed(0)
    conv = nn.Conv1d(channels, channels, kernel, padding=padding, groups=groups, bias=bias)
    x = torch.randn(3, channels, frames)
    with torch.no_grad():
        expected = conv(x)
        use_fft(conv, True)
        got = conv(x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.allclose(got, expected, atol=2e-5 * float(expected.abs().max()))


def test_weight_norm_cache_follows_parameter_changes_and_restores():
    torch.manual_seed(1)
    conv = nn.utils.parametrizations.weight_norm(
        nn.Conv1d(32, 32, 16, padding=8, groups=2), name="weight", dim=2)
    keys = set(conv.state_dict())
    x = torch.randn(2, 32, 30)
    use_fft(conv, True)
    assert uses_fft(conv)
    with torch.no_grad():
        first = conv(x)
        conv.parametrizations.weight.original1.mul_(1.5)  # v scaled: weight unchanged (norm)
        conv.bias.add_(1.0)  # the bias changes the output
        changed = conv(x)
        assert torch.allclose(changed, first + 1.0, atol=1e-5)
        copied = copy.deepcopy(conv)
        assert uses_fft(copied) and torch.allclose(copied(x), changed)
        use_fft(conv, False)
        assert not uses_fft(conv)
        assert torch.allclose(conv(x), changed, atol=1e-5)
    assert set(conv.state_dict()) == keys


def test_bf16_inputs_give_bf16_outputs_close_to_float32():
    torch.manual_seed(2)
    conv = nn.Conv1d(64, 64, 128, padding=64, groups=16)
    x = torch.randn(2, 64, 100)
    with torch.no_grad():
        expected = conv(x)
        conv16 = copy.deepcopy(conv).to(torch.bfloat16)
        use_fft(conv16, True)
        got = conv16(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), expected, atol=0.02 * float(expected.abs().max()))


def test_training_runs_the_direct_convolution_so_the_kernel_gets_gradients():
    torch.manual_seed(6)
    conv = nn.Conv1d(16, 16, 8, padding=4, groups=2)
    use_fft(conv, True)
    x = torch.randn(2, 16, 20)
    conv(x).square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.allclose(conv(x), nn.Conv1d.forward(conv, x), atol=1e-5)
    # a frozen kernel but an input that needs its gradient (after inference-mode use)
    conv.requires_grad_(False)
    with torch.inference_mode():
        conv(x)
    xg = x.clone().requires_grad_(True)
    conv(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_autocast_does_not_reach_the_fft_arithmetic():
    torch.manual_seed(7)
    conv = nn.Conv1d(32, 32, 16, padding=8, groups=2)
    x = torch.randn(2, 32, 40)
    with torch.no_grad():
        expected = conv(x)
        use_fft(conv, True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = conv(x)
    assert got.dtype == torch.float32  # the input's dtype, computed in float32
    assert torch.allclose(got, expected, atol=1e-5)


def test_only_plain_stride_one_convolutions_have_an_fft_form():
    with pytest.raises(ValueError, match="no FFT form"):
        use_fft(nn.Conv1d(8, 8, 3, stride=2), True)


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "hubert"])
def test_frontend_with_fft_positional_convolution_equals_native(family):
    torch.manual_seed(3)
    fe = SSLFrontend(SSLConfig(family=family, aggregation="weighted_sum",
                               hf_config=tiny_hf_config(family))).eval()
    keys = set(fe.state_dict())
    x = torch.randn(3, 16000) * 0.1
    with torch.no_grad():
        native = fe(x)
        fe.pos_conv_impl = "fft"
        assert fe.pos_conv_impl == "fft"
        assert torch.allclose(fe(x), native, atol=1e-5)
        assert torch.allclose(fe.forward_from_conv(fe.conv_features(x)), native, atol=1e-5)
        fe.pos_conv_impl = "native"
        assert torch.equal(fe(x), native)
    assert set(fe.state_dict()) == keys
    with pytest.raises(ValueError):
        fe.pos_conv_impl = "winograd"


def test_runner_with_fft_positional_convolution_and_cache_matches_eager():
    torch.manual_seed(4)
    det = tiny_ssl_detector()
    reference = BatchRunner(copy.deepcopy(det), window_samples=16000, max_batch_size=8,
                            use_buckets=False, pos_conv="native")
    runner = BatchRunner(det, window_samples=16000, max_batch_size=8, use_buckets=True,
                         cuda_graphs=True, graph_max_batch=2, graph_capture=eager_capture,
                         feature_cache=True, pos_conv="fft")
    assert det.frontend.pos_conv_impl == "fft"
    rng = np.random.default_rng(0)
    streams = (0.1 * rng.standard_normal((5, 2 * 16000))).astype(np.float32)
    keys = [f"{i + 1:032x}" for i in range(5)]
    for n, end in ((1, 16000), (5, 16000), (5, 16000 + 320 * 30)):
        batch = streams[:n, end - 16000:end]
        assert torch.allclose(runner.run(batch, keys[:n], [end] * n), reference.run(batch),
                              atol=1e-5), (n, end)


def test_warming_the_positional_convolution_per_batch_size():
    det = tiny_ssl_detector()
    runner = BatchRunner(det, window_samples=16000, max_batch_size=8, pos_conv="fft")
    assert runner.warm_positional_conv(range(1, 9)) == 8
    native = BatchRunner(det, window_samples=16000, max_batch_size=8, pos_conv="native")
    assert native.warm_positional_conv(range(1, 9)) == 0


def test_a_model_without_ssl_ignores_the_setting(small_bundle):
    from nes2net_stream.bundle import load_model

    det = load_model(small_bundle)
    runner = BatchRunner(det, window_samples=16000, max_batch_size=4, pos_conv="fft")
    assert runner.warm_positional_conv([1, 2]) == 0  # nothing to warm
    assert det.set_pos_conv_impl("fft") is False


def test_a_positional_convolution_without_fft_form_is_refused():
    fe = SSLFrontend(SSLConfig(family="wav2vec2", hf_config=tiny_hf_config("wav2vec2")))
    fe.model.encoder.pos_conv_embed.conv = nn.Conv1d(32, 32, 3, stride=2)
    with pytest.raises(BundleError, match="no FFT form"):
        fe.pos_conv_impl = "fft"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fft_positional_convolution_in_a_cuda_graph():
    torch.manual_seed(5)
    conv = nn.utils.parametrizations.weight_norm(
        nn.Conv1d(1024, 1024, 128, padding=64, groups=16), name="weight", dim=2)
    conv = conv.cuda().to(torch.bfloat16)
    x = torch.randn(8, 1024, 199, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = conv(x).float()
        use_fft(conv, True)
        replay, out = cuda_capture(conv, x.clone())
        replay()
        torch.cuda.synchronize()
    scale = float(expected.abs().max())
    assert torch.allclose(out.float(), expected, atol=0.02 * scale)
