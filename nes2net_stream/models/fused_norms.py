"""Layer norms with their neighbouring element-wise pass as one generated kernel.

After the fused transformer layers (:mod:`nes2net_stream.models.fused_layers`), the largest
block of device time that is not a matrix product is layer normalisation: on an H200 at batch
256, 57 layer-norm kernels took 9.4 ms per batch, about 30 % of the memory bandwidth their
traffic needs, plus 3.4 ms of residual adds and 1.2 ms of separate GELU passes in the
convolutional encoder (profile in docs/benchmarks.md). :class:`NormKernels` runs these norms
through ``torch.compile`` (Triton kernels on CUDA, C++ on the CPU), each together with its
neighbour:

- :meth:`NormKernels.add_layer_norm`: a residual add and the layer norm of the sum (transformer
  layers: one kernel reads both terms and writes the sum and its norm);
- :meth:`NormKernels.layer_norm`: a layer norm alone (the first pre-LN layer's first norm;
  every later layer's first norm comes with the previous layer's last residual add, through
  :class:`nes2net_stream.models.fused_layers.Handoff`);
- :meth:`NormKernels.layer_norm_gelu`: a layer norm and the exact GELU after it (every layer of
  the convolutional encoder).

Each function is compiled once for all layers (weights are arguments), with a dynamic number of
rows and a static feature width, at the first call (the engine's warm-up). Where compilation
fails (no compiler, no Triton) the kernels log a warning and compute the same eagerly from then
on. Results equal the separate PyTorch operations up to floating-point rounding (tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nes2net_stream.logs import get_logger

log = get_logger("nes2net.fused_norms")

Compiler = Callable[[Callable[..., Any]], Callable[..., Any]]


def _add_layer_norm(fresh: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None,
                    bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    total = fresh + residual
    return total, F.layer_norm(total, total.shape[-1:], weight, bias, eps)


def _add_layer_norm_only(fresh: torch.Tensor, residual: torch.Tensor,
                         weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float) -> torch.Tensor:
    total = fresh + residual
    return F.layer_norm(total, total.shape[-1:], weight, bias, eps)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def _layer_norm_gelu(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     eps: float) -> torch.Tensor:
    return F.gelu(F.layer_norm(x, x.shape[-1:], weight, bias, eps))


def default_compiler(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile`` without graph breaks; sizes become dynamic where marked so."""
    return torch.compile(fn, fullgraph=True, dynamic=None)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(..., D) as (rows, D) with the row count marked dynamic (one compiled version)."""
    flat = x.reshape(-1, x.shape[-1])
    torch._dynamo.maybe_mark_dynamic(flat, 0)
    return flat


class NormKernels:
    """Compiled norm kernels with an eager fall-back (see the module docstring)."""

    def __init__(self, compiler: Compiler | None = None):
        compile_fn = compiler or default_compiler
        self._compiled: dict[str, Callable[..., Any]] = {
            "add_layer_norm": compile_fn(_add_layer_norm),
            "add_layer_norm_only": compile_fn(_add_layer_norm_only),
            "layer_norm": compile_fn(_layer_norm),
            "layer_norm_gelu": compile_fn(_layer_norm_gelu),
        }
        self.active = True  # False after a compilation failed: eager from then on
        self.compiled_calls = 0  # calls that ran compiled (the tests check the path is used)

    def __deepcopy__(self, memo: dict) -> NormKernels:
        """The same kernels: a copied model shares them (they hold no parameters)."""
        return self

    def _call(self, name: str, *tensors: torch.Tensor, norm: nn.LayerNorm) -> Any:
        """Run ``name`` compiled on (rows, D) views; None when inactive or it failed.

        Also None while gradients are recorded: the compiled functions are for inference.
        """
        if not self.active or (torch.is_grad_enabled() and any(
                t is not None and t.requires_grad
                for t in (*tensors, norm.weight, norm.bias))):
            return None
        try:
            out = self._compiled[name](*(_rows(t) for t in tensors), norm.weight, norm.bias,
                                       norm.eps)
        except Exception as exc:  # no compiler / Triton, an unsupported case: eager for good
            self.active = False
            log.warning("compiled norm kernels failed; running them eagerly", error=repr(exc))
            return None
        self.compiled_calls += 1
        return out

    def add_layer_norm(self, fresh: torch.Tensor, residual: torch.Tensor,
                       norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fresh + residual, norm(fresh + residual))``, each shaped like ``fresh``.

        Eagerly the sum is formed in place in ``fresh`` (a temporary) where the dtypes agree.
        """
        out = self._call("add_layer_norm", fresh, residual, norm=norm)
        if out is not None:
            return out[0].view(fresh.shape), out[1].view(fresh.shape)
        total = fresh.add_(residual) if fresh.dtype == residual.dtype else residual + fresh
        return total, norm(total)

    def add_layer_norm_only(self, fresh: torch.Tensor, residual: torch.Tensor,
                            norm: nn.LayerNorm) -> torch.Tensor:
        """``norm(fresh + residual)`` without keeping the sum (post-LN layers)."""
        out = self._call("add_layer_norm_only", fresh, residual, norm=norm)
        if out is not None:
            return out.view(fresh.shape)
        total = fresh.add_(residual) if fresh.dtype == residual.dtype else residual + fresh
        return norm(total)

    def layer_norm(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``norm(x)``."""
        out = self._call("layer_norm", x, norm=norm)
        return norm(x) if out is None else out.view(x.shape)

    def layer_norm_gelu(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``gelu(norm(x))`` with the exact (erf) GELU."""
        out = self._call("layer_norm_gelu", x, norm=norm)
        return F.gelu(norm(x)) if out is None else out.view(x.shape)


def exact_gelu(act: Any) -> bool:
    """True when ``act`` is the exact (erf) GELU: transformers' ``gelu`` or ``nn.GELU()``."""
    if isinstance(act, nn.GELU):
        return act.approximate == "none"
    return type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is F.gelu


def supports_kernels(norm: Any, width: int) -> bool:
    """True for a layer norm over the last ``width`` features that these kernels can run."""
    return isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (width,)
