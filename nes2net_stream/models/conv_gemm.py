"""The SSL convolutional feature encoder as channels-last matrix products.

The feature encoders of wav2vec 2.0 / XLS-R, HuBERT and WavLM are seven 1-D convolutions over
the waveform (512 channels, kernels 10-3-3-3-3-2-2, strides 5-2-2-2-2-2-2), each followed by a
norm and GELU. transformers runs them channels-first, transposing around every per-frame layer
norm, so each layer costs extra copies and convolution kernels in a layout that tensor cores
handle poorly: measured on an H200 this encoder took 45 ms of an 81 ms batch of 128 four-second
windows for 13 % of the FLOPs (docs/benchmarks.md).

:func:`gemm_conv_features` computes the same function on (batch, frames, channels) tensors:
each layer gathers its receptive fields as rows (``kernel x channels`` contiguous values per
output frame, a view when kernel equals stride and one copy otherwise), multiplies them by the
reshaped kernel as one matrix product, and normalises over the last, contiguous dimension. On
accelerators and in reduced precision the layers after the first skip those copies: with the
frame counts padded, a layer's input is a view of rows of ``stride`` frames, and a kernel that
overlaps into the next row is two products accumulated in one buffer
(:func:`_padded_features`). It
reads the transformers modules' own parameters at every call, so checkpoints, dtype casts and
device moves apply unchanged, and it registers nothing (the state dict stays the same).
The result equals the transformers encoder up to floating-point rounding (tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nes2net_stream.logs import get_logger
from nes2net_stream.models.fused_norms import NormKernels, exact_gelu, supports_kernels

log = get_logger("nes2net.conv_gemm")
_padded_failed = False  # set when the padded form failed once: the gathered one from then on


def supports_gemm(conv_layers: nn.ModuleList) -> bool:
    """True when every layer is ``conv`` (+ ``layer_norm`` of a known kind) + ``activation``."""
    for layer in conv_layers:
        conv = getattr(layer, "conv", None)
        if not isinstance(conv, nn.Conv1d) or not callable(getattr(layer, "activation", None)):
            return False
        if conv.padding != (0,) or conv.dilation != (1,) or conv.groups != 1:
            return False
        norm = getattr(layer, "layer_norm", None)
        if norm is not None and not _known_norm(norm, conv.out_channels):
            return False
    return True


def _known_norm(norm: nn.Module, channels: int) -> bool:
    if isinstance(norm, nn.LayerNorm):
        return tuple(norm.normalized_shape) == (channels,)
    if isinstance(norm, nn.GroupNorm):  # wav2vec 2.0 base: one group per channel, over time
        return norm.num_groups == norm.num_channels == channels
    return False


def _frames(h: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """(B, T, C) -> (B, T_out, kernel * C): the receptive field of each output frame as a row."""
    b, t, c = h.shape
    t_out = (t - kernel) // stride + 1
    if t_out <= 0:
        raise ValueError(f"input of {t} frames is shorter than the kernel ({kernel})")
    h = h.contiguous()
    return h.as_strided((b, t_out, kernel * c), (t * c, stride * c, 1))


def _group_norm_over_time(h: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with one group per channel, on (B, T, C): statistics over T (in float32)."""
    x = h.float()
    var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + norm.eps)
    if norm.affine:
        y = y * norm.weight.float() + norm.bias.float()
    return y.to(h.dtype)


def _norm_act(layer: nn.Module, h: torch.Tensor, kernels: NormKernels | None) -> torch.Tensor:
    """The layer's norm (if any) and activation on (B, T, C) channels-last features."""
    norm = getattr(layer, "layer_norm", None)
    if (kernels is not None and supports_kernels(norm, h.shape[-1])
            and exact_gelu(layer.activation)):
        return kernels.layer_norm_gelu(h, norm)
    if isinstance(norm, nn.LayerNorm):
        h = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    elif isinstance(norm, nn.GroupNorm):
        h = _group_norm_over_time(h, norm)
    return layer.activation(h)


def _weight(conv: nn.Conv1d) -> torch.Tensor:
    """(C_out, C_in, K) -> (C_out, K * C_in), matching the row layout of :func:`_frames`."""
    return conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)


def _lengths(conv_layers: nn.ModuleList, samples: int) -> list[int]:
    """Output frames of every layer for ``samples`` input samples (ValueError if none)."""
    out, t = [], samples
    for layer in conv_layers:
        kernel, stride = layer.conv.kernel_size[0], layer.conv.stride[0]
        if t < kernel:
            raise ValueError(f"input of {t} frames is shorter than the kernel ({kernel})")
        t = (t - kernel) // stride + 1
        out.append(t)
    return out


def _paired(conv_layers: nn.ModuleList, wave: torch.Tensor) -> bool:
    """Whether :func:`_padded_features` applies: inference, per-frame norms, kernel <= 2 x stride.

    Group norm over time would see the padding rows; gradients need the plain operations (the
    padded path writes into preallocated outputs); autocast would not cast those outputs.
    """
    if torch.is_grad_enabled() and (wave.requires_grad or any(
            p.requires_grad for p in conv_layers.parameters())):
        return False
    if torch.is_autocast_enabled(wave.device.type):
        return False
    for layer in conv_layers[1:]:
        kernel, stride = layer.conv.kernel_size[0], layer.conv.stride[0]
        if kernel > 2 * stride:
            return False
    return not any(isinstance(getattr(m, "layer_norm", None), nn.GroupNorm)
                   for m in conv_layers)


def _padded_features(conv_layers: nn.ModuleList, wave: torch.Tensor,
                     kernels: NormKernels | None) -> torch.Tensor:
    """The encoder on per-window frame counts padded so no layer after the first copies.

    The first layer's output is computed for a multiple of the later layers' total stride
    (the waveform zero-padded where needed), so every later layer's input of ``L`` frames per
    window is, flattened, ``B * L / stride`` rows of ``stride`` frames. A layer with kernel
    ``k <= stride`` is one product over a view of those rows; with ``stride < k <= 2 stride``
    (XLS-R: 3 and 2) it is two: the *next* row's first ``k - stride`` frames times the
    kernel's last taps, then the rows times its first ``stride`` taps accumulated in place.
    The rows past a window's true length are padding: they only ever feed later padding rows
    (every valid output frame's receptive field lies inside the window) and are cut off at
    the end.
    """
    b, samples = wave.shape
    lengths = _lengths(conv_layers, samples)
    total_stride = math.prod(m.conv.stride[0] for m in conv_layers[1:])
    first = conv_layers[0].conv
    k0, s0 = first.kernel_size[0], first.stride[0]
    frames = -(-lengths[0] // total_stride) * total_stride
    need = s0 * (frames - 1) + k0
    x = F.pad(wave, (0, need - samples)) if need > samples else wave.contiguous()
    rows = x.as_strided((b, frames, k0), (x.stride(0), s0, 1)).contiguous()
    h = _norm_act(conv_layers[0], F.linear(rows, _weight(first), first.bias), kernels)
    for layer in conv_layers[1:]:
        conv: nn.Conv1d = layer.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        c, weight = h.shape[-1], _weight(conv)
        flat = h.reshape(-1, stride * c)  # a view: h is contiguous, frames % stride == 0
        frames //= stride
        if kernel <= stride:
            out = F.linear(flat[:, :kernel * c], weight, conv.bias)
        else:
            out = _two_products(flat, weight[:, :stride * c], weight[:, stride * c:],
                                conv.bias)
        h = _norm_act(layer, out.view(b, frames, conv.out_channels), kernels)
    return h[:, :lengths[-1]].transpose(1, 2)


def _two_products(flat: torch.Tensor, head: torch.Tensor, tail: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """Row ``r`` of the result: ``flat[r] @ head.T + flat[r + 1, :tail_in] @ tail.T + bias``.

    The next rows' part (bias in its epilogue) is written first; the rows' own part is then
    accumulated in place (``beta = 1`` on the same buffer: no copy of it). The last row (no
    next row) is padding; it is set to zero.
    """
    n, width = flat.shape[0], tail.shape[1]
    out = torch.empty(n, head.shape[0], dtype=flat.dtype, device=flat.device)
    body, nxt = out[:-1], flat[1:, :width]  # views: the next rows' first frames, no copy
    if bias is not None:
        torch.addmm(bias, nxt, tail.t(), out=body)
    else:
        torch.mm(nxt, tail.t(), out=body)
    body.addmm_(flat[:-1], head.t())
    out[-1].zero_()
    return out


def gemm_conv_features(conv_layers: nn.ModuleList, wave: torch.Tensor,
                       kernels: NormKernels | None = None,
                       padded: bool | None = None) -> torch.Tensor:
    """(B, S) waveform -> (B, C, frames), a transposed view of a channels-last result.

    ``conv_layers`` is the ``conv_layers`` list of a transformers feature encoder (checked by
    :func:`supports_gemm`). With ``kernels``, a layer norm followed by the exact GELU runs as
    one compiled kernel (:mod:`nes2net_stream.models.fused_norms`). ``padded``: later layers
    without gathering copies (:func:`_padded_features`) where that applies; ``None`` chooses
    it on accelerators and in reduced precision, where those copies are pure memory traffic
    (on 2 CPU cores in bf16 the encoder ran 1.14-1.29x faster with it; in float32, where the
    CPU's matrix products are compute-bound and prefer one deeper product, 0.95-1.00x).
    """
    global _padded_failed
    if padded is None:
        padded = (wave.device.type != "cpu" or wave.dtype != torch.float32) and not _padded_failed
    if padded and _paired(conv_layers, wave):
        try:
            return _padded_features(conv_layers, wave, kernels)
        except RuntimeError as exc:  # a matrix library refusing a layout: the gathered form
            if _padded_failed:
                raise
            _padded_failed = True
            log.warning("padded conv encoder failed; gathering receptive fields from now on",
                        error=repr(exc))
    return _gathered_features(conv_layers, wave, kernels)


def _gathered_features(conv_layers: nn.ModuleList, wave: torch.Tensor,
                       kernels: NormKernels | None = None) -> torch.Tensor:
    """Each layer's receptive fields gathered as rows (a copy where they overlap), one product."""
    h = wave.unsqueeze(-1)  # (B, S, 1)
    for layer in conv_layers:
        conv: nn.Conv1d = layer.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        h = _norm_act(layer, F.linear(_frames(h, kernel, stride), _weight(conv), conv.bias),
                      kernels)
    return h.transpose(1, 2)
