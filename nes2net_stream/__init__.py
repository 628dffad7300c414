"""nes2net-stream: real-time voice-deepfake detection for telephone calls with Nes2Net.

Public API (imported lazily so that the command line starts fast)::

    from nes2net_stream import load_model, save_model, Detector
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Calibration", "Detector", "__version__", "load_model", "save_model"]

if TYPE_CHECKING:
    from nes2net_stream.bundle import load_model, save_model
    from nes2net_stream.models.detector import Calibration, Detector

_LAZY = {
    "load_model": "nes2net_stream.bundle",
    "save_model": "nes2net_stream.bundle",
    "Detector": "nes2net_stream.models.detector",
    "Calibration": "nes2net_stream.models.detector",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nes2net_stream' has no attribute {name!r}")
