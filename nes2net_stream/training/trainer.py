"""Training loop: weighted cross-entropy, augmentation, seeds, resume, checkpoint averaging.

A run directory holds ``state.json`` (configuration and per-epoch dev metrics), one checkpoint
per kept epoch (model, optimiser, scheduler) and, at the end, the model bundle. Re-running the
same command on the same run directory resumes after the last completed epoch (``--epochs``
may be raised to train longer).
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from nes2net_stream.errors import ConfigError, DataError
from nes2net_stream.evaluation.metrics import compute_eer
from nes2net_stream.models.detector import Detector
from nes2net_stream.training.checkpoints import (
    atomic_torch_save,
    atomic_write_json,
    average_state_dicts,
    load_checkpoint,
)
from nes2net_stream.training.dataset import ProtocolDataset
from nes2net_stream.training.distill import Teachers, temperature_ok, weight_ok
from nes2net_stream.training.masking import mask_features


@dataclass
class TrainConfig:
    """Optimisation settings (stored in ``state.json`` and the bundle metadata).

    Attributes:
        epochs: number of epochs.
        batch_size: training batch size.
        lr: learning rate of the back-end (and of a spectral front-end, which has no weights).
        frontend_lr: learning rate of an SSL front-end being fine-tuned (the official Nes2Net
            recipes fine-tune everything at 1e-6).
        weight_decay: Adam weight decay.
        class_weights: cross-entropy weights of (spoof, bona fide); the official recipe uses
            (0.1, 0.9) to counter the spoof-heavy ASVspoof training set.
        schedule: ``cosine`` annealing over the epochs, or ``constant``.
        segment_s: training crop length in seconds.
        average_best: number of best epochs (by dev EER, then dev loss) averaged at the end.
        seed: seed of every random generator (crops, augmentation, initialisation, order).
        max_batches: stop each epoch after this many batches (quick experiments and tests).
        num_workers: data-loader worker processes.
        grad_clip: gradient-norm clipping (0 disables).
        balance: sample crops so that every bona fide speaker and every spoofing system gets
            the same share of its class and both classes the same share of each epoch (use
            equal class weights with it); without it a dominant speaker dominates training.
        bn_recalibration_batches: after averaging, re-estimate the batch-norm statistics on
            this many batches of un-augmented training crops (0 disables); averaged weights
            with averaged statistics do not match, and augmented statistics do not match clean
            test audio.
        mask_channels: widest band of back-end input channels zeroed in training, two per crop
            (0 disables; :mod:`nes2net_stream.training.masking`).
        mask_frames: longest span of frames zeroed in training, two per crop (0 disables).
        speech_crops: share of training crops cut from the VAD speech stream, as the live
            service scores it (:class:`~nes2net_stream.training.dataset.ProtocolDataset`).
        teachers: bundles whose averaged scores the model is also trained towards
            (:mod:`nes2net_stream.training.distill`); empty: no distillation.
        distill_weight: share of the distillation loss in the total (with teachers).
        distill_temperature: softening temperature of both scores in the distillation loss.
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    frontend_lr: float = 1e-6
    weight_decay: float = 1e-4
    class_weights: tuple[float, float] = (0.1, 0.9)
    schedule: str = "cosine"
    segment_s: float = 4.0
    average_best: int = 3
    seed: int = 0
    max_batches: int | None = None
    num_workers: int = 0
    grad_clip: float = 5.0
    balance: bool = False
    bn_recalibration_batches: int = 50
    mask_channels: int = 0
    mask_frames: int = 0
    speech_crops: float = 0.0
    teachers: tuple[str, ...] = ()
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0, "frontend_lr": self.frontend_lr >= 0,
            "weight_decay": self.weight_decay >= 0, "segment_s": 0.5 <= self.segment_s <= 30,
            "average_best": self.average_best >= 1, "num_workers": self.num_workers >= 0,
            "schedule": self.schedule in ("cosine", "constant"),
            "class_weights": len(self.class_weights) == 2 and min(self.class_weights) > 0,
            "mask_channels": self.mask_channels >= 0, "mask_frames": self.mask_frames >= 0,
            "speech_crops": 0.0 <= self.speech_crops <= 1.0,
            "distill_weight": weight_ok(self.distill_weight),
            "distill_temperature": temperature_ok(self.distill_temperature),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"train: invalid value for {', '.join(bad)}")
        self.class_weights = tuple(float(w) for w in self.class_weights)  # type: ignore[assignment]
        self.teachers = tuple(str(t) for t in self.teachers)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        class_weights: tuple[float, float]) -> torch.Tensor:
    """Weighted cross-entropy (2 logits) or weighted binary cross-entropy (1 bona fide logit)."""
    w = torch.tensor(class_weights, dtype=logits.dtype, device=logits.device)
    if logits.shape[-1] == 2:
        return F.cross_entropy(logits, labels, weight=w)
    target = labels.to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
    weights = w[labels]
    return (per * weights).sum() / weights.sum()


def _param_groups(model: Detector, cfg: TrainConfig) -> list[dict[str, Any]]:
    # a front-end's small trainable head (e.g. a frozen encoder's layer mix) learns at the
    # back-end's rate; the rest of a front-end at frontend_lr
    head = [p for p in getattr(model.frontend, "head_parameters", list)() if p.requires_grad]
    head_ids = {id(p) for p in head}
    front = [p for p in model.frontend.parameters() if p.requires_grad and id(p) not in head_ids]
    back = [p for p in model.backend.parameters() if p.requires_grad] + head
    groups = [{"params": back, "lr": cfg.lr}]
    if front and cfg.frontend_lr > 0:
        groups.append({"params": front, "lr": cfg.frontend_lr})
    elif front:
        for p in front:
            p.requires_grad_(False)
    return groups


@dataclass
class EpochResult:
    """Metrics of one epoch."""

    epoch: int
    train_loss: float
    dev_loss: float
    dev_eer: float
    seconds: float


class Trainer:
    """Train a :class:`Detector` on a training set, select and average epochs on a dev set."""

    def __init__(self, model: Detector, train_set: ProtocolDataset, dev_set: ProtocolDataset,
                 cfg: TrainConfig, run_dir: str | Path, *, device: str = "cpu",
                 progress: bool = True, log: Callable[[str], None] | None = None):
        self.model = model.to(device)
        self.teachers = (Teachers.load(cfg.teachers, device=device, weight=cfg.distill_weight,
                                       temperature=cfg.distill_temperature)
                         if cfg.teachers else None)
        self.train_set = train_set
        self.dev_set = dev_set
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.optimizer = torch.optim.Adam(_param_groups(model, cfg), weight_decay=cfg.weight_decay)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs,
                                                       eta_min=cfg.lr * 0.01)
            if cfg.schedule == "cosine" else None
        )
        self.history: list[EpochResult] = []

    @property
    def state_path(self) -> Path:
        """The run's ``state.json``."""
        return self.run_dir / "state.json"

    def _ckpt(self, epoch: int) -> Path:
        return self.run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt"

    def _try_resume(self) -> int:
        """Load the last completed epoch if this run directory has one; return next epoch."""
        if not self.state_path.is_file():
            return 1
        import json

        state = json.loads(self.state_path.read_text(encoding="utf-8"))
        new = _jsonable(dataclasses.asdict(self.cfg))
        # settings added since that run was started had their defaults then
        defaults = _jsonable(dataclasses.asdict(TrainConfig()))
        old = {**{k: defaults[k] for k in new}, **(state.get("train_config") or {})}
        old.pop("epochs", None)
        if old != {k: v for k, v in new.items() if k != "epochs"}:
            raise ConfigError(f"{self.run_dir} holds a run with a different configuration; "
                              "use a new --run-dir or the same options to resume")
        self.history = [EpochResult(**e) for e in state.get("epochs", [])]
        if not self.history:
            return 1
        last = self.history[-1].epoch
        ckpt = load_checkpoint(self._ckpt(last))
        self.model.load_state_dict(self.model.compatible_state(ckpt["model"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scheduler.T_max = self.cfg.epochs  # more epochs may be asked for on resume
        torch.set_rng_state(ckpt["torch_rng"])
        self.log(f"resuming {self.run_dir} after epoch {last}")
        return last + 1

    def _save_state(self, finished: bool = False) -> None:
        atomic_write_json({
            "train_config": _jsonable(dataclasses.asdict(self.cfg)),
            "model": self.model.describe(),
            "epochs": [dataclasses.asdict(e) for e in self.history],
            "finished": finished,
        }, self.state_path)

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training set; returns the mean loss."""
        self.model.train()
        self.train_set.set_epoch(epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        sampler = None
        if self.cfg.balance:
            sampler = torch.utils.data.WeightedRandomSampler(
                torch.from_numpy(self.train_set.balance_weights()), len(self.train_set),
                replacement=True, generator=gen)
        loader = DataLoader(self.train_set, batch_size=self.cfg.batch_size,
                            shuffle=sampler is None, sampler=sampler,
                            drop_last=len(self.train_set) > self.cfg.batch_size, generator=gen,
                            num_workers=self.cfg.num_workers)
        masks = torch.Generator().manual_seed(2 * (self.cfg.seed * 1000 + epoch) + 1)
        # workers are forked per epoch and inherit the preloaded cache; the epoch number
        # travels with the dataset, so crops and augmentation differ per epoch
        total, count = 0.0, 0
        n_batches = len(loader) if self.cfg.max_batches is None else min(len(loader),
                                                                         self.cfg.max_batches)
        bar = tqdm(loader, total=n_batches, desc=f"epoch {epoch}", unit="batch",
                   disable=not self.progress, file=sys.stderr, leave=False)
        for i, (x, y) in enumerate(bar):
            if i >= n_batches:
                break
            x, y = x.to(self.device), y.to(self.device)
            logits = self._forward(x, masks)
            loss = classification_loss(logits, y, self.cfg.class_weights)
            if self.teachers is not None:
                loss = self.teachers.loss(self.model, logits, loss, x)
            if not torch.isfinite(loss):
                raise DataError(f"non-finite training loss at epoch {epoch}, batch {i}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        return total / max(count, 1)

    def _forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Training logits, with the back-end's input masked when configured."""
        if not (self.cfg.mask_channels or self.cfg.mask_frames):
            return self.model(x)
        feats = mask_features(self.model.frontend(x), max_channels=self.cfg.mask_channels,
                              max_frames=self.cfg.mask_frames, generator=gen)
        return self.model.backend(feats)

    @torch.inference_mode()
    def evaluate(self, dataset: ProtocolDataset) -> tuple[float, float, np.ndarray]:
        """Dev loss, EER and the raw spoof scores of every trial."""
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.cfg.batch_size, shuffle=False)
        losses, raws = [], []
        for x, y in loader:
            logits = self.model(x.to(self.device))
            losses.append(float(classification_loss(logits, y.to(self.device),
                                                     self.cfg.class_weights)) * x.shape[0])
            raws.append(self.model.raw_spoof_score(logits).float().cpu().numpy())
        raw = np.concatenate(raws)
        labels = dataset.labels()
        eer, _ = compute_eer(-raw[labels == 1], -raw[labels == 0])
        return sum(losses) / len(dataset), float(eer), raw

    def fit(self) -> Detector:
        """Train all epochs (resuming if possible), then average the best ones."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        seed_everything(self.cfg.seed)
        self.train_set.preload(self.progress)
        self.dev_set.preload(self.progress)
        start = self._try_resume()
        for epoch in range(start, self.cfg.epochs + 1):
            t0 = time.monotonic()
            train_loss = self.train_epoch(epoch)
            dev_loss, dev_eer, _ = self.evaluate(self.dev_set)
            if self.scheduler is not None:
                self.scheduler.step()
            result = EpochResult(epoch, round(train_loss, 6), round(dev_loss, 6),
                                 round(dev_eer, 6), round(time.monotonic() - t0, 2))
            self.history.append(result)
            atomic_torch_save({
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
            }, self._ckpt(epoch))
            self._prune_checkpoints()
            self._save_state()
            self.log(f"epoch {epoch}: train loss {train_loss:.4f}  dev loss {dev_loss:.4f}  "
                     f"dev EER {100 * dev_eer:.2f}%  ({result.seconds:.0f} s)")
        best = self.best_epochs()
        states = [self.model.compatible_state(load_checkpoint(self._ckpt(e))["model"])
                  for e in best]
        self.model.load_state_dict(average_state_dicts(states))
        if self.cfg.bn_recalibration_batches:
            self.recalibrate_batchnorm(self.cfg.bn_recalibration_batches)
        self.model.eval()
        self._save_state(finished=True)
        self.log(f"averaged epochs {best}")
        return self.model

    @torch.no_grad()
    def recalibrate_batchnorm(self, batches: int) -> None:
        """Re-estimate batch-norm running statistics on clean (un-augmented) training crops."""
        norms = [m for m in self.model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        saved = [(m, m.momentum) for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the recalibration batches
        augment, self.train_set.augment = self.train_set.augment, None
        self.train_set.set_epoch(0)
        self.model.train()
        gen = torch.Generator().manual_seed(self.cfg.seed)
        loader = DataLoader(self.train_set, batch_size=self.cfg.batch_size, shuffle=True,
                            generator=gen)
        try:
            for i, (x, _) in enumerate(loader):
                if i >= batches:
                    break
                self.model(x.to(self.device))
        finally:
            self.train_set.augment = augment
            for m, momentum in saved:
                m.momentum = momentum
        self.model.eval()

    def best_epochs(self) -> list[int]:
        """Epochs with the lowest dev EER (ties broken by dev loss)."""
        ranked = sorted(self.history, key=lambda e: (e.dev_eer, e.dev_loss))
        return sorted(e.epoch for e in ranked[: self.cfg.average_best])

    def _prune_checkpoints(self) -> None:
        keep = set(self.best_epochs()) | {self.history[-1].epoch}
        for path in (self.run_dir / "checkpoints").glob("epoch_*.pt"):
            epoch = int(path.stem.split("_")[1])
            if epoch not in keep:
                path.unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
