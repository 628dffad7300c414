import json

import numpy as np
import pytest
import torch

from nes2net_stream.errors import DataError
from nes2net_stream.models.config import BackendConfig, SpectralConfig
from nes2net_stream.models.detector import Detector
from nes2net_stream.training.checkpoints import average_state_dicts
from nes2net_stream.training.dataset import ProtocolDataset, load_split
from nes2net_stream.training.trainer import TrainConfig, Trainer, classification_loss


def make(toy_corpus, tmp_path, epochs=3, **cfg_kw):
    torch.manual_seed(0)
    model = Detector(SpectralConfig(n_features=32),
                     BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2))
    tr, tr_dir = load_split(toy_corpus, "train")
    dv, dv_dir = load_split(toy_corpus, "dev")
    seg = 16000
    opts = dict(epochs=epochs, batch_size=8, lr=3e-3, segment_s=1.0, average_best=2, seed=1)
    cfg = TrainConfig(**{**opts, **cfg_kw})
    return Trainer(model, ProtocolDataset(tr, tr_dir, segment_samples=seg, seed=1),
                   ProtocolDataset(dv, dv_dir, segment_samples=seg, train=False), cfg,
                   tmp_path / "run", progress=False, log=lambda m: None)


def test_training_lowers_the_loss(toy_corpus, tmp_path):
    trainer = make(toy_corpus, tmp_path, epochs=4)
    model = trainer.fit()
    losses = [e.train_loss for e in trainer.history]
    assert losses[-1] < losses[0] * 0.8
    assert trainer.history[-1].dev_eer <= 0.25
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["finished"] and len(state["epochs"]) == 4
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert len(kept) <= 3  # best 2 + the last
    assert not model.training


def test_resume_continues_after_last_epoch(toy_corpus, tmp_path):
    first = make(toy_corpus, tmp_path, epochs=2)
    first.fit()
    second = make(toy_corpus, tmp_path, epochs=3)
    ran = []
    second.log = ran.append
    second.fit()
    assert any("resuming" in m and "after epoch 2" in m for m in ran)
    assert [e.epoch for e in second.history] == [1, 2, 3]
    changed = make(toy_corpus, tmp_path, epochs=3, lr=1e-2)
    with pytest.raises(Exception, match="different configuration"):
        changed.fit()


def test_crops_are_reproducible_and_epoch_dependent(toy_corpus):
    trials, audio = load_split(toy_corpus, "train")
    ds = ProtocolDataset(trials, audio, segment_samples=8000, seed=3)
    a, _ = ds[0]
    b, _ = ds[0]
    ds.set_epoch(1)
    c, _ = ds[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (8000,)


def _is_piece_of(crop: np.ndarray, signal: np.ndarray) -> bool:
    """True when ``crop`` occurs contiguously in ``signal``."""
    if signal.shape[0] < crop.shape[0]:
        return False
    heads = np.lib.stride_tricks.sliding_window_view(signal, 16)
    starts = np.flatnonzero((heads == crop[:16]).all(axis=1))
    return any(np.array_equal(signal[s:s + crop.shape[0]], crop) for s in starts)


def test_speech_crops_come_from_the_vad_speech_stream(toy_corpus):
    from nes2net_stream.audio.vad import VADConfig, speech_stream

    trials, audio = load_split(toy_corpus, "train")
    seg = 16000
    plain = ProtocolDataset(trials, audio, segment_samples=seg, train=True, seed=3)
    speech = ProtocolDataset(trials, audio, segment_samples=seg, train=True, seed=3,
                             speech_crops=1.0)
    for i in range(4):
        stream = speech_stream(speech._audio(i), VADConfig())
        assert seg <= stream.shape[0] < speech._audio(i).shape[0]  # silence dropped
        assert _is_piece_of(speech[i][0].numpy(), stream)
        assert torch.equal(speech[i][0], speech[i][0])  # reproducible
    # raw crops straddle the dropped silences, some of them at least
    assert not all(_is_piece_of(plain[i][0].numpy(), speech._speech_audio(i)) for i in range(12))
    dev = ProtocolDataset(trials, audio, segment_samples=seg, train=False, speech_crops=0.5)
    assert np.array_equal(dev[0][0].numpy(), speech_stream(dev._audio(0), VADConfig())[:seg])
    half = ProtocolDataset(trials, audio, segment_samples=seg, train=True, seed=3,
                           speech_crops=0.5)
    from_speech = [_is_piece_of(half[i][0].numpy(), half._speech_audio(i)) for i in range(12)]
    assert 0 < sum(from_speech) < 12
    with pytest.raises(DataError, match="speech_crops"):
        ProtocolDataset(trials, audio, speech_crops=1.5)


def test_limit_keeps_both_classes(toy_corpus):
    trials, _ = load_split(toy_corpus, "train", limit=6)
    assert len(trials) == 6 and {t.key for t in trials} == {"bonafide", "spoof"}


def test_weighted_losses():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([0, 1])
    w = (0.1, 0.9)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (0.1 * ce[0] + 0.9 * ce[1]) / (0.1 + 0.9)
    assert torch.allclose(classification_loss(logits, labels, w), expected)
    one = torch.tensor([[1.0], [-2.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(one[:, 0], labels.float(),
                                                               reduction="none")
    assert torch.allclose(classification_loss(one, labels, w), (0.1 * bce[0] + 0.9 * bce[1]))


def test_checkpoint_averaging():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 5
    assert np.isfinite(avg["w"].numpy()).all()


def test_balance_weights_equalise_speakers_and_classes(toy_corpus):
    trials, audio = load_split(toy_corpus, "train")
    ds = ProtocolDataset(trials, audio, segment_samples=8000)
    w = ds.balance_weights()
    assert abs(w.sum() - 1) < 1e-9
    bona = sum(wi for wi, t in zip(w, trials, strict=True) if not t.is_spoof)
    assert abs(bona - 0.5) < 1e-9
    per_speaker = {}
    for wi, t in zip(w, trials, strict=True):
        if not t.is_spoof:
            per_speaker[t.speaker] = per_speaker.get(t.speaker, 0) + wi
    assert max(per_speaker.values()) - min(per_speaker.values()) < 1e-9


def test_train_command_records_speech_crops_and_windows_calibration(toy_corpus, tmp_path,
                                                                    capsys):
    from nes2net_stream.bundle import load_model
    from nes2net_stream.cli import main

    out = tmp_path / "model"
    code = main([str(a) for a in (
        "train", "--database", toy_corpus, "--run-dir", tmp_path / "run", "--out", out,
        "--n-features", 32, "--outer-ratio", 4, "--inner-ratio", 4, "--epochs", 1,
        "--batch-size", 4, "--max-batches", 2, "--segment-s", 1.0, "--average-best", 1,
        "--bn-recalibration-batches", 1, "--no-augment", "--device", "cpu", "--no-progress",
        "--speech-crops", 0.5, "--calibration-mode", "windows")])
    assert code == 0, capsys.readouterr().err
    model = load_model(out)
    assert model.metadata["training"]["config"]["speech_crops"] == 0.5
    assert model.calibration.fitted
    assert model.calibration.details["source"].endswith("/dev (windows)")
    assert main(["train", "--database", str(toy_corpus), "--run-dir", str(tmp_path / "r2"),
                 "--speech-crops", "1.5"]) != 0
