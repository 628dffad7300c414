"""The transformer's convolutional positional embedding through FFTs.

wav2vec 2.0 / XLS-R, HuBERT and WavLM add to the transformer's input a grouped 1-D convolution
of it: for XLS-R 1,024 channels in 16 groups with a kernel of 128 frames (zero padding 64). As a
direct convolution that is 16.8 MFLOP per frame, about 3.3 GFLOP per four-second window (2 % of
the model), in a shape (64 channels per group, a kernel as long as half the window) that
convolution libraries are not tuned for. Through the FFT the same function costs two real FFTs
of the features and, per frequency and group, a (batch x 64) by (64 x 64) complex matrix product:
about 25 times fewer operations, in float32 (more precise than a bf16 convolution).

:func:`use_fft` replaces the ``forward`` of the model's own ``nn.Conv1d`` (instance attribute:
parameters, state dict, weight norm and device moves stay transformers'); the kernel's spectrum
is computed from the current parameters and kept until they change (cast, move, load). It is
an inference path: while gradients are recorded (for the kernel or the input), the direct
convolution runs.
:func:`use_fft` with ``False`` restores the module's own forward. Results equal the direct
convolution up to float rounding (tests).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nes2net_stream.models.instance_forward import has_forward, set_forward


def fft_size(n: int) -> int:
    """The smallest length >= ``n`` whose only prime factors are 2, 3, 5 and 7 (fast FFTs)."""
    best = 1 << max(0, n - 1).bit_length()
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                size = p3
                while size < n:
                    size *= 2
                best = min(best, size)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def supports_fft(conv: nn.Module) -> bool:
    """True for a stride-1, undilated ``nn.Conv1d`` with symmetric zero padding."""
    return (isinstance(conv, nn.Conv1d) and conv.stride == (1,) and conv.dilation == (1,)
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple))


MAX_SPECTRA = 8  # kernel spectra kept per convolution (XLS-R: about 90 MB each)


class FFTConvForward:
    """A ``forward`` for an ``nn.Conv1d`` computing its convolution through FFTs."""

    def __init__(self, conv: nn.Conv1d):
        self.conv = conv
        self._spectra: dict[tuple, torch.Tensor] = {}  # key -> (G, F, Cg_in, Cg_out)

    def _key(self, n: int) -> tuple:
        return (n,) + tuple((p.data_ptr(), p._version, p.dtype, p.device)
                            for p in self.conv.parameters())

    def spectrum(self, n: int) -> torch.Tensor:
        """The kernels' spectra for FFT length ``n``, arranged (groups, freq, in, out)."""
        key = self._key(n)
        cached = self._spectra.get(key)
        if cached is not None:
            return cached
        conv = self.conv
        with torch.no_grad():
            w = conv.weight.float().flip(-1)  # correlation = convolution with the flipped kernel
            spec = torch.fft.rfft(w, n=n)  # (C_out, Cg_in, F)
            g = conv.groups
            c_out, cg_in, freqs = spec.shape
            spec = spec.view(g, c_out // g, cg_in, freqs).permute(0, 3, 2, 1).contiguous()
        # a CUDA graph captured earlier may still read an older entry (until it is captured
        # again), so entries are only dropped beyond a few (window lengths x parameter states)
        while len(self._spectra) >= MAX_SPECTRA:
            self._spectra.pop(next(iter(self._spectra)))
        self._spectra[key] = spec
        return spec

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T) -> (B, C_out, T + 2P - K + 1), as ``conv(x)``."""
        conv = self.conv
        if torch.is_grad_enabled() and (x.requires_grad
                                        or any(p.requires_grad for p in conv.parameters())):
            # gradients are being recorded: the cached spectrum is not part of the graph
            return nn.Conv1d.forward(conv, x)
        b, c, t = x.shape
        k, pad, g = conv.kernel_size[0], conv.padding[0], conv.groups
        n = fft_size(t + k - 1)
        with torch.autocast(x.device.type, enabled=False):  # float32 / complex64 throughout
            spec = self.spectrum(n)  # (G, F, Cg_in, Cg_out)
            freqs = spec.shape[1]
            # cast and (for the transposed views transformers passes) transpose in one pass:
            # the FFT needs time contiguous and would otherwise copy the cast input again
            xc = torch.empty((b, c, t), dtype=torch.float32, device=x.device).copy_(x)
            xf = torch.fft.rfft(xc, n=n)  # (B, C_in, F)
            xg = xf.view(b, g, c // g, freqs).permute(1, 3, 0, 2)  # (G, F, B, Cg_in)
            yf = torch.matmul(xg, spec)  # (G, F, B, Cg_out)
            yf = yf.permute(2, 0, 3, 1).reshape(b, conv.out_channels, freqs)
            if conv.bias is not None:  # a constant over time: n x bias at frequency 0
                yf[..., 0] += conv.bias.float() * n
            z = torch.fft.irfft(yf, n=n)  # the full linear convolution, length t + k - 1
            start = k - 1 - pad
            y = z[..., start:start + t + 2 * pad - k + 1]
        return y.to(x.dtype)


def use_fft(conv: nn.Module, on: bool) -> None:
    """Run ``conv`` through FFTs (``on``) or through its own forward again."""
    set_forward(conv, FFTConvForward, on, lambda: supports_fft(conv),
                lambda: f"no FFT form for {conv!r}")


def uses_fft(conv: Any) -> bool:
    """True while ``conv`` runs through FFTs."""
    return has_forward(conv, FFTConvForward)
