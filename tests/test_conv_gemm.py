"""The SSL conv feature encoder as channels-last matrix products equals transformers' own."""

import numpy as np
import pytest
import torch
from helpers import tiny_hf_config, tone_bursts
from torch import nn

from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import BackendConfig, SSLConfig
from nes2net_stream.models.conv_gemm import gemm_conv_features, supports_gemm
from nes2net_stream.models.detector import Detector
from nes2net_stream.service.runner import BatchRunner

WINDOW = 16_000


def detector(family: str = "wav2vec2", *, layer_norm: bool = True, aggregation: str = "last",
             conv_bias: bool = True, normalize: bool = False) -> Detector:
    torch.manual_seed(0)
    hf = tiny_hf_config(family, stable_layer_norm=layer_norm)
    hf["conv_bias"] = conv_bias
    cfg = SSLConfig(family=family, aggregation=aggregation, normalize_waveform=normalize,
                    hf_config=hf)
    return Detector(cfg, BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2,
                                       se_ratio=2)).eval()


def waves(batch: int, samples: int = WINDOW) -> torch.Tensor:
    rng = np.random.default_rng(batch)
    rows = [tone_bursts(samples / 16000, seed=i) + 0.05 * rng.standard_normal(samples)
            for i in range(batch)]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "hubert"])
@pytest.mark.parametrize("layer_norm,conv_bias", [(True, True), (False, False)])
def test_gemm_encoder_equals_the_transformers_encoder(family, layer_norm, conv_bias):
    """Layer norm per frame (XLS-R, WavLM Large) and group norm over time (base models)."""
    det = detector(family, layer_norm=layer_norm, conv_bias=conv_bias)
    encoder = det.frontend.model.feature_extractor
    assert supports_gemm(encoder.conv_layers)
    x = waves(3)
    with torch.no_grad():
        native = encoder(x)
        gemm = gemm_conv_features(encoder.conv_layers, x)
    assert gemm.shape == native.shape == (3, 16, 49)
    assert torch.allclose(gemm, native, atol=1e-5, rtol=1e-4)


def test_xlsr_geometry_at_full_width():
    """XLS-R's real conv stack (512 channels, conv bias, layer norm) on a 1 s tail."""
    torch.manual_seed(1)
    hf = tiny_hf_config("wav2vec2")
    hf.update(conv_dim=(512,) * 7, conv_bias=True)
    det = Detector(SSLConfig(family="wav2vec2", aggregation="last", hf_config=hf),
                   BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2)).eval()
    encoder = det.frontend.model.feature_extractor
    x = waves(2, samples=16_400)  # 51 frames: one hop's new audio in the streaming cache
    with torch.no_grad():
        native = encoder(x)
        gemm = gemm_conv_features(encoder.conv_layers, x)
    assert gemm.shape == (2, 512, 51)
    assert (gemm - native).abs().max() <= 1e-4 * native.abs().max()


@pytest.mark.parametrize("aggregation", ["last", "sea", "weighted_sum"])
def test_detector_logits_are_unchanged(aggregation):
    det = detector(aggregation=aggregation, normalize=aggregation == "sea")
    x = waves(4)
    with torch.no_grad():
        native = det(x)
        assert det.set_conv_impl("gemm") and det.frontend.conv_impl == "gemm"
        gemm = det(x)
    assert torch.allclose(gemm, native, atol=1e-5)


def test_state_dict_and_gradients_are_those_of_the_native_encoder():
    det = detector()
    keys = list(det.state_dict())
    det.set_conv_impl("gemm")
    assert list(det.state_dict()) == keys  # checkpoints load and save the same
    x = waves(2)
    grads = {}
    for impl in ("native", "gemm"):
        det.zero_grad()
        det.set_conv_impl(impl)
        det(x).sum().backward()
        first = det.frontend.model.feature_extractor.conv_layers[1].conv.weight
        grads[impl] = first.grad.clone()
    assert torch.allclose(grads["gemm"], grads["native"], atol=1e-5, rtol=1e-3)


def test_bf16_weights_stay_within_rounding_of_float32():
    det = detector()
    x = waves(2)
    with torch.no_grad():
        ref = det(x)
        det.set_conv_impl("gemm")
        det.to(torch.bfloat16)
        out = det(x.to(torch.bfloat16)).float()
    assert torch.allclose(out, ref, atol=0.05)


def test_runner_uses_the_gemm_encoder_by_default_and_can_keep_the_native_one():
    runner = BatchRunner(detector(), window_samples=WINDOW, max_batch_size=4)
    assert runner.detector.frontend.conv_impl == "gemm"
    native = BatchRunner(detector(), window_samples=WINDOW, max_batch_size=4,
                         conv_encoder="native")
    assert native.detector.frontend.conv_impl == "native"
    x = waves(3).numpy()
    assert torch.allclose(runner.run(x), native.run(x), atol=1e-5)


def test_cached_gemm_windows_score_like_full_native_windows():
    """The streaming cache on top of the GEMM encoder stays exact."""
    reference = detector()
    runner = BatchRunner(detector(), window_samples=WINDOW, max_batch_size=4,
                         feature_cache=True)
    x = waves(1, samples=3 * WINDOW)[0].numpy()
    hop = 320 * 25
    with torch.no_grad():
        for end in range(WINDOW, x.size + 1, hop):
            w = x[end - WINDOW:end]
            got = runner.run(w[None], ["call-a"], [end])
            assert torch.allclose(got, reference(torch.from_numpy(w)[None]), atol=1e-4), end
    assert runner.cache is not None and runner.cache.hits >= 3


def test_unsupported_layers_and_bad_values_are_refused():
    det = detector()
    layers = det.frontend.model.feature_extractor.conv_layers
    with pytest.raises(ValueError, match="conv_impl"):
        det.frontend.conv_impl = "fast"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="shorter than the kernel"):
        gemm_conv_features(layers, torch.zeros(1, 5))
    layers[2].layer_norm = nn.BatchNorm1d(16)  # not a per-frame or per-channel norm
    assert not supports_gemm(layers)
    with pytest.raises(BundleError, match="no GEMM form"):
        det.set_conv_impl("gemm")
    runner = BatchRunner(det, window_samples=WINDOW, max_batch_size=2)  # falls back, logged
    assert runner.detector.frontend.conv_impl == "native"


def test_spectral_front_ends_ignore_the_setting():
    from nes2net_stream.models.config import SpectralConfig
    from nes2net_stream.models.detector import build_frontend

    dim = build_frontend(SpectralConfig()).output_dim
    det = Detector(SpectralConfig(), BackendConfig(input_dim=dim, outer_ratio=4, inner_ratio=2,
                                                   se_ratio=2))
    assert det.set_conv_impl("gemm") is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gemm_encoder_on_cuda_in_bf16_and_under_graphs():
    """On the GPU: bf16 weights, whole small buckets captured in CUDA graphs, the cache."""
    x = waves(3).numpy()
    reference = BatchRunner(detector().cuda(), window_samples=WINDOW, max_batch_size=4,
                            use_buckets=False, cuda_graphs=False, backend_graphs=False,
                            conv_encoder="native").run(x)
    for graphs in (True, False):
        runner = BatchRunner(detector().cuda(), window_samples=WINDOW, max_batch_size=4,
                             dtype=torch.bfloat16, cast_weights=True, cuda_graphs=graphs,
                             graph_max_batch=4, feature_cache=not graphs)
        assert runner.detector.frontend.conv_impl == "gemm"
        keys = None if graphs else ["a", "b", "c"]
        out = runner.run(x, keys, None if graphs else [WINDOW] * 3)
        assert torch.allclose(out, reference, atol=0.05), graphs
        if graphs:
            assert runner.bucket(3) in runner._graphs


def _stack(kernels: tuple[int, ...], strides: tuple[int, ...], *, conv_bias: bool = True,
           layer_norm: bool = True, width: int = 16) -> nn.ModuleList:
    torch.manual_seed(sum(kernels))
    hf = tiny_hf_config("wav2vec2", stable_layer_norm=layer_norm)
    hf.update(conv_dim=(width,) * len(kernels), conv_kernel=kernels, conv_stride=strides,
              conv_bias=conv_bias, num_feat_extract_layers=len(kernels))
    cfg = SSLConfig(family="wav2vec2", aggregation="last", hf_config=hf)
    det = Detector(cfg, BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2,
                                      se_ratio=2)).eval()
    return det.frontend.model.feature_extractor


@pytest.mark.parametrize("kernels,strides", [
    ((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)),  # wav2vec 2.0 / XLS-R / HuBERT / WavLM
    ((10, 4, 1, 3, 2), (5, 2, 2, 2, 3)),  # kernel = 2 x stride, kernel < stride
])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_padded_encoder_equals_the_native_one_at_every_length(kernels, strides, conv_bias):
    """Later layers without gathering copies (padded frame counts): the same frames for odd,
    even and barely long enough inputs and every batch size, padding cut off."""
    from nes2net_stream.models.conv_gemm import _paired

    encoder = _stack(kernels, strides, conv_bias=conv_bias)
    minimum = 1
    for k, s in zip(reversed(kernels), reversed(strides), strict=True):
        minimum = (minimum - 1) * s + k
    with torch.inference_mode():
        for batch, samples in ((1, minimum), (2, minimum + 1), (3, 4_001), (2, 16_400),
                               (1, 16_000), (3, 7_777)):
            x = waves(batch, samples)
            assert _paired(encoder.conv_layers, x)
            native = encoder(x)
            got = gemm_conv_features(encoder.conv_layers, x, padded=True)
            assert got.shape == native.shape, (batch, samples)
            assert torch.allclose(got, native, atol=1e-5, rtol=1e-4), (batch, samples)


def test_the_padded_path_steps_aside_where_it_must():
    from nes2net_stream.models.conv_gemm import _paired

    encoder = _stack((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    x = waves(2)
    assert not _paired(encoder.conv_layers, x)  # parameters record gradients here
    with torch.no_grad():
        assert _paired(encoder.conv_layers, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not _paired(encoder.conv_layers, x)
        wide = _stack((10, 5, 2), (5, 2, 2))  # kernel > 2 x stride: gathered rows
        assert not _paired(wide.conv_layers, x)
        got = gemm_conv_features(wide.conv_layers, x, padded=True)
        assert torch.allclose(got, wide(x), atol=1e-5, rtol=1e-4)
        group = _stack((10, 3, 2), (5, 2, 2), layer_norm=False)  # group norm over time
        assert not _paired(group.conv_layers, x)
        assert torch.allclose(gemm_conv_features(group.conv_layers, x, padded=True), group(x),
                              atol=1e-5, rtol=1e-4)


def test_the_padded_path_is_chosen_on_accelerators_and_in_reduced_precision(monkeypatch):
    import nes2net_stream.models.conv_gemm as cg

    encoder = _stack((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    taken: list[str] = []
    monkeypatch.setattr(cg, "_padded_features", lambda *a: taken.append("padded") or a[1])
    monkeypatch.setattr(cg, "_gathered_features", lambda *a: taken.append("gathered") or a[1])
    with torch.inference_mode():
        cg.gemm_conv_features(encoder.conv_layers, waves(1))  # CPU float32: one deep product
        cg.gemm_conv_features(encoder.conv_layers, waves(1).bfloat16())
        cg.gemm_conv_features(encoder.conv_layers, waves(1), padded=True)
        cg.gemm_conv_features(encoder.conv_layers, waves(1).bfloat16(), padded=False)
    assert taken == ["gathered", "padded", "padded", "gathered"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_padded_encoder_on_cuda_is_the_default_and_matches_the_gathered_one():
    encoder = _stack((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), width=512).cuda()
    layers = encoder.conv_layers
    x = waves(4, 16_400).cuda()
    with torch.inference_mode():
        for dtype, tolerance in ((torch.float32, 2e-3), (torch.bfloat16, 0.05)):  # TF32 too
            layers.to(dtype)
            xx = x.to(dtype)
            gathered = gemm_conv_features(layers, xx, padded=False).float()
            got = gemm_conv_features(layers, xx).float()  # the padded form, by default
            assert got.shape == gathered.shape == (4, 512, 51)
            assert (got - gathered).abs().max() <= tolerance * max(1.0, gathered.abs().max())


def test_a_failing_padded_form_falls_back_to_gathering_for_good(monkeypatch):
    import nes2net_stream.models.conv_gemm as cg

    encoder = _stack((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    calls: list[int] = []

    def refuse(*args):
        calls.append(1)
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")

    monkeypatch.setattr(cg, "_padded_failed", False)
    monkeypatch.setattr(cg, "_padded_features", refuse)
    x = waves(2).bfloat16()
    encoder.bfloat16()
    with torch.inference_mode():
        expected = cg._gathered_features(encoder.conv_layers, x)
        assert torch.equal(cg.gemm_conv_features(encoder.conv_layers, x), expected)
        assert torch.equal(cg.gemm_conv_features(encoder.conv_layers, x), expected)
    assert calls == [1] and cg._padded_failed  # tried once, then the gathered form
