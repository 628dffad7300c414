"""The authors' published Nes2Net checkpoints: architecture presets and conversion.

See docs/checkpoints.md. fairseq and s3prl are not needed: the SSL front-ends run on
transformers' ``Wav2Vec2Model`` / ``WavLMModel`` with the weights renamed. The presets import
without torch (the command line lists them); the conversion functions load it on first use.
"""

from __future__ import annotations

from typing import Any

from nes2net_stream.models.checkpoints.presets import (
    ARCHITECTURES,
    BACKEND_OPTIONS,
    WAVLM_LARGE,
    XLSR_300M,
    Architecture,
    get_architecture,
)

_LAZY = ("ConversionReport", "build_detector", "convert_checkpoint", "convert_state_dict",
         "describe_checkpoint", "read_checkpoint", "unwrap_state")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from nes2net_stream.models.checkpoints import official

        return getattr(official, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "BACKEND_OPTIONS",
    "WAVLM_LARGE",
    "XLSR_300M",
    "Architecture",
    "ConversionReport",
    "build_detector",
    "convert_checkpoint",
    "convert_state_dict",
    "describe_checkpoint",
    "get_architecture",
    "read_checkpoint",
    "unwrap_state",
]
