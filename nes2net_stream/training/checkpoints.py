"""Training checkpoints: atomic saves, resume state and checkpoint averaging."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nes2net_stream.errors import DataError


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: an interruption never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_json(data: Any, path: Path) -> None:
    """Write JSON atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; other tensors are taken from the first.

    Averaging the weights of the best epochs is the recipe of the official Nes2Net code for its
    best ASVspoof 2021 DF result (5 checkpoints averaged).
    """
    if not states:
        raise DataError("no checkpoints to average")
    keys = states[0].keys()
    for s in states[1:]:
        if s.keys() != keys:
            raise DataError("checkpoints to average have different parameters")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        first = states[0][k]
        if first.is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(dim=0).to(first.dtype)
        else:
            out[k] = first.clone()
    return out


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a training checkpoint written by the trainer (trusted local file)."""
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
