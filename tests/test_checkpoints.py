"""Parity of converted official checkpoints with an independent reference forward."""

import argparse
import dataclasses
import hashlib

import numpy as np
import pytest
import soundfile as sf
import torch
from official_reference import Geometry, official_state, pad_repeat, reference_logits

from nes2net_stream.errors import BundleError
from nes2net_stream.models.checkpoints import (
    ARCHITECTURES,
    build_detector,
    convert_checkpoint,
    convert_state_dict,
    describe_checkpoint,
)
from nes2net_stream.models.nes2net import count_parameters
from nes2net_stream.scoring.files import score_file

TOL = 1e-4
XLSR = Geometry(conv_bias=True, wavlm=False, nested_x=True, dilation=2, n_logits=2)
SVDD = Geometry(conv_bias=False, wavlm=True, dilation=1, n_logits=1)
# (official SSL prefix, s3prl waveform normalisation, geometry) per architecture
CASES = {
    "xlsr300m-nes2net-x": ("ssl_model.model.", False, XLSR),
    "wavlm-large-nes2net": ("ssl_model.model.model.", True,
                            dataclasses.replace(SVDD, nested_x=False)),
    "wavlm-large-nes2net-x": ("ssl_model.model.model.", True, SVDD),
    # SE ratio 16 on 16 channels hits the SeLU module's minimum SE width of 2
    "wavlm-large-nes2net-x-selu": ("ssl_model.model.model.", True,
                                   dataclasses.replace(SVDD, selu=True, se_min=2, se_ratio=16)),
    "wavlm-large-nes2net-x-asvspoof5": ("ssl_model.model.", False, dataclasses.replace(
        SVDD, n_logits=2, se_min=2, se_ratio=16)),
}


def backend_options(g: Geometry) -> dict:
    return {"pooling": g.pooling, "outer_ratio": g.outer, "inner_ratio": g.inner,
            "se_ratio": g.se_ratio}


def convert(arch: str, g: Geometry, state: dict):
    return convert_state_dict(state, arch, aggregation=g.aggregation,
                              backend_options=backend_options(g), ssl_overrides=g.hf_overrides())


def parity_cases():
    for arch in CASES:
        for agg in ARCHITECTURES[arch].aggregations:
            for pooling in ("mean", "astp"):
                yield pytest.param(arch, agg, pooling, id=f"{arch}-{agg}-{pooling}")


@pytest.mark.parametrize(("arch", "aggregation", "pooling"), list(parity_cases()))
def test_converted_logits_match_reference(arch, aggregation, pooling):
    prefix, s3prl, g = CASES[arch]
    g = dataclasses.replace(g, aggregation=aggregation, pooling=pooling, astp_bottleneck=128)
    state = official_state(g, prefix, seed=len(arch) + len(aggregation),
                           pretraining_extras=arch.startswith("xlsr"))
    det, report = convert(arch, g, state)
    assert report.mapped + len(report.ignored) == len(state)
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        ours = det(wave)
        ref = reference_logits(state, wave, g, prefix, s3prl=s3prl)
    assert ours.shape == ref.shape == (2, g.n_logits)
    assert float(ref.abs().max()) > 1e-2 and float((ref[0] - ref[1]).abs().max()) > 1e-4
    diff = float((ours - ref).abs().max())
    assert diff <= TOL, f"{arch}/{aggregation}/{pooling}: max abs diff {diff:.2e}"
    # index 1 is bona fide: the official score is what the detector reports as bona_fide_logit
    scores = det.scores_from_logits(ours)
    torch.testing.assert_close(scores.bona_fide_logit, ref[:, -1], atol=TOL, rtol=0)
    expected_raw = ref[:, 0] - ref[:, 1] if g.n_logits == 2 else -ref[:, 0]
    torch.testing.assert_close(scores.raw, expected_raw, atol=2 * TOL, rtol=0)


@pytest.mark.parametrize("arch", ["xlsr300m-nes2net-x", "wavlm-large-nes2net-x"])
def test_official_4s_and_full_modes(arch, tmp_path):
    prefix, s3prl, g = CASES[arch]
    if arch.startswith("wavlm"):
        g = dataclasses.replace(g, aggregation="sea")
    state = official_state(g, prefix, seed=3)
    det, _ = convert(arch, g, state)
    rng = np.random.default_rng(0)
    path = tmp_path / "short.wav"
    sf.write(path, (0.1 * rng.standard_normal(20_800)).astype(np.float32), 16000,
             subtype="FLOAT")
    x = torch.from_numpy(sf.read(path, dtype="float32")[0])
    for mode, wave in (("4s", pad_repeat(x, 64_600)), ("full", x)):
        got = score_file(det, path, mode=mode)
        with torch.no_grad():
            ref = reference_logits(state, wave[None], g, prefix, s3prl=s3prl)
        assert abs(got.windows[0].bona_fide_logit - float(ref[0, -1])) <= TOL + 1e-5 * float(
            ref.abs().max()), mode
        assert got.calibrated is False


def test_pretraining_tensors_are_ignored_and_reported():
    prefix, _, g = CASES["xlsr300m-nes2net-x"]
    state = official_state(g, prefix, pretraining_extras=True)
    _, report = convert("xlsr300m-nes2net-x", g, state)
    assert set(report.ignored) == {
        "ssl_model.model.mask_emb", "ssl_model.model.quantizer.vars",
        "ssl_model.model.quantizer.weight_proj.weight",
        "ssl_model.model.quantizer.weight_proj.bias",
        "ssl_model.model.project_q.weight", "ssl_model.model.project_q.bias",
        "ssl_model.model.final_proj.weight", "ssl_model.model.final_proj.bias"}
    assert "8 ignored (pre-training only)" in report.format()


def test_wrapped_checkpoint_files_convert_identically(tmp_path):
    prefix, _, g = CASES["wavlm-large-nes2net-x-asvspoof5"]
    state = official_state(g, prefix)
    plain, _ = convert("wavlm-large-nes2net-x-asvspoof5", g, state)
    path = tmp_path / "WavLM_Nes2Net_ASVspoof5_best.pth"
    torch.save({"epoch": 3, "model": {"module." + k: v for k, v in state.items()}}, path)
    det, report = convert_checkpoint(path, "wavlm-large-nes2net-x-asvspoof5",
                                     backend_options=backend_options(g),
                                     ssl_overrides=g.hf_overrides())
    assert any("'model'" in n for n in report.notes) and any("module." in n for n in report.notes)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    source = det.metadata["source"]
    assert source["file"] == path.name and source["arch"] == "wavlm-large-nes2net-x-asvspoof5"
    assert source["official_crop_samples"] == 64_600
    assert det.model_id == "wavlm-large-nes2net-x-asvspoof5-WavLM_Nes2Net_ASVspoof5_best"
    assert not det.calibration.fitted
    wave = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        assert torch.equal(det(wave), plain(wave))


def test_mismatches_are_listed_by_official_name():
    prefix, _, g = CASES["xlsr300m-nes2net-x"]
    state = official_state(g, prefix)
    broken = dict(state)
    broken["ssl_model.model.encoder.layers.0.self_attn.extra.weight"] = torch.zeros(2)
    del broken["Nested_Res2Net_TDNN.fc.bias"]
    broken["ssl_model.model.encoder.layers.1.fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(BundleError) as err:
        convert("xlsr300m-nes2net-x", g, broken)
    msg = str(err.value)
    assert "1 unknown: ssl_model.model.encoder.layers.0.self_attn.extra.weight" in msg
    assert "1 missing: backend.fc.bias" in msg
    assert "ssl_model.model.encoder.layers.1.fc1.weight (3, 3) (expected (128, 64))" in msg


def test_wrong_options_get_a_hint_from_the_weights():
    prefix, _, g = CASES["wavlm-large-nes2net-x"]
    g = dataclasses.replace(g, aggregation="weighted_sum", pooling="astp", astp_bottleneck=128)
    state = official_state(g, prefix)
    info = describe_checkpoint(state)
    assert info == {"ssl": "s3prl WavLM (ssl_model.model.model.*)",
                    "aggregation": "weighted_sum", "n_logits": 1, "pooling": "astp",
                    "variant": "nes2net_x", "outer_ratio": 4, "inner_ratio": 4, "se_ratio": 1}
    with pytest.raises(BundleError, match=r"unexpected: Nested_Res2Net_TDNN\.pooling.*"
                                          r"pooling=astp"):
        convert_state_dict(state, "wavlm-large-nes2net-x", aggregation="weighted_sum",
                           backend_options={**backend_options(g), "pooling": "mean"},
                           ssl_overrides=g.hf_overrides())
    with pytest.raises(BundleError, match=r"unknown: ssl_model\.model\.model\..*"
                                          r"ssl=s3prl WavLM"):
        convert_state_dict(state, "xlsr300m-nes2net-x", backend_options=backend_options(g),
                           ssl_overrides=dataclasses.replace(g, wavlm=False).hf_overrides())
    with pytest.raises(BundleError, match="aggregation 'last' is not used"):
        convert_state_dict(state, "wavlm-large-nes2net-x", aggregation="last")
    with pytest.raises(BundleError, match="unknown architecture 'xlsr'"):
        convert_state_dict(state, "xlsr")
    with pytest.raises(BundleError, match=r"unknown wavlm key\(s\) \['hidden'\]"):
        convert_state_dict(state, "wavlm-large-nes2net-x", ssl_overrides={"hidden": 3})


def test_unreadable_and_unsafe_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BundleError, match="not a readable PyTorch checkpoint"):
        convert_checkpoint(bad, "xlsr300m-nes2net-x")
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-6)}, pickled)
    with pytest.raises(BundleError, match="--trust-pickle"):
        convert_checkpoint(pickled, "xlsr300m-nes2net-x")
    with pytest.raises(BundleError, match="checkpoint not found"):
        convert_checkpoint(tmp_path / "missing.pth", "xlsr300m-nes2net-x")
    odd = tmp_path / "odd.pth"
    torch.save({"weights": {"a": torch.zeros(1)}, "step": 3}, odd)
    with pytest.raises(BundleError, match="2 entries are not tensors"):
        convert_checkpoint(odd, "xlsr300m-nes2net-x")


def test_full_size_parameter_counts():
    xlsr = build_detector("xlsr300m-nes2net-x", device="meta")
    # transformers' Wav2Vec2Model at XLS-R 300M geometry; fairseq's model adds ~1.95 M of
    # pre-training-only tensors (quantiser, project_q, final_proj, mask_emb) on top
    assert count_parameters(xlsr.frontend, trainable_only=False) == 315_437_696
    assert count_parameters(xlsr.backend, trainable_only=False) == 512_039
    wavlm = build_detector("wavlm-large-nes2net-x", device="meta")
    ssl = count_parameters(wavlm.frontend.model, trainable_only=False)
    assert ssl == 315_452_096  # WavLM Large: XLS-R geometry without conv biases, plus the
    # relative position embedding (320 x 16) and the per-layer gates (24 x (64 x 8 + 8 + 16))
    assert count_parameters(wavlm.frontend, trainable_only=False) == ssl + 2 * 25 * 8  # SEA
    assert count_parameters(wavlm.backend, trainable_only=False) == 511_014  # one logit
