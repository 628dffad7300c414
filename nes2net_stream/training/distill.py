"""Knowledge distillation: train a detector towards the averaged scores of teacher detectors.

Teachers are model bundles (any front-end: a large SSL model on a GPU, or several seeds of the
same recipe, whose averaged scores are steadier than any one of them; training.md). Each
training batch, as augmented for the student, also goes through every teacher; their
calibrated spoof log-likelihood ratios (the raw log-odds of a teacher without calibration) are
averaged into one soft target, so teachers of different kinds weigh alike, and the student's
loss becomes

    (1 - w) * weighted cross-entropy(labels) + w * T^2 * BCE(sigmoid(s / T), sigmoid(t / T))

with ``s`` the student's raw spoof log-odds, ``t`` the teachers' mean, ``w`` the distillation
weight and ``T`` the temperature (Hinton et al., "Distilling the Knowledge in a Neural
Network", 2015; the binary form of their softened cross-entropy). Teachers never train and
add only their forward passes to the cost of training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from nes2net_stream.errors import ConfigError
from nes2net_stream.models.detector import Detector


def weight_ok(weight: float) -> bool:
    """Whether ``weight`` is a valid share of the distillation loss: (0, 1]."""
    return 0.0 < weight <= 1.0


def temperature_ok(temperature: float) -> bool:
    """Whether ``temperature`` is a valid softening temperature: positive."""
    return temperature > 0


class Teachers:
    """Frozen teacher detectors whose spoof log-odds are averaged into soft targets."""

    def __init__(self, models: Sequence[Detector], *, weight: float, temperature: float):
        if not models:
            raise ConfigError("train.teacher: distillation needs at least one teacher bundle")
        if not weight_ok(weight):
            raise ConfigError(f"train.distill_weight: {weight} is not in (0, 1]")
        if not temperature_ok(temperature):
            raise ConfigError(f"train.distill_temperature: {temperature} is not positive")
        self.models = list(models)
        for m in self.models:
            m.eval()
            m.requires_grad_(False)
        self.weight = weight
        self.temperature = temperature

    @classmethod
    def load(cls, paths: Sequence[str | Path], *, device: str | torch.device, weight: float,
             temperature: float) -> Teachers:
        """Teachers from bundle paths (directories, archives or ``builtin:NAME``)."""
        from nes2net_stream.bundle import load_model

        return cls([load_model(p, device=device) for p in paths], weight=weight,
                   temperature=temperature)

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """The teachers' mean calibrated spoof LLR for a batch of waveforms ``x`` (B, S)."""
        outs = [m.calibration.llr(m.raw_spoof_score(m(x)).float()) for m in self.models]
        return torch.stack(outs).mean(dim=0)

    def loss(self, student: Detector, logits: torch.Tensor, hard: torch.Tensor,
             x: torch.Tensor) -> torch.Tensor:
        """Blend the hard-label loss ``hard`` with the loss towards the teachers' targets."""
        t = self.temperature
        target = torch.sigmoid(self.targets(x) / t)
        s = student.raw_spoof_score(logits).float() / t
        soft = F.binary_cross_entropy_with_logits(s, target) * t * t
        return (1.0 - self.weight) * hard + self.weight * soft
