"""Installing an inference ``forward`` on one module instance, and taking it away again.

The leaner computation forms (:mod:`nes2net_stream.models.fused_layers`,
:mod:`nes2net_stream.models.pos_conv_fft`) replace a module's ``forward`` with an instance
attribute holding a callable object bound to that module: parameters, state dict, hooks and
device moves stay the module's own, and deleting the attribute restores its class's forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


def set_forward(module: nn.Module, form: type, on: bool, supported: Callable[[], bool],
                refusal: Callable[[], str]) -> None:
    """Install ``form(module)`` as ``module.forward`` (``on``) or restore the class's forward.

    ``supported()`` False raises ``ValueError(refusal())``; an installed ``form`` is kept.
    """
    if not on:
        module.__dict__.pop("forward", None)
        return
    if not supported():
        raise ValueError(refusal())
    if not isinstance(module.__dict__.get("forward"), form):
        module.forward = form(module)  # type: ignore[method-assign]


def has_forward(module: Any, form: type) -> bool:
    """True while ``module`` runs through an installed ``form``."""
    return isinstance(getattr(module, "__dict__", {}).get("forward"), form)
