"""Speech foundation-model front-ends (wav2vec 2.0 / XLS-R, WavLM, HuBERT) via transformers.

The network is always built locally from a configuration (stored in the model bundle) and
weights. A Hugging Face hub id is only resolved when the caller explicitly allows downloads.

Hidden states are collected with forward hooks on the transformer layers, so the definition
does not depend on the transformers version: ``hidden[0]`` is the input of the first layer
(after the convolutional positional embedding) and ``hidden[i]`` the raw output of layer ``i``;
with ``last_hidden_state="encoder_output"`` the last one is instead the encoder output after
its final layer norm, as s3prl's WavLM hooks deliver it. ``last`` uses the encoder's final
output (after the final layer norm of pre-LN models such as XLS-R and WavLM Large). Layer
aggregations follow the CtrSVDD Nes2Net code: SE-attention merge
(``sea``), softmax-weighted sum and attentive merge (``attentive_merge``); parameter names match
the official modules (``fc_att_merge``, ``weight_hidd``, ``W``, ``W1``, ``W2``, ``linear_proj``).

The convolutional feature encoder can run separately (:meth:`SSLFrontend.conv_features`, then
:meth:`SSLFrontend.forward_from_conv`): with per-frame layer norm (``feat_extract_norm="layer"``,
the XLS-R and WavLM Large geometry), no padding and no waveform normalisation, each output frame
depends only on the samples under its receptive field, so the frames of overlapping windows can
be computed once and reused (:class:`ConvGeometry`, the streaming feature cache). With
``conv_impl = "gemm"`` (what the scoring engine sets) that encoder runs as channels-last matrix
products (:mod:`nes2net_stream.models.conv_gemm`) instead of transformers' own modules, and
with ``pos_conv_impl = "fft"`` the transformer's positional convolution runs through FFTs
(:mod:`nes2net_stream.models.pos_conv_fft`); with ``layers_impl = "fused"`` the transformer
layers that have one run a leaner inference forward (:mod:`nes2net_stream.models.fused_layers`),
whose layer norms, like the GEMM encoder's, can run as compiled kernels together with their
residual add or GELU (:meth:`SSLFrontend.use_norm_kernels`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nes2net_stream.errors import BundleError, DependencyError
from nes2net_stream.models.config import SSLConfig
from nes2net_stream.models.conv_gemm import gemm_conv_features, supports_gemm
from nes2net_stream.models.fused_layers import Handoff, supports_fused, use_fused, uses_fused
from nes2net_stream.models.fused_norms import NormKernels
from nes2net_stream.models.pos_conv_fft import supports_fft, use_fft, uses_fft

ConvImpl = Literal["native", "gemm"]
PosConvImpl = Literal["native", "fft"]
LayersImpl = Literal["native", "fused"]

_OVERRIDES = {"apply_spec_augment": False, "layerdrop": 0.0, "mask_time_prob": 0.0,
              "mask_feature_prob": 0.0}


def _classes(family: str) -> tuple[Any, Any]:
    import transformers as tf

    table = {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
        "hubert": (tf.HubertConfig, tf.HubertModel),
    }
    if family not in table:
        raise BundleError(f"unknown SSL family {family!r}; expected one of {sorted(table)}")
    return table[family]


def build_hf_config(family: str, hf_config: dict[str, Any]) -> Any:
    """A transformers config object for ``family`` with training-time masking disabled."""
    config_cls, _ = _classes(family)
    skip = ("architectures", "transformers_version")
    data = {k: v for k, v in hf_config.items() if k not in skip}
    data.update(_OVERRIDES)
    try:
        return config_cls(**data)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"frontend.ssl.hf_config: {exc}") from exc


@dataclass(frozen=True)
class ConvGeometry:
    """Sample geometry of a convolutional feature encoder without padding.

    Frame ``i`` of a window covers samples ``[i * stride, i * stride + receptive_field)``.
    """

    stride: int
    receptive_field: int

    def frames(self, samples: int) -> int:
        """Frames produced from ``samples`` input samples."""
        return max(0, (samples - self.receptive_field) // self.stride + 1)


class SSLFrontend(nn.Module):
    """Waveform (B, S) at 16 kHz to frame features (B, D, frames) from a speech SSL model."""

    def __init__(self, cfg: SSLConfig, model: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        _, model_cls = _classes(cfg.family)
        if model is None:
            model = model_cls(build_hf_config(cfg.family, cfg.hf_config))
        self.model = model
        hf = self.model.config
        self.n_layer = int(hf.num_hidden_layers) + 1
        self.n_feat = int(hf.hidden_size)
        layers = self.n_layer
        if cfg.aggregation == "sea":
            self.fc_att_merge = nn.Sequential(
                nn.Linear(layers, layers // 3, bias=False),
                nn.ReLU(),
                nn.Linear(layers // 3, layers, bias=False),
                nn.Sigmoid(),
            )
        elif cfg.aggregation == "weighted_sum":
            self.weight_hidd = nn.Parameter(torch.ones(layers))
        elif cfg.aggregation == "attentive_merge":
            self.W = nn.Parameter(torch.randn(self.n_feat, 1))
            self.W1 = nn.Parameter(torch.randn(layers, layers // 2))
            self.W2 = nn.Parameter(torch.randn(layers // 2, layers))
            self.linear_proj = nn.Linear(layers * self.n_feat, self.n_feat)
        if cfg.freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
        self._conv_impl: ConvImpl = "native"
        self.norm_kernels: NormKernels | None = None

    @property
    def output_dim(self) -> int:
        """Feature dimension D (the transformer width)."""
        return self.n_feat

    @classmethod
    def from_pretrained(cls, source: str | Path, cfg: SSLConfig, *,
                        allow_download: bool = False) -> SSLFrontend:
        """Build with weights from a local transformers directory (or a hub id if allowed)."""
        _, model_cls = _classes(cfg.family)
        path = Path(source)
        if not path.is_dir():
            if not allow_download:
                raise BundleError(
                    f"SSL weights {str(source)!r} are not a local directory. Point to a folder "
                    "with config.json and model weights, or allow downloads explicitly "
                    "(--allow-download) on a machine with network access."
                )
            local_only = False
        else:
            if not (path / "config.json").is_file():
                raise BundleError(f"{path}: no config.json (not a transformers model folder)")
            local_only = True
        try:
            model = model_cls.from_pretrained(str(source), local_files_only=local_only,
                                              **_OVERRIDES)
        except OSError as exc:
            if local_only:
                raise BundleError(f"cannot load SSL weights from {path}: {exc}") from exc
            raise DependencyError(f"cannot download {source!r}: {exc}") from exc
        hf_dict = model.config.to_dict()
        full = dataclasses.replace(cfg, hf_config=hf_dict)
        return cls(full, model=model)

    def conv_geometry(self) -> ConvGeometry | None:
        """The encoder's geometry when its frames are exactly reusable across windows, else None.

        Requires per-frame layer norm in the feature encoder (group norm mixes all frames of
        a window) and no per-window waveform normalisation.
        """
        hf = self.model.config
        if getattr(hf, "feat_extract_norm", "group") != "layer" or self.cfg.normalize_waveform:
            return None
        kernels, strides = list(hf.conv_kernel), list(hf.conv_stride)
        field = 1
        for k, st in zip(reversed(kernels), reversed(strides), strict=True):
            field = (field - 1) * st + k
        return ConvGeometry(stride=math.prod(strides), receptive_field=field)

    @property
    def conv_impl(self) -> ConvImpl:
        """How the convolutional encoder runs: ``"native"`` (transformers) or ``"gemm"``."""
        return self._conv_impl

    @conv_impl.setter
    def conv_impl(self, impl: ConvImpl) -> None:
        if impl not in ("native", "gemm"):
            raise ValueError(f"conv_impl must be 'native' or 'gemm', not {impl!r}")
        if impl == "gemm" and not supports_gemm(self.model.feature_extractor.conv_layers):
            raise BundleError("this front-end's convolutional encoder has no GEMM form "
                              "(unexpected layer kinds); use the native one")
        self._conv_impl = impl

    @property
    def pos_conv_impl(self) -> PosConvImpl:
        """How the positional convolution runs: ``"native"`` or ``"fft"``."""
        return "fft" if uses_fft(self.positional_conv()) else "native"

    @pos_conv_impl.setter
    def pos_conv_impl(self, impl: PosConvImpl) -> None:
        if impl not in ("native", "fft"):
            raise ValueError(f"pos_conv_impl must be 'native' or 'fft', not {impl!r}")
        conv = self.positional_conv()
        if impl == "fft" and (conv is None or not supports_fft(conv)):
            raise BundleError("this front-end's positional convolution has no FFT form")
        if conv is not None:
            use_fft(conv, impl == "fft")

    @property
    def layers_impl(self) -> LayersImpl:
        """``"fused"`` while any transformer layer runs the fused forward, else ``"native"``."""
        return "fused" if any(uses_fused(m) for m in self.model.encoder.layers) else "native"

    @layers_impl.setter
    def layers_impl(self, impl: LayersImpl) -> None:
        """``"fused"``: the fused forward on every layer that has one (WavLM's have none)."""
        if impl not in ("native", "fused"):
            raise ValueError(f"layers_impl must be 'native' or 'fused', not {impl!r}")
        for layer in self.model.encoder.layers:
            use_fused(layer, impl == "fused" and supports_fused(layer))
        self.use_norm_kernels(self.norm_kernels)

    def use_norm_kernels(self, kernels: NormKernels | None) -> None:
        """Run the layer norms through compiled kernels (``None``: PyTorch's operations).

        The kernels (:mod:`nes2net_stream.models.fused_norms`) serve the GEMM conv encoder
        (layer norm + GELU) and the fused transformer layers (residual add + layer norm).
        """
        self.norm_kernels = kernels
        layers = list(self.model.encoder.layers)
        handoff = Handoff()  # pre-LN: a layer's last add with the next layer's first norm
        for i, layer in enumerate(layers):
            if not uses_fused(layer):
                continue
            fwd = layer.forward
            fwd.kernels = kernels
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            linked = (kernels is not None and fwd.pre_ln and nxt is not None
                      and uses_fused(nxt) and nxt.forward.pre_ln)
            fwd.next_norm = nxt.layer_norm if linked else None  # type: ignore[union-attr]
            fwd.handoff = handoff if kernels is not None else None

    def positional_conv(self) -> nn.Module | None:
        """The transformer's positional convolution (``nn.Conv1d``), if it has one."""
        return getattr(getattr(self.model.encoder, "pos_conv_embed", None), "conv", None)

    def conv_features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) waveform -> (B, C, frames) output of the convolutional feature encoder."""
        if self.cfg.normalize_waveform:
            wave = F.layer_norm(wave, wave.shape[-1:], eps=1e-5)
        if self._conv_impl == "gemm":
            return gemm_conv_features(self.model.feature_extractor.conv_layers, wave,
                                      self.norm_kernels)
        return self.model.feature_extractor(wave)

    def forward_from_conv(self, conv: torch.Tensor) -> torch.Tensor:
        """(B, C, frames) encoder output -> (B, D, frames), the rest of :meth:`forward`."""
        return self._features(lambda: self.transformer(conv))

    def transformer(self, conv: torch.Tensor) -> torch.Tensor:
        """(B, C, frames) conv encoder output -> (B, frames, D) final SSL output.

        What the transformers models' ``forward`` does after their feature encoder (the same
        for wav2vec 2.0, WavLM and HuBERT): feature projection (wav2vec 2.0 and WavLM return
        the projected and the normalised features, HuBERT only the projected ones), the
        transformer encoder, and the adapter of wav2vec 2.0 models that have one. Time masking
        is skipped: it is disabled here (``apply_spec_augment=False``) and off in eval mode.
        A test holds this equal to ``model(wave)`` for every family and aggregation.
        """
        projected = self.model.feature_projection(conv.transpose(1, 2))
        hidden = projected[0] if isinstance(projected, tuple) else projected
        out = self.model.encoder(hidden)[0]
        adapter = getattr(self.model, "adapter", None)
        return adapter(out) if adapter is not None else out

    def hidden_states(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the SSL model; return (final output, per-layer hidden states), each (B, T, F)."""
        return self._hidden_states(lambda: self.model(wave).last_hidden_state)

    def _hidden_states(self, run: Callable[[], torch.Tensor]
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``run()`` (the model's final output) with every layer's hidden state captured."""
        captured: list[torch.Tensor] = []
        layers = self.model.encoder.layers

        def pre_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            captured.append(x)

        def post_hook(_m: nn.Module, _args: Any, out: Any) -> None:
            captured.append(out[0] if isinstance(out, tuple) else out)

        handles = [layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
        handles += [layer.register_forward_hook(post_hook) for layer in layers]
        try:
            final = run()
        finally:
            for h in handles:
                h.remove()
        if len(captured) != self.n_layer:
            raise RuntimeError(f"captured {len(captured)} hidden states, expected {self.n_layer}")
        if self.cfg.last_hidden_state == "encoder_output":
            captured[-1] = final
        return final, captured

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) waveform -> (B, D, frames)."""
        if self._conv_impl == "gemm":
            return self.forward_from_conv(self.conv_features(wave))
        if self.cfg.normalize_waveform:
            wave = F.layer_norm(wave, wave.shape[-1:], eps=1e-5)
        return self._features(lambda: self.model(wave).last_hidden_state)

    def _features(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """(B, D, frames) features from ``run()``, the SSL model's final output (B, T, D)."""
        if self.cfg.aggregation == "last":
            feats = run()
        else:
            _, hidden = self._hidden_states(run)
            feats = self.aggregate(hidden)
        return feats.transpose(1, 2)

    def aggregate(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """Combine L hidden states (each (B, T, F)) into one (B, T, F)."""
        agg = self.cfg.aggregation
        if agg == "weighted_sum":
            weights = F.softmax(self.weight_hidd[: len(hidden)], dim=-1)
            return torch.einsum("l,lbtf->btf", weights, torch.stack(hidden, dim=0))
        stacked = torch.stack(hidden, dim=1)  # (B, L, T, F)
        if agg == "sea":
            gate = self.fc_att_merge(stacked.mean(dim=(2, 3)))  # (B, L)
            return (stacked * gate[:, :, None, None]).sum(dim=1)
        if agg == "attentive_merge":
            pooled = stacked.mean(dim=2, keepdim=True)  # (B, L, 1, F)
            z = F.silu(pooled @ self.W).reshape(-1, self.n_layer)  # (B, L)
            z = torch.sigmoid(F.silu(z @ self.W1) @ self.W2)
            weighted = stacked * z[:, :, None, None]
            b, layers, t, f = weighted.shape
            merged = weighted.permute(0, 2, 3, 1).reshape(b, t, f * layers)
            return self.linear_proj(merged)
        raise BundleError(f"unknown aggregation {agg!r}")
