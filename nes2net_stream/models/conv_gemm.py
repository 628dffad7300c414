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
reshaped kernel as one matrix product, and normalises over the last, contiguous dimension. It
reads the transformers modules' own parameters at every call, so checkpoints, dtype casts and
device moves apply unchanged, and it registers nothing (the state dict stays the same).
The result equals the transformers encoder up to floating-point rounding (tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nes2net_stream.models.fused_norms import NormKernels, exact_gelu, supports_kernels


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


def gemm_conv_features(conv_layers: nn.ModuleList, wave: torch.Tensor,
                       kernels: NormKernels | None = None) -> torch.Tensor:
    """(B, S) waveform -> (B, C, frames), a transposed view of a channels-last result.

    ``conv_layers`` is the ``conv_layers`` list of a transformers feature encoder (checked by
    :func:`supports_gemm`). With ``kernels``, a layer norm followed by the exact GELU runs as
    one compiled kernel (:mod:`nes2net_stream.models.fused_norms`).
    """
    h = wave.unsqueeze(-1)  # (B, S, 1)
    for layer in conv_layers:
        conv: nn.Conv1d = layer.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        # (C_out, C_in, K) -> (C_out, K * C_in), matching the row layout of _frames
        weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)
        h = F.linear(_frames(h, kernel, stride), weight, conv.bias)
        norm = getattr(layer, "layer_norm", None)
        if (kernels is not None and supports_kernels(norm, h.shape[-1])
                and exact_gelu(layer.activation)):
            h = kernels.layer_norm_gelu(h, norm)
            continue
        if isinstance(norm, nn.LayerNorm):
            h = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        elif isinstance(norm, nn.GroupNorm):
            h = _group_norm_over_time(h, norm)
        h = layer.activation(h)
    return h.transpose(1, 2)
