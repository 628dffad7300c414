"""Feature masking (SpecAugment-style) of the back-end's input during training.

Zeroes random bands of feature channels and random spans of frames of each training crop's
(B, D, frames) features, so the back-end cannot lean on one narrow band or moment: a codec that
removes or distorts a band at test time then costs less (Park et al., "SpecAugment",
Interspeech 2019, arXiv:1904.08779). With the mean-normalised spectral front-ends a zero is the
channel's mean over the crop. Used in training only; inference never masks.
"""

from __future__ import annotations

import torch


def _spans(rows: int, length: int, max_width: int, count: int,
           generator: torch.Generator) -> torch.Tensor:
    """(rows, length) bool: ``count`` spans per row, each 0..``max_width`` long."""
    width = torch.randint(0, max_width + 1, (rows, count), generator=generator)
    start = (torch.rand(rows, count, generator=generator) * (length - width + 1)).long()
    pos = torch.arange(length)[None, None, :]
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])
    return inside.any(dim=1)


def mask_features(feats: torch.Tensor, *, max_channels: int, max_frames: int,
                  generator: torch.Generator, count: int = 2) -> torch.Tensor:
    """Return ``feats`` (B, D, T) with ``count`` channel bands and frame spans zeroed per row.

    Args:
        feats: back-end input features.
        max_channels: widest channel band (0: no channel masks); at most D.
        max_frames: longest frame span (0: no frame masks); at most T.
        generator: CPU generator of the mask positions (reproducible training).
        count: masks of each kind per row.
    """
    rows, dim, frames = feats.shape
    keep = torch.ones(rows, dim, frames, dtype=torch.bool)
    if max_channels > 0:
        keep &= ~_spans(rows, dim, min(max_channels, dim), count, generator)[:, :, None]
    if max_frames > 0:
        keep &= ~_spans(rows, frames, min(max_frames, frames), count, generator)[:, None, :]
    return feats * keep.to(device=feats.device, dtype=feats.dtype)
