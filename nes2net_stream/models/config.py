"""Typed, validated configuration of the detector's front-end and back-end.

Configurations round-trip through plain dictionaries (the JSON of a model bundle). Unknown keys
and invalid values raise :class:`~nes2net_stream.errors.BundleError` naming the key, so a bundle
written by an incompatible version fails loudly instead of building the wrong network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, TypeVar, get_args, get_type_hints

from nes2net_stream.errors import BundleError

Variant = Literal["nes2net", "nes2net_x"]
Activation = Literal["relu", "selu"]
Pooling = Literal["mean", "astp"]
SSLFamily = Literal["wav2vec2", "wavlm", "hubert"]
LayerAggregation = Literal["last", "sea", "weighted_sum", "attentive_merge"]
LastHiddenState = Literal["layer_output", "encoder_output"]
SpectralKind = Literal["lfb", "lfcc", "logspec"]

T = TypeVar("T")


def _check_literal(owner: str, name: str, value: Any, hint: Any) -> None:
    allowed = get_args(hint)
    if value not in allowed:
        raise BundleError(f"{owner}.{name}: {value!r} is not one of {list(allowed)}")


def config_from_dict(cls: type[T], data: dict[str, Any], *, owner: str) -> T:
    """Build a config dataclass from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise BundleError(f"{owner}: expected an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise BundleError(f"{owner}: unknown key(s) {unknown}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        origin = getattr(hint, "__origin__", None)
        if origin is Literal:
            _check_literal(owner, key, value, hint)
        elif hint is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise BundleError(f"{owner}.{key}: expected an integer, got {value!r}")
        elif hint is float and not isinstance(value, int | float):
            raise BundleError(f"{owner}.{key}: expected a number, got {value!r}")
        elif hint is bool and not isinstance(value, bool):
            raise BundleError(f"{owner}.{key}: expected true/false, got {value!r}")
        kwargs[key] = float(value) if hint is float else value
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{owner}: {exc}") from exc
    return obj


class _DictConfig:
    """JSON round trip of a frozen config dataclass; ``_owner`` names it in errors."""

    _owner: ClassVar[str]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate and build from a bundle dictionary."""
        return config_from_dict(cls, data, owner=cls._owner)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary for JSON."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class BackendConfig(_DictConfig):
    """Nes2Net / Nes2Net-X back-end (the official modules' arguments).

    Attributes:
        variant: ``nes2net`` (cumulative inner Res2Net) or ``nes2net_x`` (learnable weighted
            sums over the stacked inner features).
        input_dim: feature dimension D of the front-end.
        outer_ratio: number of outer groups N (D must be divisible by it).
        inner_ratio: number of inner groups of each bottleneck.
        se_ratio: squeeze-excitation reduction ratio inside each bottleneck.
        se_min_channels: lower bound on the SE bottleneck width (2 in the SeLU variant).
        dilation: dilation of the inner convolutions (2 in the ASVspoof code, 1 for CtrSVDD).
        kernel_size: kernel of the inner convolutions.
        activation: ``relu``, or ``selu`` for the CtrSVDD SeLU variant.
        pooling: ``mean`` over time or ``astp`` attentive statistics pooling.
        astp_bottleneck: attention bottleneck width of ASTP.
        n_logits: 2 (index 1 = bona fide) or 1 (a single bona fide logit).
    """

    _owner: ClassVar[str] = "backend"
    variant: Variant = "nes2net_x"
    input_dim: int = 1024
    outer_ratio: int = 8
    inner_ratio: int = 8
    se_ratio: int = 1
    se_min_channels: int = 1
    dilation: int = 2
    kernel_size: int = 3
    activation: Activation = "relu"
    pooling: Pooling = "mean"
    astp_bottleneck: int = 128
    n_logits: int = 2

    def __post_init__(self) -> None:
        for name in ("input_dim", "outer_ratio", "inner_ratio", "se_ratio", "dilation",
                     "kernel_size", "astp_bottleneck", "se_min_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.outer_ratio < 2 or self.inner_ratio < 2:
            raise ValueError("outer_ratio and inner_ratio must be >= 2")
        if self.input_dim % self.outer_ratio:
            raise ValueError(f"input_dim {self.input_dim} is not divisible by outer_ratio "
                             f"{self.outer_ratio}")
        if self.input_dim // self.outer_ratio < self.inner_ratio:
            raise ValueError("input_dim / outer_ratio must be >= inner_ratio")
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        if self.n_logits not in (1, 2):
            raise ValueError(f"n_logits must be 1 or 2, got {self.n_logits}")



@dataclass(frozen=True)
class SpectralConfig(_DictConfig):
    """Fast spectral front-end for CPU use (see :mod:`nes2net_stream.models.spectral`).

    Attributes:
        kind: ``lfb`` log linear filterbank energies, ``lfcc`` their cepstra, ``logspec`` the log
            power spectrum (bins up to ``max_freq_hz``, truncated to ``n_features``).
        n_features: output dimension D.
        n_fft: FFT size; win_length and hop_length in samples at 16 kHz.
        min_freq_hz / max_freq_hz: analysed band; 4 kHz keeps the telephone band only, so
            wideband and narrowband input look alike to the model.
        pre_emphasis: first-order pre-emphasis coefficient (0 disables).
        normalize: subtract the per-window mean of each feature over time.
        projection_dim: when > 0, a learnable convolutional stem (kernel
            ``projection_kernel``, batch norm, ReLU) maps the features to this dimension, so a
            full-size Nes2Net back-end (D = 1024) can sit on a spectral front-end.
    """

    _owner: ClassVar[str] = "frontend.spectral"
    kind: SpectralKind = "lfb"
    n_features: int = 64
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    min_freq_hz: float = 0.0
    max_freq_hz: float = 4000.0
    pre_emphasis: float = 0.97
    normalize: bool = True
    projection_dim: int = 0
    projection_kernel: int = 3

    def __post_init__(self) -> None:
        if self.n_features < 2 or self.n_fft < 16 or self.win_length > self.n_fft:
            raise ValueError("need n_features >= 2, n_fft >= 16 and win_length <= n_fft")
        if self.hop_length < 1 or self.win_length < 1:
            raise ValueError("hop_length and win_length must be >= 1")
        if not 0.0 <= self.min_freq_hz < self.max_freq_hz <= 8000.0:
            raise ValueError("need 0 <= min_freq_hz < max_freq_hz <= 8000")
        if not 0.0 <= self.pre_emphasis < 1.0:
            raise ValueError("pre_emphasis must be in [0, 1)")
        if self.projection_dim < 0 or self.projection_kernel < 1 or self.projection_kernel % 2 == 0:
            raise ValueError("projection_dim must be >= 0 and projection_kernel odd")



@dataclass(frozen=True)
class SSLConfig(_DictConfig):
    """Speech foundation-model front-end built with Hugging Face transformers.

    Attributes:
        family: ``wav2vec2`` (also XLS-R), ``wavlm`` or ``hubert``.
        aggregation: ``last`` uses the final hidden state; ``sea`` (SE-attention merge),
            ``weighted_sum`` and ``attentive_merge`` combine all hidden states as in the
            CtrSVDD Nes2Net code.
        hf_config: the transformers model configuration (``config.to_dict()``), stored in the
            bundle so no hub access is ever needed to rebuild the network.
        freeze: keep the SSL weights fixed during training.
        normalize_waveform: layer-normalise each input window over time (zero mean, unit
            variance, epsilon 1e-5), as fairseq and s3prl do for models pre-trained with
            ``normalize`` (WavLM Large). Off by default: the XLS-R Nes2Net checkpoints feed raw
            waveforms.
        last_hidden_state: which tensor is the last of the L hidden states that a layer
            aggregation combines: ``layer_output`` (the raw output of the last transformer
            layer) or ``encoder_output`` (the encoder output after its final layer norm, the
            convention of s3prl and of transformers' ``output_hidden_states``, which the
            published WavLM Nes2Net checkpoints were trained with). Unused by ``last``.
    """

    _owner: ClassVar[str] = "frontend.ssl"
    family: SSLFamily = "wav2vec2"
    aggregation: LayerAggregation = "last"
    hf_config: dict[str, Any] = field(default_factory=dict)
    freeze: bool = False
    normalize_waveform: bool = False
    last_hidden_state: LastHiddenState = "layer_output"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate and build from a bundle dictionary."""
        cfg = super().from_dict(data)
        if not isinstance(cfg.hf_config, dict) or not cfg.hf_config:
            raise BundleError("frontend.ssl.hf_config: missing transformers configuration")
        return cfg


@dataclass(frozen=True)
class SpeakerEncoderConfig(_DictConfig):
    """Frozen pre-trained speaker-encoder front-end (see :mod:`~.speaker_frontend`).

    A GE2E-style LSTM speaker encoder (Wan et al., arXiv 1710.10467) turned into a frame-level
    feature extractor: its recurrent layers' outputs, mixed by learnt layer weights.

    Attributes:
        n_mels: mel bands of its input (power mel spectrogram, Slaney scale and norm).
        n_fft / hop_length: STFT size and frame step in samples at 16 kHz (Hann window of
            ``n_fft`` samples).
        hidden_size: width of each LSTM layer, the feature dimension D given to the back-end.
        num_layers: stacked LSTM layers.
        target_dbfs: each window is scaled to this RMS level before analysis (the encoder was
            trained on volume-normalised speech).
        layer: 0 mixes every layer's states with learnt softmax weights; k (1-based) takes
            layer k's states alone (the layers above it are not computed).
        source: where the pre-trained weights came from (provenance only).
    """

    _owner: ClassVar[str] = "frontend.speaker"
    n_mels: int = 40
    n_fft: int = 400
    hop_length: int = 160
    hidden_size: int = 256
    num_layers: int = 3
    target_dbfs: float = -30.0
    layer: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if self.n_mels < 2 or self.n_fft < 16 or self.hop_length < 1:
            raise ValueError("need n_mels >= 2, n_fft >= 16 and hop_length >= 1")
        if self.hidden_size < 2 or self.num_layers < 1:
            raise ValueError("need hidden_size >= 2 and num_layers >= 1")
        if not -80.0 <= self.target_dbfs <= 0.0:
            raise ValueError("target_dbfs must be in [-80, 0]")
        if not 0 <= self.layer <= self.num_layers:
            raise ValueError(f"layer must be 0 (a learnt mix) or 1..{self.num_layers}")



FrontendConfig = SpectralConfig | SSLConfig | SpeakerEncoderConfig
_FRONTEND_TYPES: dict[str, Any] = {"spectral": SpectralConfig, "ssl": SSLConfig,
                                   "speaker": SpeakerEncoderConfig}


def frontend_from_dict(data: dict[str, Any]) -> FrontendConfig:
    """Build a front-end configuration from ``{"type": "spectral"|"ssl"|"speaker", ...}``."""
    if not isinstance(data, dict) or "type" not in data:
        raise BundleError("frontend: expected an object with a 'type' key")
    body = {k: v for k, v in data.items() if k != "type"}
    cls = _FRONTEND_TYPES.get(data["type"])
    if cls is None:
        raise BundleError(f"frontend.type: {data['type']!r} is not one of "
                          f"{sorted(_FRONTEND_TYPES)}")
    return cls.from_dict(body)  # type: ignore[no-any-return]


def frontend_to_dict(cfg: FrontendConfig) -> dict[str, Any]:
    """Inverse of :func:`frontend_from_dict`."""
    kind = next(name for name, cls in _FRONTEND_TYPES.items() if isinstance(cfg, cls))
    return {"type": kind, **cfg.to_dict()}
