"""Nes2Net and Nes2Net-X back-ends (Liu et al., arXiv 2504.05657).

The D-dimensional frame features are split into N outer groups. Outer group ``i`` adds the
output of group ``i-1`` to its own slice (cumulative nesting) and passes the sum through an
inner Res2Net bottleneck: a 1x1 convolution, an inner split into ``inner_ratio`` groups processed
by dilated convolutions, a 1x1 convolution back, squeeze-excitation and a residual connection.
Nes2Net-X replaces the inner cumulative sums by learnable weighted sums over the stacked
features. The last outer slice passes through unchanged; all groups are concatenated, batch
normalised, pooled over time and classified.

Sub-module and parameter names follow the authors' published modules so their checkpoints load
by name (see :mod:`nes2net_stream.models.checkpoints`).
"""

from __future__ import annotations

import torch
from torch import nn

from nes2net_stream.models.config import BackendConfig


def _activation(name: str) -> nn.Module:
    return nn.SELU() if name == "selu" else nn.ReLU()


class SqueezeExcitation(nn.Module):
    """Channel attention: global average, bottleneck, sigmoid gate (``se`` = Sequential)."""

    def __init__(self, channels: int, ratio: int, min_channels: int = 1):
        super().__init__()
        hidden = max(channels // ratio, min_channels)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, hidden, kernel_size=1),
            nn.ReLU(),
            nn.Conv1d(hidden, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate (B, C, T) features channel-wise."""
        return x * self.se(x)


class _InnerRes2Net(nn.Module):
    """Shared parts of the inner bottlenecks: 1x1 in, 1x1 out, SE, residual."""

    def __init__(self, channels: int, cfg: BackendConfig):
        super().__init__()
        self.width = channels // cfg.inner_ratio
        self.nums = cfg.inner_ratio - 1
        inner = self.width * cfg.inner_ratio
        self.conv1 = nn.Conv1d(channels, inner, kernel_size=1)
        self.bn1 = nn.BatchNorm1d(inner)
        self.conv3 = nn.Conv1d(inner, channels, kernel_size=1)
        self.bn3 = nn.BatchNorm1d(channels)
        self.act = _activation(cfg.activation)
        self.se = SqueezeExcitation(channels, cfg.se_ratio, cfg.se_min_channels)
        self.padding = (cfg.kernel_size // 2) * cfg.dilation

    def _inner(self, chunks: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T)."""
        h = self.bn1(self.act(self.conv1(x)))
        chunks = torch.split(h, self.width, dim=1)
        outs = self._inner(chunks)
        outs.append(chunks[self.nums])
        h = self.bn3(self.act(self.conv3(torch.cat(outs, dim=1))))
        return self.se(h) + x


class Res2NetBottleneck(_InnerRes2Net):
    """Nes2Net inner block: group ``i`` convolves its slice plus the previous group's output."""

    def __init__(self, channels: int, cfg: BackendConfig):
        super().__init__(channels, cfg)
        w = self.width
        self.convs = nn.ModuleList(
            nn.Conv1d(w, w, cfg.kernel_size, dilation=cfg.dilation, padding=self.padding)
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(w) for _ in range(self.nums))

    def _inner(self, chunks: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        running: torch.Tensor | None = None
        for i in range(self.nums):
            running = chunks[i] if running is None else running + chunks[i]
            running = self.bns[i](self.act(self.convs[i](running)))
            outs.append(running)
        return outs


class WeightedRes2NetBottleneck(_InnerRes2Net):
    """Nes2Net-X inner block: stacked features convolved, then a learnable weighted sum.

    Step ``i`` appends slice ``i`` to a stack that starts with the last slice, convolves every
    stacked column with the same dilated kernel, and outputs the weighted sum over the
    ``i + 2`` columns with learnable weights initialised to ``1 / (i + 2)``.
    """

    def __init__(self, channels: int, cfg: BackendConfig):
        super().__init__(channels, cfg)
        w = self.width
        k = cfg.kernel_size
        self.convs = nn.ModuleList(
            nn.Conv2d(w, w, (k, 1), dilation=(cfg.dilation, 1), padding=(self.padding, 0))
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for _ in range(self.nums))
        self.weighted_sum = nn.ParameterList(
            nn.Parameter(torch.full((1, 1, 1, i + 2), 1.0 / (i + 2))) for i in range(self.nums)
        )

    def _inner(self, chunks: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        stack = chunks[self.nums].unsqueeze(-1)  # (B, w, T, 1)
        for i in range(self.nums):
            stack = torch.cat((stack, chunks[i].unsqueeze(-1)), dim=-1)
            stack = self.bns[i](self.act(self.convs[i](stack)))
            outs.append(_weighted_sum(stack, self.weighted_sum[i]))
        return outs


def _weighted_sum(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(stack * weights).sum(-1)`` over the stacked columns.

    Eagerly one matrix-vector product (no product tensor in between: on 2 CPU cores the whole
    back-end ran 3-5 % faster, ``benchmarks/backend_bench.py``); under ``torch.compile`` the
    element-wise form, which inductor fuses with the passes around it (a matrix product would
    be a library call between its generated kernels).
    """
    if torch.compiler.is_compiling():
        return elementwise_weighted_sum(stack, weights)
    return torch.matmul(stack, weights.view(-1, 1)).squeeze(-1)


def elementwise_weighted_sum(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(stack * weights).sum(-1)`` as written: a product tensor, then its sum."""
    return (stack * weights).sum(dim=-1)


class AttentiveStatsPooling(nn.Module):
    """Attentive statistics pooling (ECAPA-TDNN style): weighted mean and std over time."""

    def __init__(self, in_dim: int, bottleneck: int):
        super().__init__()
        self.linear1 = nn.Conv1d(in_dim, bottleneck, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck, in_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, T) -> (B, 2D)."""
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
        mean = (alpha * x).sum(dim=2)
        var = (alpha * x * x).sum(dim=2) - mean * mean
        return torch.cat((mean, var.clamp(min=1e-10).sqrt()), dim=1)


class Nes2Net(nn.Module):
    """Nested Res2Net back-end: (B, D, T) frame features to (B, n_logits) logits."""

    def __init__(self, cfg: BackendConfig):
        super().__init__()
        self.cfg = cfg
        self.C = cfg.input_dim // cfg.outer_ratio
        block = WeightedRes2NetBottleneck if cfg.variant == "nes2net_x" else Res2NetBottleneck
        groups = cfg.outer_ratio - 1
        self.Build_in_Res2Nets = nn.ModuleList(block(self.C, cfg) for _ in range(groups))
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.C) for _ in range(groups))
        self.bn = nn.BatchNorm1d(cfg.input_dim)
        self.act = _activation(cfg.activation)
        pooled = cfg.input_dim
        if cfg.pooling == "astp":
            self.pooling = AttentiveStatsPooling(cfg.input_dim, cfg.astp_bottleneck)
            pooled = 2 * cfg.input_dim
        self.fc = nn.Linear(pooled, cfg.n_logits)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled utterance embedding before the classifier, (B, D) or (B, 2D)."""
        if x.dim() != 3 or x.shape[1] != self.cfg.input_dim:
            raise ValueError(f"expected (batch, {self.cfg.input_dim}, frames), "
                             f"got {tuple(x.shape)}")
        slices = torch.split(x, self.C, dim=1)
        outs: list[torch.Tensor] = []
        running: torch.Tensor | None = None
        for i, block in enumerate(self.Build_in_Res2Nets):
            running = slices[i] if running is None else running + slices[i]
            running = self.bns[i](self.act(block(running)))
            outs.append(running)
        outs.append(slices[-1])
        h = self.act(self.bn(torch.cat(outs, dim=1)))
        if self.cfg.pooling == "astp":
            return self.pooling(h)
        return h.mean(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, T) features -> (B, n_logits) logits (index 1 = bona fide when 2 logits)."""
        return self.fc(self.embed(x))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
