"""The detector: front-end + Nes2Net back-end + the project's score convention.

Score convention (documented for users in docs/scores.md):

* ``raw`` is the uncalibrated spoof log-odds of the network: ``logit[0] - logit[1]`` for
  two-logit models (official index 1 = bona fide) and ``-logit`` for single-logit models.
* ``llr`` is the calibrated log-likelihood ratio ``log p(x | spoof) / p(x | bona fide)``:
  ``llr = scale * raw + offset``. Positive means "more likely synthetic". Without a fitted
  calibration the map is the identity and ``calibrated`` is false.
* ``spoof_probability = sigmoid(llr + log(prior / (1 - prior)))`` with the bundle's
  ``spoof_prior`` (0.5 by default, i.e. ``sigmoid(llr)``): a number in [0, 1], higher is more
  likely synthetic.
* ``bona_fide_logit`` is the official score of the published scripts (logit index 1), kept
  so results can be compared with theirs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import (
    BackendConfig,
    FrontendConfig,
    SpeakerEncoderConfig,
    SpectralConfig,
    SSLConfig,
    frontend_from_dict,
    frontend_to_dict,
)
from nes2net_stream.models.fused_norms import NormKernels
from nes2net_stream.models.nes2net import Nes2Net
from nes2net_stream.models.speaker_frontend import SpeakerFrontend
from nes2net_stream.models.spectral import SpectralFrontend
from nes2net_stream.models.ssl_frontend import SSLFrontend
from nes2net_stream.scoring.aggregate import llr_probability

RawT = TypeVar("RawT", torch.Tensor, float)


@dataclass(frozen=True)
class Calibration:
    """Affine map from the raw spoof score to a spoof-vs-bona-fide log-likelihood ratio."""

    scale: float = 1.0
    offset: float = 0.0
    fitted: bool = False
    spoof_prior: float = 0.5
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)):
            raise BundleError("calibration: scale and offset must be finite numbers")
        if not 0.0 < self.spoof_prior < 1.0:
            raise BundleError("calibration.spoof_prior must be in (0, 1)")

    def llr(self, raw: RawT) -> RawT:
        """Calibrated log-likelihood ratio of raw spoof scores (a tensor, any device; a float)."""
        return raw * self.scale + self.offset

    def probability(self, llr: float) -> float:
        """Spoof probability of one calibrated LLR at this calibration's prior."""
        return llr_probability(llr, self.spoof_prior)

    def write(self, path: str | Path) -> Path:
        """Write this calibration as JSON (the form :meth:`read` and bundles use)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return p

    @classmethod
    def read(cls, path: str | Path) -> Calibration:
        """A fitted calibration from a file (a bundle's, or from ``eval --calibration-out``).

        Raises:
            BundleError: a missing, unreadable, invalid or unfitted calibration, naming the file.
        """
        p = Path(path)
        try:
            cal = cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except OSError as exc:
            raise BundleError(f"{p}: cannot read the calibration ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise BundleError(f"{p}: not JSON ({exc.msg})") from None
        except (BundleError, TypeError) as exc:
            raise BundleError(f"{p}: {exc}") from None
        if not cal.fitted:
            raise BundleError(f"{p}: the calibration is not fitted")
        return cal

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary for the bundle's calibration.json."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Validate and build; an empty dict means "not calibrated"."""
        if not isinstance(data, dict):
            raise BundleError("calibration: expected a JSON object")
        if not data:
            return cls()
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise BundleError(f"calibration: unknown key(s) {sorted(unknown)}")
        for key in ("scale", "offset", "spoof_prior"):
            if key in data and not isinstance(data[key], int | float):
                raise BundleError(f"calibration.{key}: expected a number, got {data[key]!r}")
        return cls(**data)


@dataclass(frozen=True)
class Scores:
    """Scores of a batch of windows (1-D tensors on the CPU, float32)."""

    raw: torch.Tensor
    llr: torch.Tensor
    spoof_probability: torch.Tensor
    bona_fide_logit: torch.Tensor


def build_frontend(cfg: FrontendConfig) -> nn.Module:
    """Instantiate a front-end module from its configuration."""
    if isinstance(cfg, SpectralConfig):
        return SpectralFrontend(cfg)
    if isinstance(cfg, SSLConfig):
        return SSLFrontend(cfg)
    if isinstance(cfg, SpeakerEncoderConfig):
        return SpeakerFrontend(cfg)
    raise BundleError(f"unsupported front-end configuration {type(cfg).__name__}")


class Detector(nn.Module):
    """Front-end + Nes2Net back-end; waveforms (B, S) at 16 kHz to logits (B, n_logits)."""

    sample_rate = 16_000

    def __init__(self, frontend: FrontendConfig, backend: BackendConfig, *,
                 model_id: str = "unnamed", calibration: Calibration | None = None,
                 frontend_module: nn.Module | None = None, metadata: dict[str, Any] | None = None):
        super().__init__()
        self.frontend_cfg = frontend
        self.backend_cfg = backend
        self.frontend = frontend_module if frontend_module is not None else build_frontend(frontend)
        if self.frontend.output_dim != backend.input_dim:
            raise BundleError(f"front-end outputs {self.frontend.output_dim} features but the "
                              f"back-end expects input_dim={backend.input_dim}")
        self.backend = Nes2Net(backend)
        self.model_id = model_id
        self.calibration = calibration or Calibration()
        self.metadata: dict[str, Any] = dict(metadata or {})

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) float waveforms at 16 kHz -> (B, n_logits) logits."""
        return self.backend(self.frontend(wave))

    def compatible_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A stored state dict adapted to this network (tensors older bundles kept unused)."""
        fn = getattr(self.frontend, "compatible_state", None)
        return fn(state, "frontend.") if fn is not None else state

    def conv_geometry(self) -> Any:
        """The front-end's reusable convolutional geometry (see ``ConvGeometry``), or None."""
        fn = getattr(self.frontend, "conv_geometry", None)
        return fn() if fn is not None else None

    def conv_features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, C, frames): the front-end's convolutional feature encoder only."""
        return self.frontend.conv_features(wave)

    def set_conv_impl(self, impl: str) -> bool:
        """Run the SSL convolutional encoder as ``"gemm"`` or ``"native"``; False if no SSL."""
        if not hasattr(self.frontend, "conv_impl"):
            return False
        self.frontend.conv_impl = impl
        return True

    def set_pos_conv_impl(self, impl: str) -> bool:
        """Run the SSL positional convolution ``"fft"`` or ``"native"``; False if no SSL."""
        if not hasattr(self.frontend, "pos_conv_impl"):
            return False
        self.frontend.pos_conv_impl = impl
        return True

    def set_layers_impl(self, impl: str) -> bool:
        """Run the SSL transformer layers ``"fused"`` or ``"native"``; False if no SSL."""
        if not hasattr(self.frontend, "layers_impl"):
            return False
        self.frontend.layers_impl = impl
        return True

    def set_norm_kernels(self, on: bool) -> bool:
        """Run the SSL layer norms as compiled kernels (models/fused_norms.py); False if no SSL."""
        if not hasattr(self.frontend, "use_norm_kernels"):
            return False
        self.frontend.use_norm_kernels(NormKernels() if on else None)
        return True

    def forward_from_conv(self, conv: torch.Tensor) -> torch.Tensor:
        """Logits from precomputed convolutional features (same as :meth:`forward`)."""
        return self.backend(self.frontend.forward_from_conv(conv))

    def raw_spoof_score(self, logits: torch.Tensor) -> torch.Tensor:
        """Uncalibrated spoof log-odds from logits (see the module docstring)."""
        if logits.shape[-1] == 2:
            return logits[..., 0] - logits[..., 1]
        return -logits[..., 0]

    def bona_fide_logit(self, logits: torch.Tensor) -> torch.Tensor:
        """The official scripts' score: logit index 1 (or the single logit)."""
        return logits[..., 1] if logits.shape[-1] == 2 else logits[..., 0]

    def scores_from_logits(self, logits: torch.Tensor) -> Scores:
        """Apply the score convention to a batch of logits."""
        logits = logits.detach().float().cpu()
        raw = self.raw_spoof_score(logits)
        cal = self.calibration
        llr = cal.llr(raw)
        prior_logit = math.log(cal.spoof_prior / (1.0 - cal.spoof_prior))
        return Scores(raw=raw, llr=llr, spoof_probability=torch.sigmoid(llr + prior_logit),
                      bona_fide_logit=self.bona_fide_logit(logits))

    @torch.inference_mode()
    def score(self, wave: torch.Tensor) -> Scores:
        """Score a batch of equal-length windows (B, S) on the module's device."""
        device = next(self.parameters()).device
        return self.scores_from_logits(self(wave.to(device)))

    def describe(self) -> dict[str, Any]:
        """JSON-ready configuration (what a bundle's config.json stores)."""
        return {
            "model_id": self.model_id,
            "sample_rate": self.sample_rate,
            "frontend": frontend_to_dict(self.frontend_cfg),
            "backend": self.backend_cfg.to_dict(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_description(cls, desc: dict[str, Any],
                         calibration: Calibration | None = None) -> Detector:
        """Rebuild an untrained detector from :meth:`describe` output."""
        try:
            frontend = frontend_from_dict(desc["frontend"])
            backend = BackendConfig.from_dict(desc["backend"])
        except KeyError as exc:
            raise BundleError(f"config.json: missing key {exc.args[0]!r}") from exc
        model_id = desc.get("model_id", "unnamed")
        if not isinstance(model_id, str) or not model_id:
            raise BundleError("config.json: model_id must be a non-empty string")
        return cls(frontend, backend, model_id=model_id, calibration=calibration,
                   metadata=desc.get("metadata") or {})
