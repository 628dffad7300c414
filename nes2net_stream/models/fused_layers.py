"""A leaner inference forward for the transformer layers of wav2vec 2.0 / XLS-R and HuBERT.

XLS-R 300M spends most of a scoring batch in its 24 transformer layers (66.7 ms of 104 ms at
batch 256 on an H200, docs/benchmarks.md). Their matrix products run near the chip's peak; what
is left is memory traffic between them. Per layer and batch of 256 four-second windows, the
exact GELU after the first feed-forward product reads and writes a 50,944 x 4,096 activation
(about 0.8 GB), and the query, key and value projections are three products of the same input.
This forward, installed on a layer instance by :func:`use_fused` (like
:mod:`nes2net_stream.models.pos_conv_fft`: parameters, state dict, hooks and device moves stay
transformers'), computes the same function with

- one packed query/key/value product (the three weight matrices stacked once and kept until
  the parameters change), whose output feeds scaled-dot-product attention as strided views;
- on CUDA, with weights in the activations' dtype and no autocast, the first feed-forward
  product with its bias and GELU in the matrix library's epilogue (``torch._addmm_activation``,
  cuBLASLt): no separate pass over the 4,096-wide activation. That epilogue computes GELU's
  tanh form, which differs from the exact GELU by less than 5e-4, an order of magnitude below
  bf16's rounding of those activations; everywhere else (CPU, float32, autocast) the layer's
  own activation runs.

Pre-LN (``...StableLayerNorm``, XLS-R and large models) and post-LN (base models) layers are
supported. Anything else falls back to the layer's own forward, call by call: an attention
mask, attention weights asked for, training mode, gradients being recorded, a layer with an
adapter. Tests hold the results equal to transformers' (models/ssl_frontend.py's callers).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nes2net_stream.logs import get_logger
from nes2net_stream.models.fused_norms import NormKernels, exact_gelu
from nes2net_stream.models.instance_forward import has_forward, set_forward

log = get_logger("nes2net.fused_layers")

PRE_LN = ("Wav2Vec2EncoderLayerStableLayerNorm", "HubertEncoderLayerStableLayerNorm")
POST_LN = ("Wav2Vec2EncoderLayer", "HubertEncoderLayer")
# keyword arguments some transformers versions pass to each layer that do not change its output
_OUTPUT_ONLY = frozenset({"output_hidden_states", "return_dict", "use_cache"})
MAX_PACKED = 2  # packed QKV weights kept per layer (a CUDA graph may still read the older)


def supports_fused(layer: nn.Module) -> bool:
    """True for a wav2vec 2.0 / HuBERT encoder layer this module can run."""
    name = type(layer).__name__
    if name not in PRE_LN + POST_LN or getattr(layer, "adapter_layer", None) is not None:
        return False
    attn = getattr(layer, "attention", None)
    ff = getattr(layer, "feed_forward", None)
    linears = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "out_proj")]
    linears += [getattr(ff, n, None) for n in ("intermediate_dense", "output_dense")]
    if not all(isinstance(m, nn.Linear) for m in linears):
        return False
    heads, head_dim = getattr(attn, "num_heads", 0), getattr(attn, "head_dim", 0)
    scaling = getattr(attn, "scaling", None)
    return (heads * head_dim == linears[0].in_features and scaling is not None
            and not getattr(attn, "is_causal", False)
            and isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm)
            and isinstance(getattr(layer, "final_layer_norm", None), nn.LayerNorm))


class FusedLayerForward:
    """A ``forward`` for one encoder layer computing the same function with fewer passes."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.pre_ln = type(layer).__name__ in PRE_LN
        self.gelu_epilogue = exact_gelu(layer.feed_forward.intermediate_act_fn)
        self.returns_tuple = _returns_tuple(layer)
        self.fused_calls = 0  # calls that took the fused path (the tests check it is used)
        # compiled norm kernels (models/fused_norms.py), shared by the front-end's layers
        self.kernels: NormKernels | None = None
        # pre-LN with kernels: the next layer's first norm, computed with this layer's last
        # residual add and handed over (set by SSLFrontend.use_norm_kernels)
        self.next_norm: nn.LayerNorm | None = None
        self.handoff: Handoff | None = None
        self._packed: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def __deepcopy__(self, memo: dict) -> FusedLayerForward:
        """A copy bound to the copied layer, without the packed weights.

        The copy packs its own; copied ones would hold a second set of device memory.
        """
        new = copy.copy(self)
        new.layer = copy.deepcopy(self.layer, memo)
        # the copied model's own modules and hand-over (memo: shared by its copied layers)
        new.next_norm = copy.deepcopy(self.next_norm, memo)
        new.handoff = copy.deepcopy(self.handoff, memo)
        new._packed = {}
        return new

    def _qkv(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The query, key and value weights (and biases) stacked: (3 D, D) and (3 D,)."""
        attn = self.layer.attention
        projs = (attn.q_proj, attn.k_proj, attn.v_proj)
        params = [p for m in projs for p in (m.weight, m.bias) if p is not None]
        key = tuple((p.data_ptr(), _version(p), p.dtype, p.device) for p in params)
        packed = self._packed.get(key)
        if packed is None:
            with torch.no_grad():
                weight = torch.cat([m.weight for m in projs])
                biases = [m.bias for m in projs]
                bias = None
                if any(b is not None for b in biases):
                    bias = torch.cat([b if b is not None else weight.new_zeros(m.out_features)
                                      for b, m in zip(biases, projs, strict=True)])
            while len(self._packed) >= MAX_PACKED:
                self._packed.pop(next(iter(self._packed)))
            packed = self._packed[key] = (weight, bias)
        return packed

    def _fallback(self, hidden: torch.Tensor, mask: Any, args: tuple, kwargs: dict) -> bool:
        layer = self.layer
        if mask is not None or args or layer.training or any(
                v for k, v in kwargs.items() if k not in _OUTPUT_ONLY):
            return True
        return torch.is_grad_enabled() and (
            hidden.requires_grad or any(p.requires_grad for p in layer.parameters()))

    def __call__(self, hidden_states: torch.Tensor, attention_mask: Any = None, *args: Any,
                 **kwargs: Any) -> Any:
        """As the layer's own forward: (B, T, D) -> (B, T, D) (a 1-tuple where it returns one)."""
        layer = self.layer
        # the previous layer's hand-over, if it was computed from exactly this input (and no
        # pre-hook of this layer could have changed it in place: inference tensors keep no
        # version counter to tell)
        first_normed = self.handoff.take(hidden_states) if self.handoff is not None else None
        if layer._forward_pre_hooks:
            first_normed = None
        if self._fallback(hidden_states, attention_mask, args, kwargs):
            return type(layer).forward(layer, hidden_states, attention_mask, *args, **kwargs)
        self.fused_calls += 1
        x = hidden_states
        k = self.kernels
        if k is not None:  # each norm one compiled kernel with the residual add before it
            if self.pre_ln:
                if first_normed is None:
                    first_normed = k.layer_norm(x, layer.layer_norm)
                h, normed = k.add_layer_norm(self._attention(first_normed), x,
                                             layer.final_layer_norm)
                if self.next_norm is not None and self.handoff is not None:
                    out, next_normed = k.add_layer_norm(self._feed_forward(normed), h,
                                                        self.next_norm)
                    self.handoff.give(out, next_normed)
                else:
                    out = _add(self._feed_forward(normed), h)
            else:
                h = k.add_layer_norm_only(self._attention(x), x, layer.layer_norm)
                out = k.add_layer_norm_only(self._feed_forward(h), h, layer.final_layer_norm)
        elif self.pre_ln:
            h = _add(self._attention(layer.layer_norm(x)), x)
            out = _add(self._feed_forward(layer.final_layer_norm(h)), h)
        else:
            h = layer.layer_norm(_add(self._attention(x), x))
            out = layer.final_layer_norm(_add(self._feed_forward(h), h))
        return (out,) if self.returns_tuple else out

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention of (B, T, D) without a mask, output projection included."""
        attn = self.layer.attention
        b, t, d = x.shape
        weight, bias = self._qkv()
        qkv = F.linear(x, weight, bias).view(b, t, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, Dh), strided views
        o = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
        return attn.out_proj(o.transpose(1, 2).reshape(b, t, d))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's feed-forward block; GELU in the product's epilogue where it can be."""
        ff = self.layer.feed_forward
        first, second = ff.intermediate_dense, ff.output_dense
        if (self.gelu_epilogue and x.is_cuda and first.bias is not None
                and x.dtype == first.weight.dtype == first.bias.dtype
                and not torch.is_autocast_enabled("cuda")):
            rows = x.reshape(-1, x.shape[-1])
            try:
                inner = torch._addmm_activation(first.bias, rows, first.weight.t(),
                                                use_gelu=True)
            except RuntimeError as exc:  # a build without the epilogue: the plain path
                self.gelu_epilogue = False
                log.warning("GELU epilogue unavailable; running the activation separately",
                            error=repr(exc))
            else:
                return second(inner).view(*x.shape[:-1], second.out_features)
        return second(ff.intermediate_act_fn(first(x)))


class Handoff:
    """A pre-LN layer's output handed to the next layer with that layer's first norm of it.

    Both come from one kernel (the residual add and the norm of the sum). The next layer takes
    the norm only when its input is that very tensor, unchanged, and it has no forward
    pre-hooks (which may replace or modify the hidden states); anything else clears it. A deep
    copy starts empty.
    """

    def __init__(self) -> None:
        self._source: torch.Tensor | None = None
        self._version = 0
        self._normed: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> Handoff:
        return Handoff()

    def give(self, source: torch.Tensor, normed: torch.Tensor) -> None:
        """Hand over ``normed``, the next layer's first norm of ``source``."""
        self._source, self._version, self._normed = source, _version(source), normed

    def take(self, x: torch.Tensor) -> torch.Tensor | None:
        """The handed-over norm if ``x`` is its source, unchanged; clears the hand-over."""
        source, normed = self._source, self._normed
        self._source = self._normed = None
        if source is x and self._version == _version(x):
            return normed
        return None


def _version(p: torch.Tensor) -> int:
    """The tensor's in-place version (0 for inference tensors, which keep none)."""
    return 0 if p.is_inference() else p._version


def _add(fresh: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + fresh``, in place in ``fresh`` (a temporary) where the dtypes agree."""
    return fresh.add_(residual) if fresh.dtype == residual.dtype else residual + fresh


def _returns_tuple(layer: nn.Module) -> bool:
    """Whether the layer's own forward returns a tuple (older transformers) or a tensor."""
    p = next(layer.parameters())
    probe = torch.zeros(1, 2, layer.attention.q_proj.in_features, dtype=p.dtype, device=p.device)
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad():
            out = type(layer).forward(layer, probe)
    finally:
        layer.train(was_training)
    return isinstance(out, tuple)


def use_fused(layer: nn.Module, on: bool) -> None:
    """Run ``layer`` through :class:`FusedLayerForward` (``on``) or its own forward again."""
    set_forward(layer, FusedLayerForward, on, lambda: supports_fused(layer),
                lambda: f"no fused form for {type(layer).__name__}")


def uses_fused(layer: Any) -> bool:
    """True while ``layer`` runs through :class:`FusedLayerForward`."""
    return has_forward(layer, FusedLayerForward)
