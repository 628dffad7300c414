"""Fast spectral front-end: log linear-frequency filterbank, LFCC or log power spectrum.

Linear-frequency features keep the fine high-frequency resolution that matters for spoofing
detection (LFCC is the classic ASVspoof baseline front-end). By default only the telephone band
(up to 4 kHz) is analysed, so a call recorded at 8 kHz and one at 48 kHz look alike to the model.
The spectral analysis is a fixed torch computation: cheap on a CPU and deterministic, so the
same window gives the same features in streaming and in file scoring. An optional learnable
convolutional stem projects the features to the dimension of a full-size Nes2Net back-end.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nes2net_stream.models.config import SpectralConfig

SAMPLE_RATE = 16_000


def linear_filterbank(n_filters: int, n_fft: int, sample_rate: int, f_min: float,
                      f_max: float) -> torch.Tensor:
    """Triangular filters with linearly spaced centres, shape (n_fft // 2 + 1, n_filters)."""
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    edges = torch.linspace(f_min, f_max, n_filters + 2, dtype=torch.float64)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    f = freqs[:, None]
    rising = (f - lower) / (centre - lower)
    falling = (upper - f) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix, shape (n, n), applied as ``x @ M``."""
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi / n * (k[:, None] + 0.5) * k[None, :])
    m[:, 0] *= 1.0 / math.sqrt(2.0)
    return (m * math.sqrt(2.0 / n)).to(torch.float32)


class SpectralFrontend(nn.Module):
    """Waveform (B, S) at 16 kHz to features (B, n_features, frames)."""

    def __init__(self, cfg: SpectralConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        bins = cfg.n_fft // 2 + 1
        if cfg.kind == "logspec":
            lo = int(math.ceil(cfg.min_freq_hz * cfg.n_fft / SAMPLE_RATE))
            hi = int(math.floor(cfg.max_freq_hz * cfg.n_fft / SAMPLE_RATE)) + 1
            if hi - lo < cfg.n_features:
                raise ValueError(f"logspec: only {hi - lo} FFT bins between {cfg.min_freq_hz} and "
                                 f"{cfg.max_freq_hz} Hz, fewer than n_features={cfg.n_features}")
            self.first_bin = lo
            self.register_buffer("fbank", torch.empty(0), persistent=False)
        else:
            fb = linear_filterbank(cfg.n_features, cfg.n_fft, SAMPLE_RATE, cfg.min_freq_hz,
                                   cfg.max_freq_hz)
            if int((fb.sum(dim=0) > 0).sum()) < cfg.n_features:
                raise ValueError(f"{cfg.n_features} filters are too narrow for n_fft={cfg.n_fft}")
            self.first_bin = 0
            self.register_buffer("fbank", fb[:bins], persistent=False)
        self.register_buffer("dct", dct_matrix(cfg.n_features) if cfg.kind == "lfcc"
                             else torch.empty(0), persistent=False)
        self.projection: nn.Module | None = None
        if cfg.projection_dim:
            k = cfg.projection_kernel
            self.projection = nn.Sequential(
                nn.Conv1d(cfg.n_features, cfg.projection_dim, k, padding=k // 2),
                nn.BatchNorm1d(cfg.projection_dim),
                nn.ReLU(),
            )

    @property
    def output_dim(self) -> int:
        """Feature dimension D given to the back-end."""
        return self.cfg.projection_dim or self.cfg.n_features

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Compute (B, D, frames) log features of (B, S) float waveforms.

        The spectrum is always computed in float32; the features come out in the dtype the
        module was cast to (the dtype of its buffers).
        """
        cfg = self.cfg
        x = wave.float()
        if cfg.pre_emphasis > 0:
            x = torch.cat((x[:, :1], x[:, 1:] - cfg.pre_emphasis * x[:, :-1]), dim=1)
        spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                          win_length=cfg.win_length, window=self.window.float(), center=True,
                          pad_mode="reflect", return_complex=True)
        if cfg.kind == "logspec":  # the power of the kept bins only
            spec = spec[:, self.first_bin:self.first_bin + cfg.n_features, :]
        feats = spec.real.square() + spec.imag.square()  # (B, bins, frames)
        if cfg.kind != "logspec":
            feats = torch.einsum("bft,fn->bnt", feats, self.fbank.float())
        feats = torch.log(feats + 1e-8)
        if cfg.kind == "lfcc":
            feats = torch.einsum("bnt,nk->bkt", feats, self.dct.float())
        if cfg.normalize:
            feats = feats - feats.mean(dim=-1, keepdim=True)
        feats = feats.to(self.window.dtype)
        if self.projection is not None:
            feats = self.projection(feats)
        return feats
