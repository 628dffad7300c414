"""Convert the authors' published Nes2Net checkpoints into detectors.

An official checkpoint is the ``state_dict()`` of the whole model: the SSL front-end under
``ssl_model.model.`` (fairseq XLS-R or WavLM) or ``ssl_model.model.model.`` (s3prl's WavLM
expert), the layer aggregation under ``ssl_model.`` and the back-end under
``Nested_Res2Net_TDNN.``. The back-end and aggregation names already match this package's
modules; the SSL names are translated by :mod:`.ssl_names`. Every tensor must be accounted for:
unknown, missing or mis-shaped tensors raise :class:`~nes2net_stream.errors.BundleError` listing
them, and pre-training-only tensors are dropped and reported.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nes2net_stream.errors import BundleError
from nes2net_stream.models.checkpoints.presets import (
    Architecture,
    backend_config,
    get_architecture,
    ssl_config,
)
from nes2net_stream.models.checkpoints.ssl_names import IGNORED, SSLNameMap, weight_norm_names
from nes2net_stream.models.detector import Detector
from nes2net_stream.models.nes2net import count_parameters

BACKEND_PREFIX = "Nested_Res2Net_TDNN."
AGGREGATION_KEYS = ("fc_att_merge.0.weight", "fc_att_merge.2.weight", "weight_hidd", "W", "W1",
                    "W2", "linear_proj.weight", "linear_proj.bias")
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")


@dataclass
class ConversionReport:
    """What a conversion did (printed by ``convert-checkpoint`` and stored in the bundle)."""

    arch: str
    source_file: str | None
    sha256: str | None
    tensors: int
    mapped: int
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frontend_parameters: int = 0
    backend_parameters: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)

    def format(self) -> str:
        """A short human-readable summary."""
        lines = [f"architecture: {self.arch}"]
        if self.source_file:
            lines.append(f"source: {self.source_file} (sha256 {self.sha256})")
        lines.append(f"tensors: {self.tensors} read, {self.mapped} mapped, "
                     f"{len(self.ignored)} ignored (pre-training only)")
        if self.ignored:
            shown = ", ".join(self.ignored[:6]) + (" ..." if len(self.ignored) > 6 else "")
            lines.append(f"ignored: {shown}")
        lines.append(f"parameters: front-end {self.frontend_parameters:,}, "
                     f"back-end {self.backend_parameters:,}")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """Load a ``.pth``/``.pt`` (tensors only unless ``trust_pickle``) or ``.safetensors`` file."""
    src = Path(path)
    if not src.is_file():
        raise BundleError(f"checkpoint not found: {src}")
    if src.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(src))
        except (SafetensorError, OSError) as exc:
            raise BundleError(f"{src}: unreadable safetensors file ({exc})") from exc
    try:
        return torch.load(src, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(src):
            raise BundleError(f"{src}: not a readable PyTorch checkpoint (if it is a legacy, "
                              "non-zip checkpoint from a trusted source, pass --trust-pickle)"
                              ) from exc
        raise BundleError(
            f"{src}: the file holds Python objects besides tensors, which are not loaded by "
            "default because unpickling can run code. If you trust its source, pass "
            "--trust-pickle.") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise BundleError(f"{src}: not a readable PyTorch checkpoint ({exc})") from exc


def unwrap_state(obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The flat state dict inside a checkpoint, with notes on what was unwrapped.

    Accepts a plain state dict, one nested under ``state_dict``/``model`` (training
    checkpoints) and ``module.``-prefixed keys (``DataParallel``).
    """
    notes: list[str] = []
    for _ in range(2):
        if not isinstance(obj, Mapping):
            raise BundleError(f"checkpoint: expected a state dict, got {type(obj).__name__}")
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        notes.append(f"weights taken from the checkpoint's {inner!r} entry")
        obj = obj[inner]
    if not isinstance(obj, Mapping) or not obj:
        raise BundleError("checkpoint: no weights found")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise BundleError(f"checkpoint: {len(bad)} entries are not tensors: {', '.join(bad[:8])}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("'module.' prefix (DataParallel) removed")
    return state, notes


def describe_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the weights reveal about the architecture (used in error messages)."""
    info: dict[str, Any] = {}
    keys = list(state)
    if any(k.startswith("ssl_model.model.model.") for k in keys):
        info["ssl"] = "s3prl WavLM (ssl_model.model.model.*)"
    elif any(k.startswith("ssl_model.model.") for k in keys):
        wavlm = any("grep_linear" in k or "relative_attention_bias" in k for k in keys)
        info["ssl"] = ("WavLM, reference code (ssl_model.model.*)" if wavlm
                       else "fairseq wav2vec 2.0 (ssl_model.model.*)")
    agg = [("sea", "ssl_model.fc_att_merge.0.weight"), ("weighted_sum", "ssl_model.weight_hidd"),
           ("attentive_merge", "ssl_model.W1")]
    info["aggregation"] = next((a for a, k in agg if k in state), "last")
    b = BACKEND_PREFIX
    if b + "fc.weight" in state:
        info["n_logits"] = int(state[b + "fc.weight"].shape[0])
        info["pooling"] = "astp" if b + "pooling.linear1.weight" in state else "mean"
        info["variant"] = ("nes2net_x" if any(".weighted_sum." in k for k in keys)
                           else "nes2net")
        blocks = {m.group(1) for k in keys if (m := re.match(
            re.escape(b) + r"Build_in_Res2Nets\.(\d+)\.", k))}
        info["outer_ratio"] = len(blocks) + 1
        convs = {m.group(1) for k in keys if (m := re.match(
            re.escape(b) + r"Build_in_Res2Nets\.0\.convs\.(\d+)\.weight", k))}
        info["inner_ratio"] = len(convs) + 1
        se = state.get(b + "Build_in_Res2Nets.0.se.se.1.weight")
        if se is not None and se.shape[0]:
            info["se_ratio"] = int(se.shape[1]) // int(se.shape[0])
    return info


def _hint(state: Mapping[str, torch.Tensor]) -> str:
    info = describe_checkpoint(state)
    return ("; the checkpoint looks like: " + ", ".join(f"{k}={v}" for k, v in info.items())
            if info else "")


def _listing(label: str, items: list[str]) -> str:
    more = f" ... (+{len(items) - 12})" if len(items) > 12 else ""
    return f"{len(items)} {label}: " + ", ".join(items[:12]) + more


def map_state(state: Mapping[str, torch.Tensor], arch: Architecture, hf_keys: set[str]
              ) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str], list[str]]:
    """Translate official names to Detector names.

    Returns:
        (mapped state, our name -> official name, ignored official names, unknown names).
    """
    names = SSLNameMap(weight_norm_names(hf_keys))
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        target: str | None = None
        if key.startswith(BACKEND_PREFIX):
            target = "backend." + key[len(BACKEND_PREFIX):]
        elif key.startswith(arch.ssl_prefix):
            inner = names(key[len(arch.ssl_prefix):])
            if inner == IGNORED:
                ignored.append(key)
                continue
            target = None if inner is None else "frontend.model." + inner
        elif key.startswith("ssl_model.") and key[len("ssl_model."):] in AGGREGATION_KEYS:
            target = "frontend." + key[len("ssl_model."):]
        if target is None or target in mapped:
            unknown.append(key)
            continue
        mapped[target] = value
        origin[target] = key
    return mapped, origin, sorted(ignored), sorted(unknown)


def build_detector(arch_name: str, *, aggregation: str | None = None,
                   backend_options: dict[str, Any] | None = None,
                   ssl_overrides: dict[str, Any] | None = None, model_id: str | None = None,
                   device: str | torch.device | None = None) -> Detector:
    """A detector of a published architecture with freshly initialised weights.

    ``device="meta"`` builds it without allocating memory (for parameter counts).
    """
    arch = get_architecture(arch_name)
    front = ssl_config(arch, aggregation=aggregation, ssl_overrides=ssl_overrides)
    width = int(front.hf_config["hidden_size"])
    back = backend_config(arch, width, backend_options)
    with torch.device(device) if device is not None else nullcontext():
        return Detector(front, back, model_id=model_id or arch.name)


def convert_state_dict(state: Mapping[str, torch.Tensor], arch_name: str, *,
                       aggregation: str | None = None,
                       backend_options: dict[str, Any] | None = None,
                       ssl_overrides: dict[str, Any] | None = None, model_id: str | None = None,
                       notes: list[str] | None = None) -> tuple[Detector, ConversionReport]:
    """Build the architecture and load an official state dict into it, strictly.

    Raises:
        BundleError: unknown, missing or mis-shaped tensors (listed), or bad options.
    """
    arch = get_architecture(arch_name)
    detector = build_detector(arch_name, aggregation=aggregation,
                              backend_options=backend_options, ssl_overrides=ssl_overrides,
                              model_id=model_id, device="meta")
    expected = detector.state_dict()
    hf_keys = {k[len("frontend.model."):] for k in expected if k.startswith("frontend.model.")}
    mapped, origin, ignored, unknown = map_state(state, arch, hf_keys)
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(origin[k] for k in set(mapped) - set(expected))
    shapes = sorted(f"{origin[k]} {tuple(mapped[k].shape)} (expected {tuple(v.shape)})"
                    for k, v in expected.items() if k in mapped and mapped[k].shape != v.shape)
    problems = [_listing(label, items) for label, items in (
        ("unknown", unknown), ("unexpected", unexpected), ("missing", missing),
        ("mis-shaped", shapes)) if items]
    if problems:
        raise BundleError(f"checkpoint does not match architecture {arch.name} (aggregation="
                          f"{detector.frontend_cfg.aggregation}, back-end "  # type: ignore[union-attr]
                          f"{_backend_summary(detector)}): " + "; ".join(problems)
                          + _hint(state))
    detector = detector.to_empty(device="cpu")
    detector.load_state_dict({k: v.to(expected[k].dtype) for k, v in mapped.items()},
                             strict=True)
    detector.eval()
    report = ConversionReport(
        arch=arch.name, source_file=None, sha256=None, tensors=len(state), mapped=len(mapped),
        ignored=ignored, notes=list(notes or []),
        frontend_parameters=count_parameters(detector.frontend, trainable_only=False),
        backend_parameters=count_parameters(detector.backend, trainable_only=False))
    return detector, report


def _backend_summary(detector: Detector) -> str:
    b = detector.backend_cfg
    return (f"{b.variant} {b.activation} outer/inner={b.outer_ratio}/{b.inner_ratio} "
            f"se_ratio={b.se_ratio} pooling={b.pooling} n_logits={b.n_logits}")


def _default_model_id(arch: str, path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-")[:64]
    return f"{arch}-{stem}" if stem else arch


def convert_checkpoint(path: str | Path, arch_name: str, *, aggregation: str | None = None,
                       backend_options: dict[str, Any] | None = None,
                       ssl_overrides: dict[str, Any] | None = None, model_id: str | None = None,
                       trust_pickle: bool = False) -> tuple[Detector, ConversionReport]:
    """Read an official checkpoint file and return the detector with an empty calibration."""
    src = Path(path)
    arch = get_architecture(arch_name)
    state, notes = unwrap_state(read_checkpoint(src, trust_pickle=trust_pickle))
    detector, report = convert_state_dict(
        state, arch_name, aggregation=aggregation, backend_options=backend_options,
        ssl_overrides=ssl_overrides, model_id=model_id or _default_model_id(arch.name, src),
        notes=notes)
    report.source_file = src.name
    report.sha256 = sha256_file(src)
    if "selu" in src.name.lower() and detector.backend_cfg.activation != "selu":
        report.warnings.append("the file name mentions SeLU but the architecture uses ReLU; "
                               "activations cannot be told from the weights: check --arch")
    detector.metadata["source"] = {
        "kind": "official-checkpoint", "arch": arch.name, "file": src.name,
        "sha256": report.sha256, "repository": arch.repository,
        "aggregation": detector.frontend_cfg.aggregation,  # type: ignore[union-attr]
        "official_test_mode": arch.test_mode, "official_crop_samples": arch.crop_samples,
        "ignored_tensors": len(report.ignored),
    }
    return detector, report


def model_card(detector: Detector, report: ConversionReport) -> str:
    """MODEL_CARD.md text for a converted bundle: provenance, scores, terms."""
    arch = get_architecture(report.arch)
    return f"""# {detector.model_id}

Converted from the published Nes2Net checkpoint `{report.source_file}`
(sha256 `{report.sha256}`) with `nes2net-stream convert-checkpoint --arch {arch.name}`.

- Architecture: {arch.description}; layer aggregation
  `{detector.frontend_cfg.aggregation}`; back-end {_backend_summary(detector)}.
- Code and checkpoints: https://github.com/{arch.repository}
- Paper: T. Liu, D.-T. Truong, R. Kumar Das, K. A. Lee, H. Li, "Nes2Net: A Lightweight Nested
  Architecture for Foundation Model Driven Speech Anti-Spoofing", IEEE Transactions on
  Information Forensics and Security 20, 2025 (arXiv 2504.05657).
- Official test mode: `{arch.test_mode}`; the fixed-length mode takes the first
  {arch.crop_samples} samples at 16 kHz, padded by repetition.
- Scores: the official score is the bona fide logit (index 1 of two logits, or the single
  logit); nes2net-stream reports `raw` spoof log-odds from it (docs/scores.md).
- Calibration: none. Fit one on audio from your own channel with
  `nes2net-stream eval --calibrate-on dev --save-calibration`.

Terms: the official repository has no licence file, so the terms of use of these weights are
not stated. Ask the authors before any use beyond research.
"""
