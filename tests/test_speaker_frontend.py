"""The frozen GE2E speaker-encoder front-end: features, weights, training and bundles."""

import pytest
import torch

from nes2net_stream import load_model, save_model
from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import (
    BackendConfig,
    SpeakerEncoderConfig,
    frontend_from_dict,
    frontend_to_dict,
)
from nes2net_stream.models.detector import Detector
from nes2net_stream.models.speaker_frontend import (
    SpeakerFrontend,
    read_ge2e_weights,
    slaney_mel_filterbank,
)
from nes2net_stream.training.trainer import TrainConfig, _param_groups

SMALL = SpeakerEncoderConfig(hidden_size=16, source="test")


def ge2e_file(tmp_path, hidden=16, layers=3, seed=0):
    """A checkpoint in the Resemblyzer layout with random weights, and the LSTM it holds."""
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(40, hidden, layers, batch_first=True)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    state["linear.weight"] = torch.randn(hidden, hidden)
    path = tmp_path / "pretrained.pt"
    torch.save({"step": 1, "model_state": state, "optimizer_state": {}}, path)
    return path, lstm


def test_mel_filterbank_matches_the_slaney_reference():
    fb = slaney_mel_filterbank(40, 400)
    assert fb.shape == (201, 40) and (fb >= 0).all() and (fb.sum(0) > 0).all()
    # reference values: librosa 0.11.0, filters.mel(sr=16000, n_fft=400, n_mels=40), transposed
    for (i, j), ref in {(2, 0): 0.012404520995914936, (10, 5): 0.005939744878560305,
                        (60, 25): 0.0006526855286210775,
                        (150, 37): 0.0004176159854978323}.items():
        assert float(fb[i, j]) == pytest.approx(ref, rel=1e-5)
    peaks = fb.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all()  # centres rise with the band index


def test_features_shape_and_gain_invariance():
    fe = SpeakerFrontend(SMALL)
    x = torch.randn(2, 16000) * 0.05
    y = fe(x)
    assert y.shape == (2, 16, 101) and torch.isfinite(y).all()
    assert torch.allclose(fe(x), fe(4 * x), atol=1e-4)  # each window is volume-normalised
    silent = fe(torch.zeros(1, 16000))
    assert torch.isfinite(silent).all()


def test_lstm_keeps_float32_under_autocast():
    """The service's bf16 autocast does not reach the frozen recurrent layers."""
    fe = SpeakerFrontend(SMALL).eval()
    x = torch.randn(2, 16000) * 0.05
    with torch.no_grad():
        ref = fe(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fe(x)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_a_cast_of_the_model_leaves_the_encoder_in_float32():
    """The service's default bf16 cast (dtype_mode = "weights"): the encoder keeps its exact
    float32 weights, the back-end is cast, features come out in the waveform's dtype."""
    det = small_detector().eval()
    weights = {k: v.clone() for k, v in det.frontend.layers.state_dict().items()}
    x = torch.randn(2, 16000) * 0.05
    with torch.no_grad():
        ref = det.frontend(x.bfloat16().float())
        det.to(torch.bfloat16)
        assert all(torch.equal(v, weights[k])
                   for k, v in det.frontend.layers.state_dict().items())
        assert next(det.backend.parameters()).dtype == torch.bfloat16
        got = det.frontend(x.bfloat16())
        assert got.dtype == torch.bfloat16 and torch.equal(got, ref.bfloat16())
        assert det(x.bfloat16()).dtype == torch.bfloat16
        det.float()
        assert torch.equal(det.frontend(x.bfloat16().float()), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bundled_model_on_cuda_in_bf16_matches_the_cpu():
    """The bundled demo model as the service runs it on a GPU (whole model cast to bf16, the
    speaker encoder kept in float32) scores the sample calls' windows like the CPU."""
    from nes2net_stream.audio.io import load_audio
    from nes2net_stream.demo import sample_path

    cpu = load_model("builtin:demo")
    gpu = load_model("builtin:demo", device="cuda").to(torch.bfloat16)
    for name in ("human_call.wav", "synthetic_call.wav"):
        wave = torch.from_numpy(load_audio(sample_path(name)).samples)
        windows = wave[: wave.numel() // 16_000 * 16_000].unfold(0, 64_000, 16_000)
        with torch.no_grad():
            ref = cpu.score(windows).llr
            got = gpu.score(windows.to("cuda", torch.bfloat16)).llr.float().cpu()
        assert (got - ref).abs().max() < 0.25, name
        assert ((got > 0) == (ref > 0)).float().mean() > 0.9, name


def test_loaded_layers_reproduce_the_stacked_encoder(tmp_path):
    path, lstm = ge2e_file(tmp_path)
    fe = SpeakerFrontend(SMALL)
    fe.load_encoder(read_ge2e_weights(path))
    x = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        mel = fe.mel_frames(x)
        ref, _ = lstm(mel)
        h = mel
        for layer in fe.layers:
            h, _ = layer(h)
        # the output mixes the layers, equal weights before training
        mixed = fe(x)
    assert torch.allclose(h, ref, atol=1e-6)
    assert torch.allclose(fe.layer_weights(), torch.full((3,), 1 / 3))
    assert mixed.shape == (1, 16, 51)


def test_weight_file_errors(tmp_path):
    with pytest.raises(BundleError, match="not a file"):
        read_ge2e_weights(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BundleError, match="cannot read"):
        read_ge2e_weights(garbage)
    other = tmp_path / "other.pt"
    torch.save({"model_state": {"conv.weight": torch.zeros(2)}}, other)
    with pytest.raises(BundleError, match="no 'lstm"):
        read_ge2e_weights(other)
    path, _ = ge2e_file(tmp_path, hidden=8)
    with pytest.raises(BundleError, match="has shape"):
        SpeakerFrontend(SMALL).load_encoder(read_ge2e_weights(path))
    two_layers, _ = ge2e_file(tmp_path, layers=2)
    with pytest.raises(BundleError, match="missing lstm.weight_ih_l2"):
        SpeakerFrontend(SMALL).load_encoder(read_ge2e_weights(two_layers))


def test_config_validation_and_round_trip():
    assert frontend_from_dict(frontend_to_dict(SMALL)) == SMALL
    assert frontend_to_dict(SMALL)["type"] == "speaker"
    with pytest.raises(BundleError, match="frontend.speaker: unknown key"):
        frontend_from_dict({"type": "speaker", "layers": 3})
    with pytest.raises(BundleError, match="target_dbfs"):
        frontend_from_dict({"type": "speaker", "target_dbfs": 5.0})
    with pytest.raises(BundleError, match="is not one of"):
        frontend_from_dict({"type": "mfcc"})


def small_detector():
    torch.manual_seed(0)
    return Detector(SMALL, BackendConfig(input_dim=16, outer_ratio=4, inner_ratio=2, se_ratio=2))


def test_only_the_layer_mix_and_back_end_train():
    det = small_detector()
    cfg = TrainConfig(lr=1e-2, frontend_lr=1e-6)
    groups = _param_groups(det, cfg)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-2
    trained = {id(p) for p in groups[0]["params"]}
    assert id(det.frontend.layer_logits) in trained
    assert not any(id(p) in trained for p in det.frontend.layers.parameters())
    before = [p.clone() for p in det.frontend.layers.parameters()]
    opt = torch.optim.Adam(groups)
    det.train()
    for _ in range(3):
        loss = det(torch.randn(4, 8000) * 0.1)[:, 0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, det.frontend.layers.parameters(),
                                                  strict=True))
    assert not torch.allclose(det.frontend.layer_weights(), torch.full((3,), 1 / 3))


def test_bundle_round_trip_keeps_encoder_and_scores(tmp_path):
    det = small_detector().eval()
    with torch.no_grad():
        det.frontend.layer_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    path = save_model(det, tmp_path / "bundle")
    again = load_model(path)
    assert isinstance(again.frontend, SpeakerFrontend)
    assert again.frontend_cfg == SMALL
    wave = torch.randn(3, 16000) * 0.1
    with torch.no_grad():
        assert torch.allclose(det(wave), again(wave), atol=1e-6)


def test_train_command_with_speaker_front_end(toy_corpus, tmp_path, capsys, monkeypatch):
    from nes2net_stream.cli import main
    from nes2net_stream.models import speaker_frontend

    weights, _ = ge2e_file(tmp_path, hidden=256)
    out = tmp_path / "model"
    common = ["train", "--database", str(toy_corpus), "--frontend", "speaker",
              "--outer-ratio", "4", "--inner-ratio", "4", "--epochs", "1", "--batch-size", "4",
              "--max-batches", "2", "--segment-s", "1.0", "--average-best", "1",
              "--bn-recalibration-batches", "1", "--no-augment", "--device", "cpu",
              "--no-progress", "--no-calibrate"]
    code = main([*common, "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--speaker-weights", str(weights)])
    assert code == 0, capsys.readouterr().err
    model = load_model(out)
    assert isinstance(model.frontend, SpeakerFrontend)
    assert model.frontend_cfg.source == "GE2E LSTM from pretrained.pt"
    ref = read_ge2e_weights(weights)
    assert torch.equal(model.frontend.layers[1].weight_hh_l0, ref["lstm.weight_hh_l1"])
    # neither a weights file nor the package that ships one: a usage error naming both
    monkeypatch.setattr(speaker_frontend, "installed_resemblyzer_weights", lambda: None)
    code = main([*common, "--run-dir", str(tmp_path / "run2")])
    assert code != 0
    assert "--speaker-weights" in capsys.readouterr().err


def test_layer_probe_script(toy_corpus, tmp_path):
    """scripts/probe_speaker_layers.py: one eval EER per feature set and C, as JSON lines."""
    import importlib.util
    import json
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    weights, _ = ge2e_file(tmp_path, hidden=256)
    script = Path(__file__).resolve().parents[1] / "scripts" / "probe_speaker_layers.py"
    out = subprocess.run([sys.executable, str(script), str(toy_corpus), "--speaker-weights",
                          str(weights)], capture_output=True, text=True, timeout=300, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {(r["features"], r["C"]) for r in rows} == {
        (f, c) for f in ("logmel", "layer1", "layer2", "layer3", "all_layers")
        for c in (0.01, 0.1, 1.0)}
    assert all(0.0 <= r["eval_eer_pct"] <= 100.0 for r in rows)
    # one setting, its eval scores written for compare: one line per eval trial
    scores = tmp_path / "probe-scores"
    out = subprocess.run([sys.executable, str(script), str(toy_corpus), "--speaker-weights",
                          str(weights), "--features", "layer2", "--c", "0.1", "--scores-out",
                          str(scores)], capture_output=True, text=True, timeout=300, check=True)
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert (row["features"], row["C"]) == ("layer2", 0.1)
    lines = (scores / "layer2-C0.1.txt").read_text().splitlines()
    key = next(toy_corpus.glob("ASVspoof2019_LA_cm_protocols/*eval*"))
    assert [ln.split()[0] for ln in lines] == [ln.split()[1] for ln in
                                              key.read_text().splitlines()]
    # the classifier itself: separable data is separated, balanced weights centre the bias
    spec = importlib.util.spec_from_file_location("probe", script)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 0.3, (40, 2)), rng.normal(1, 0.3, (10, 2))])
    y = np.r_[np.zeros(40), np.ones(10)]
    w, b = probe.fit_logistic(x, y, 1.0)
    assert ((x @ w + b > 0) == (y > 0)).all()


def test_single_layer_option(tmp_path):
    """layer=k: layer k's states alone, nothing above it computed, nothing of the mix trained."""
    path, lstm = ge2e_file(tmp_path)
    cfg = SpeakerEncoderConfig(hidden_size=16, layer=2)
    fe = SpeakerFrontend(cfg)
    fe.load_encoder(read_ge2e_weights(path))
    x = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        h = fe.mel_frames(x)
        for i in range(2):  # the file's first two layers, stacked
            h, _ = lstm_layer(lstm, i)(h)
        assert torch.allclose(fe(x), h.transpose(1, 2), atol=1e-6)
    assert len(fe.layers) == 2  # the third is neither built nor stored
    assert not any(k.startswith("layers.2.") for k in fe.state_dict())
    assert fe.head_parameters() == [] and not fe.layer_logits.requires_grad
    det = Detector(cfg, BackendConfig(input_dim=16, outer_ratio=4, inner_ratio=2, se_ratio=2))
    groups = _param_groups(det, TrainConfig(lr=1e-2))
    assert not any(p is det.frontend.layer_logits for g in groups for p in g["params"])
    with pytest.raises(BundleError, match="layer must be"):
        frontend_from_dict({"type": "speaker", "layer": 4})


def lstm_layer(lstm: torch.nn.LSTM, i: int) -> torch.nn.LSTM:
    """Layer ``i`` of a stacked LSTM as a one-layer LSTM."""
    one = torch.nn.LSTM(lstm.input_size if i == 0 else lstm.hidden_size, lstm.hidden_size, 1,
                        batch_first=True)
    one.load_state_dict({k[:-1] + "0": v for k, v in lstm.state_dict().items()
                         if k.endswith(f"_l{i}")})
    return one


def test_bundle_storing_unused_layers_still_loads(tmp_path):
    """A layer-k bundle written when every encoder layer was stored loads to the same scores."""
    import json

    from safetensors.torch import load_file, save_file

    from nes2net_stream.bundle import _sha256

    path, lstm = ge2e_file(tmp_path)
    cfg = SpeakerEncoderConfig(hidden_size=16, layer=2)
    det = Detector(cfg, BackendConfig(input_dim=16, outer_ratio=4, inner_ratio=2, se_ratio=2))
    det.frontend.load_encoder(read_ge2e_weights(path))
    bundle = save_model(det.eval(), tmp_path / "bundle")
    weights = bundle / "model.safetensors"
    state = load_file(str(weights))
    third = lstm_layer(lstm, 2).state_dict()
    state.update({f"frontend.layers.2.{k}": v for k, v in third.items()})
    save_file(state, str(weights), metadata={"format": "nes2net-stream-bundle"})
    config = json.loads((bundle / "config.json").read_text())
    config["sha256"]["model.safetensors"] = _sha256(weights)
    (bundle / "config.json").write_text(json.dumps(config))
    again = load_model(bundle)
    assert len(again.frontend.layers) == 2
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        assert torch.equal(det(wave), again(wave))
    # a tensor the network never had is still refused
    state["frontend.extra"] = torch.zeros(1)
    save_file(state, str(weights), metadata={"format": "nes2net-stream-bundle"})
    config["sha256"]["model.safetensors"] = _sha256(weights)
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="unexpected: frontend.extra"):
        load_model(bundle)
