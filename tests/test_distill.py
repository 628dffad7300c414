"""Knowledge distillation: a student trained towards the averaged scores of teacher bundles."""

import json

import numpy as np
import pytest
import torch

from nes2net_stream.bundle import load_model, save_model
from nes2net_stream.errors import ConfigError
from nes2net_stream.models.config import BackendConfig, SpectralConfig
from nes2net_stream.models.detector import Calibration, Detector
from nes2net_stream.training.dataset import ProtocolDataset, load_split
from nes2net_stream.training.distill import Teachers
from nes2net_stream.training.trainer import TrainConfig, Trainer


def _detector(seed: int) -> Detector:
    torch.manual_seed(seed)
    return Detector(SpectralConfig(n_features=32),
                    BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2))


def _teacher_bundles(tmp_path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        det = _detector(100 + i)
        with torch.no_grad():  # a confident, seed-specific teacher
            for p in det.backend.parameters():
                p.mul_(3.0)
        paths.append(str(save_model(det.eval(), tmp_path / f"teacher{i}")))
    return paths


def test_targets_are_the_mean_of_the_teachers_calibrated_llrs(tmp_path):
    paths = _teacher_bundles(tmp_path, 2)
    teachers = Teachers.load(paths, device="cpu", weight=0.5, temperature=2.0)
    teachers.models[0].calibration = Calibration(scale=0.5, offset=1.0, fitted=True)
    x = torch.randn(3, 16000) * 0.1
    each = []
    for i, p in enumerate(paths):
        m = load_model(p)
        with torch.no_grad():
            raw = m.raw_spoof_score(m(x))
        each.append(0.5 * raw + 1.0 if i == 0 else raw)
    assert torch.allclose(teachers.targets(x), (each[0] + each[1]) / 2, atol=1e-5)
    assert all(not p.requires_grad for m in teachers.models for p in m.parameters())
    student = _detector(0)
    logits = student(x)
    hard = torch.tensor(0.7)
    full = Teachers(teachers.models, weight=1.0, temperature=2.0).loss(student, logits, hard, x)
    assert teachers.loss(student, logits, hard, x).item() == pytest.approx(
        0.5 * 0.7 + 0.5 * full.item(), rel=1e-5)


def test_invalid_distillation_settings_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.teacher"):
        Teachers([], weight=0.5, temperature=1.0)
    with pytest.raises(ConfigError, match="distill_weight"):
        Teachers([_detector(0)], weight=0.0, temperature=1.0)
    with pytest.raises(ConfigError, match="distill_temperature"):
        TrainConfig(distill_temperature=0.0)


def _agreement(model: Detector, teachers: Teachers, x: torch.Tensor) -> float:
    with torch.no_grad():
        s = model.raw_spoof_score(model.eval()(x)).numpy()
    t = teachers.targets(x).numpy()
    return float(np.corrcoef(s, t)[0, 1])


def test_a_student_trained_on_teachers_alone_learns_their_scores(toy_corpus, tmp_path):
    paths = _teacher_bundles(tmp_path, 2)
    tr, tr_dir = load_split(toy_corpus, "train")
    dv, dv_dir = load_split(toy_corpus, "dev")
    cfg = TrainConfig(epochs=4, batch_size=8, lr=3e-3, segment_s=1.0, average_best=1, seed=1,
                      teachers=tuple(paths), distill_weight=1.0, distill_temperature=1.0,
                      bn_recalibration_batches=0)
    trainer = Trainer(_detector(7), ProtocolDataset(tr, tr_dir, segment_samples=16000, seed=1),
                      ProtocolDataset(dv, dv_dir, segment_samples=16000, train=False), cfg,
                      tmp_path / "run", progress=False, log=lambda m: None)
    probe = torch.from_numpy(np.stack([ProtocolDataset(
        dv, dv_dir, segment_samples=16000, train=False)[i][0].numpy() for i in range(len(dv))]))
    before = _agreement(_detector(7), trainer.teachers, probe)
    student = trainer.fit()
    after = _agreement(student, trainer.teachers, probe)
    assert after > max(0.8, before + 0.2), (before, after)  # labels played no part
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["train_config"]["teachers"] == paths


def test_train_command_distils_and_records_its_teachers(toy_corpus, tmp_path, capsys):
    from nes2net_stream.cli import main

    paths = _teacher_bundles(tmp_path, 1)
    out = tmp_path / "model"
    args = ["train", "--database", toy_corpus, "--run-dir", tmp_path / "run", "--out", out,
            "--n-features", 32, "--outer-ratio", 4, "--inner-ratio", 2, "--se-ratio", 2,
            "--epochs", 1, "--batch-size", 4, "--max-batches", 2, "--segment-s", 1.0,
            "--average-best", 1, "--bn-recalibration-batches", 1, "--no-augment",
            "--device", "cpu", "--no-progress", "--teacher", paths[0],
            "--distill-weight", 0.7]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    config = load_model(out).metadata["training"]["config"]
    assert config["teachers"] == paths and config["distill_weight"] == 0.7
    bad = ["train", "--database", str(toy_corpus), "--run-dir", str(tmp_path / "r2"),
           "--teacher", str(tmp_path / "missing")]
    assert main(bad) != 0


def test_runs_started_before_the_distillation_settings_still_resume(toy_corpus, tmp_path):
    tr, tr_dir = load_split(toy_corpus, "train")
    dv, dv_dir = load_split(toy_corpus, "dev")

    def trainer(epochs: int) -> Trainer:
        cfg = TrainConfig(epochs=epochs, batch_size=8, segment_s=1.0, average_best=1,
                          max_batches=2, bn_recalibration_batches=0)
        return Trainer(_detector(0), ProtocolDataset(tr, tr_dir, segment_samples=16000),
                       ProtocolDataset(dv, dv_dir, segment_samples=16000, train=False), cfg,
                       tmp_path / "run", progress=False, log=logged.append)

    logged: list[str] = []
    trainer(1).fit()
    path = tmp_path / "run" / "state.json"
    state = json.loads(path.read_text())
    for key in ("teachers", "distill_weight", "distill_temperature"):
        del state["train_config"][key]
    path.write_text(json.dumps(state))
    trainer(2).fit()
    assert any("after epoch 1" in m for m in logged)
