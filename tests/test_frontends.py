import dataclasses

import pytest
import torch
from helpers import tiny_hf_config

from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import BackendConfig, SpectralConfig, SSLConfig
from nes2net_stream.models.detector import Detector
from nes2net_stream.models.spectral import SpectralFrontend, dct_matrix, linear_filterbank
from nes2net_stream.models.ssl_frontend import SSLFrontend


@pytest.mark.parametrize("kind", ["lfb", "lfcc", "logspec"])
def test_spectral_shapes(kind):
    fe = SpectralFrontend(SpectralConfig(kind=kind, n_features=64))
    y = fe(torch.randn(2, 16000) * 0.1)
    # 16000 samples, hop 160, centred frames -> 101 frames
    assert y.shape == (2, 64, 101)
    assert torch.isfinite(y).all()


def test_spectral_is_gain_invariant_with_normalisation():
    fe = SpectralFrontend(SpectralConfig(kind="lfb", n_features=32))
    x = torch.randn(1, 8000) * 0.05
    assert torch.allclose(fe(x), fe(4 * x), atol=1e-4)


def test_spectral_ignores_energy_above_max_frequency():
    fe = SpectralFrontend(SpectralConfig(kind="lfb", n_features=32, max_freq_hz=4000,
                                         pre_emphasis=0.0, normalize=False))
    t = torch.arange(16000) / 16000
    low = 0.1 * torch.sin(2 * torch.pi * 1000 * t)
    high = 0.1 * torch.sin(2 * torch.pi * 6000 * t)
    base = fe(low[None]).exp()
    both = fe((low + high)[None]).exp()
    # the 6 kHz tone adds only window leakage: under 0.1 % of the analysed energy
    assert float((both - base).abs().sum() / base.sum()) < 1e-3


def test_filterbank_and_dct_properties():
    fb = linear_filterbank(16, 512, 16000, 0.0, 4000.0)
    assert fb.shape == (257, 16)
    assert (fb[129:] == 0).all()  # nothing above 4 kHz (bin 128 = 4 kHz)
    m = dct_matrix(8)
    assert torch.allclose(m @ m.T, torch.eye(8), atol=1e-5)


def test_logspec_needs_enough_bins():
    with pytest.raises(ValueError, match="fewer than n_features"):
        SpectralFrontend(SpectralConfig(kind="logspec", n_features=200, n_fft=512))


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "hubert"])
@pytest.mark.parametrize("aggregation", ["last", "sea", "weighted_sum", "attentive_merge"])
def test_ssl_frontends_end_to_end(family, aggregation):
    cfg = SSLConfig(family=family, aggregation=aggregation, hf_config=tiny_hf_config(family))
    det = Detector(cfg, BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2))
    det.train()
    wave = torch.randn(2, 8000) * 0.1
    logits = det(wave)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    # with a layer aggregation the encoder's final layer norm is not used
    unused = () if aggregation == "last" else ("model.encoder.layer_norm.",)
    grads = [p.grad for n, p in det.frontend.named_parameters()
             if p.requires_grad and not n.startswith(unused)]
    assert grads and all(g is not None for g in grads)
    # 8000 samples -> 24 frames of 20 ms from the conv stack
    assert det.frontend(wave).shape == (2, 32, 24)


def test_ssl_hidden_states_count_and_last_layer():
    cfg = SSLConfig(family="wav2vec2", aggregation="weighted_sum",
                    hf_config=tiny_hf_config("wav2vec2", layers=3))
    fe = SSLFrontend(cfg).eval()
    final, hidden = fe.hidden_states(torch.randn(1, 4000))
    assert len(hidden) == 4
    # pre-LN model: the final output is the last layer's output after the final layer norm
    ln = fe.model.encoder.layer_norm
    assert torch.allclose(final, ln(hidden[-1]), atol=1e-5)


def test_ssl_from_local_directory_and_no_hub_without_permission(tmp_path):
    import transformers as tf

    model = tf.Wav2Vec2Model(tf.Wav2Vec2Config(**tiny_hf_config("wav2vec2")))
    model.save_pretrained(tmp_path / "w2v")
    fe = SSLFrontend.from_pretrained(tmp_path / "w2v", SSLConfig(family="wav2vec2"))
    assert fe.output_dim == 32
    sd = model.state_dict()
    assert torch.equal(fe.model.state_dict()["encoder.layers.0.attention.k_proj.weight"],
                       sd["encoder.layers.0.attention.k_proj.weight"])
    with pytest.raises(BundleError, match="not a local directory"):
        SSLFrontend.from_pretrained("facebook/wav2vec2-xls-r-300m", SSLConfig())
    with pytest.raises(BundleError, match="no config.json"):
        SSLFrontend.from_pretrained(tmp_path, SSLConfig())


def test_frontend_backend_dimension_mismatch():
    with pytest.raises(BundleError, match="expects input_dim=64"):
        Detector(SpectralConfig(n_features=32), BackendConfig(input_dim=64, outer_ratio=4,
                                                              inner_ratio=4))


def test_score_convention_two_and_one_logit():
    det = Detector(SpectralConfig(n_features=32), BackendConfig(input_dim=32, outer_ratio=4,
                                                                inner_ratio=2))
    s = det.scores_from_logits(torch.tensor([[2.0, -1.0], [-3.0, 1.0]]))
    assert torch.allclose(s.raw, torch.tensor([3.0, -4.0]))
    assert torch.allclose(s.bona_fide_logit, torch.tensor([-1.0, 1.0]))
    assert torch.allclose(s.spoof_probability, torch.sigmoid(torch.tensor([3.0, -4.0])))
    det1 = Detector(SpectralConfig(n_features=32), dataclasses.replace(
        det.backend_cfg, n_logits=1))
    s1 = det1.scores_from_logits(torch.tensor([[2.5]]))
    assert float(s1.raw) == -2.5 and float(s1.bona_fide_logit) == 2.5


@pytest.mark.parametrize("family,stable", [("wav2vec2", True), ("wav2vec2", False),
                                           ("wavlm", True), ("hubert", True),
                                           ("hubert", False)])
@pytest.mark.parametrize("aggregation", ["last", "weighted_sum"])
def test_transformer_from_conv_features_equals_the_whole_model(family, stable, aggregation):
    """The SSL tail run from conv features is the transformers model's own forward."""
    hf = tiny_hf_config(family, stable_layer_norm=stable)
    hf["feat_proj_layer_norm"] = True  # HuBERT's optional projection norm (ignored elsewhere)
    fe = SSLFrontend(SSLConfig(family=family, aggregation=aggregation, hf_config=hf)).eval()
    wave = torch.randn(3, 8000) * 0.1
    with torch.no_grad():
        conv = fe.conv_features(wave)
        assert torch.allclose(fe.transformer(conv), fe.model(wave).last_hidden_state,
                              atol=1e-6)
        final, hidden = fe.hidden_states(wave)
        native = fe(wave)
        assert torch.allclose(fe.forward_from_conv(conv), native, atol=1e-6)
    # no hook is left behind on the feature encoder (nothing replaces its output)
    assert not fe.model.feature_extractor._forward_hooks
    assert len(hidden) == fe.n_layer and final.shape == hidden[-1].shape


def test_transformer_from_conv_features_applies_the_wav2vec2_adapter():
    hf = tiny_hf_config("wav2vec2")
    hf.update(add_adapter=True, output_hidden_size=32, num_adapter_layers=1,
              adapter_stride=2, adapter_kernel_size=3)
    fe = SSLFrontend(SSLConfig(family="wav2vec2", hf_config=hf)).eval()
    wave = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        expected = fe.model(wave).last_hidden_state
        got = fe.transformer(fe.conv_features(wave))
    assert got.shape == expected.shape and got.shape[1] < 24  # the adapter halved the frames
    assert torch.allclose(got, expected, atol=1e-6)
