"""The published Nes2Net architectures as named presets, with locally built SSL configurations.

Each preset records how the authors' training code builds the network (which speech
foundation model and which implementation of it, how its hidden states reach the back-end,
the back-end's arguments) so a checkpoint converts without fairseq or s3prl. The XLS-R 300M and
WavLM Large transformer configurations are written out here; nothing is fetched.

Sources: Liu-Tianchi/Nes2Net_ASVspoof_ITW (``model_scripts/wav2vec2_Nes2Net_X.py``; branch
``asvspoof5``: ``models/wavlm_nes2net.py``) and Liu-Tianchi/Nes2Net (``models/WavLM_Nes2Net*.py``,
``eval.sh``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import (
    BackendConfig,
    LastHiddenState,
    LayerAggregation,
    SSLConfig,
    SSLFamily,
)

SSLNaming = Literal["fairseq", "s3prl", "unilm"]

#: wav2vec 2.0 XLS-R 300M (fairseq ``xlsr2_300m.pt``) as a transformers configuration.
XLSR_300M: dict[str, Any] = {
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
    "intermediate_size": 4096, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": True, "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu", "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
    "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
}

#: WavLM Large (``WavLM-Large.pt``, also s3prl's ``wavlm_large``) as a transformers configuration.
WAVLM_LARGE: dict[str, Any] = {
    **XLSR_300M,
    "conv_bias": False, "num_buckets": 320, "max_bucket_distance": 800,
}

_ITW = "Liu-Tianchi/Nes2Net_ASVspoof_ITW"
_SVDD = "Liu-Tianchi/Nes2Net"


@dataclass(frozen=True)
class Architecture:
    """One published model family.

    Attributes:
        name: preset name used on the command line.
        description: one line for listings and reports.
        family: SSL model family (transformers class).
        ssl_naming: parameter naming of the SSL weights in the checkpoint.
        ssl_prefix: key prefix of the SSL weights in the checkpoint.
        hf_config: the SSL transformer configuration (transformers keys).
        aggregations: allowed layer aggregations, the official default first.
        normalize_waveform: the official code layer-normalises the waveform first.
        last_hidden_state: hidden-state convention the aggregation was trained with.
        backend: the official back-end arguments (``input_dim`` follows the SSL width).
        test_mode: the official scripts' default test mode (``4s`` or ``full``).
        crop_samples: samples of the official fixed-length mode at 16 kHz.
        repository: where the code and checkpoints are published.
    """

    name: str
    description: str
    family: SSLFamily
    ssl_naming: SSLNaming
    ssl_prefix: str
    hf_config: dict[str, Any]
    aggregations: tuple[LayerAggregation, ...]
    normalize_waveform: bool
    last_hidden_state: LastHiddenState
    backend: BackendConfig
    test_mode: Literal["4s", "full"]
    crop_samples: int
    repository: str


def _backend(**kw: Any) -> BackendConfig:
    base = {"input_dim": 1024, "outer_ratio": 8, "inner_ratio": 8, "se_ratio": 1,
            "kernel_size": 3, "pooling": "mean"}
    return BackendConfig(**{**base, **kw})


_SVDD_COMMON: dict[str, Any] = {
    "family": "wavlm", "ssl_naming": "s3prl", "ssl_prefix": "ssl_model.model.model.",
    "hf_config": WAVLM_LARGE, "aggregations": ("sea", "weighted_sum", "attentive_merge"),
    "normalize_waveform": True, "last_hidden_state": "encoder_output", "test_mode": "full",
    "crop_samples": 64_000, "repository": _SVDD,
}

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture(
        name="xlsr300m-nes2net-x",
        description="wav2vec 2.0 XLS-R 300M (fairseq) + Nes2Net-X; ASVspoof 2021 LA/DF, "
                    "In-the-Wild",
        family="wav2vec2", ssl_naming="fairseq", ssl_prefix="ssl_model.model.",
        hf_config=XLSR_300M, aggregations=("last",), normalize_waveform=False,
        last_hidden_state="layer_output",
        backend=_backend(variant="nes2net_x", dilation=2, n_logits=2),
        test_mode="4s", crop_samples=64_600, repository=_ITW),
    Architecture(
        name="wavlm-large-nes2net",
        description="WavLM Large (s3prl) + layer aggregation + Nes2Net; CtrSVDD",
        backend=_backend(variant="nes2net", dilation=1, n_logits=1), **_SVDD_COMMON),
    Architecture(
        name="wavlm-large-nes2net-x",
        description="WavLM Large (s3prl) + layer aggregation + Nes2Net-X; CtrSVDD",
        backend=_backend(variant="nes2net_x", dilation=1, n_logits=1), **_SVDD_COMMON),
    Architecture(
        name="wavlm-large-nes2net-x-selu",
        description="WavLM Large (s3prl) + layer aggregation + Nes2Net-X with SeLU; CtrSVDD",
        backend=_backend(variant="nes2net_x", dilation=1, n_logits=1, activation="selu",
                         se_min_channels=2), **_SVDD_COMMON),
    Architecture(
        name="wavlm-large-nes2net-x-asvspoof5",
        description="WavLM Large (unilm code, last layer) + Nes2Net-X; ASVspoof 5 "
                    "(asvspoof5 branch)",
        family="wavlm", ssl_naming="unilm", ssl_prefix="ssl_model.model.",
        hf_config=WAVLM_LARGE, aggregations=("last",), normalize_waveform=False,
        last_hidden_state="layer_output",
        backend=_backend(variant="nes2net_x", dilation=1, n_logits=2, se_min_channels=2),
        test_mode="4s", crop_samples=64_600, repository=_ITW),
)}

BACKEND_OPTIONS = ("pooling", "dilation", "se_ratio", "outer_ratio", "inner_ratio", "n_logits")


def get_architecture(name: str) -> Architecture:
    """Look a preset up by name."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise BundleError(f"unknown architecture {name!r}; available: "
                          f"{', '.join(ARCHITECTURES)}") from None


def _hf_keys(family: SSLFamily) -> set[str]:
    from nes2net_stream.models.ssl_frontend import build_hf_config

    return set(build_hf_config(family, {}).to_dict())


def ssl_config(arch: Architecture, *, aggregation: str | None = None,
               ssl_overrides: dict[str, Any] | None = None) -> SSLConfig:
    """The front-end configuration of a preset (optionally with another SSL geometry)."""
    agg = aggregation or arch.aggregations[0]
    if agg not in arch.aggregations:
        raise BundleError(f"{arch.name}: aggregation {agg!r} is not used by this architecture; "
                          f"choose one of {list(arch.aggregations)}")
    hf = dict(arch.hf_config)
    if ssl_overrides:
        unknown = sorted(set(ssl_overrides) - _hf_keys(arch.family))
        if unknown:
            raise BundleError(f"SSL configuration override: unknown {arch.family} key(s) "
                              f"{unknown}")
        hf.update(ssl_overrides)
    return SSLConfig(family=arch.family, aggregation=agg, hf_config=hf,  # type: ignore[arg-type]
                     normalize_waveform=arch.normalize_waveform,
                     last_hidden_state=arch.last_hidden_state)


def backend_config(arch: Architecture, input_dim: int,
                   overrides: dict[str, Any] | None = None) -> BackendConfig:
    """The back-end configuration of a preset with command-line overrides applied."""
    changes: dict[str, Any] = {"input_dim": input_dim}
    for key, value in (overrides or {}).items():
        if key not in BACKEND_OPTIONS:
            raise BundleError(f"unknown back-end option {key!r}; expected {BACKEND_OPTIONS}")
        if value is not None:
            changes[key] = value
    try:
        return dataclasses.replace(arch.backend, **changes)
    except ValueError as exc:
        raise BundleError(f"{arch.name}: invalid back-end options: {exc}") from exc
