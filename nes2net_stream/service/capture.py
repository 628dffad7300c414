"""Graph capture and launched batches: the pieces the batch runner is built from.

:data:`Capture` turns a forward function and a static input into a replay function and a static
output: :func:`cuda_capture` records a CUDA graph; :func:`eager_capture` keeps the same
static-buffer semantics without a GPU, so the CPU tests run the runner's graph paths.
:class:`Launched` is a batch queued on the device whose logits come back asynchronously.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
# capture(fn, static input) -> (replay, static output): after replay(), the static output
# holds fn(static input) for the input's current contents
Capture = Callable[[Forward, torch.Tensor], tuple[Callable[[], None], torch.Tensor]]
# compiler(module) -> a callable with the module's results (torch.compile by default)
Compiler = Callable[[torch.nn.Module], Forward]


def default_compiler(module: torch.nn.Module, *, static: bool = False) -> Forward:
    """``torch.compile``: one version per shape (``static``) or automatic dynamic shapes."""
    return torch.compile(module, dynamic=False if static else None)  # type: ignore[return-value]


def cuda_capture(fn: Forward, static_in: torch.Tensor) -> tuple[Callable[[], None],
                                                                 torch.Tensor]:
    """Capture ``fn(static_in)`` in a CUDA graph (after warm-up runs on a side stream)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # cuDNN autotuning and lazy allocations happen before capture
            fn(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)
    return graph.replay, static_out


def eager_capture(fn: Forward, static_in: torch.Tensor) -> tuple[Callable[[], None],
                                                                  torch.Tensor]:
    """Graph semantics without a GPU: replay recomputes into the same static output buffer.

    Lets the CPU test suite run the runner's graph paths (static buffers, bucket padding,
    output reuse between replays) against eager execution.
    """
    static_out = fn(static_in).clone()

    def replay() -> None:
        static_out.copy_(fn(static_in))

    return replay, static_out


@dataclass
class Launched:
    """A batch whose forward pass was queued on the device; :meth:`result` waits for it."""

    n: int
    logits: torch.Tensor  # CPU logits, or a pinned buffer the device is still filling
    done: torch.cuda.Event | None = None

    def ready(self) -> bool:
        """True when :meth:`result` would not block."""
        return self.done is None or self.done.query()

    def result(self) -> torch.Tensor:
        """The batch's (n, n_logits) float32 logits on the CPU (blocks until ready)."""
        if self.done is None:
            return self.logits
        self.done.synchronize()
        return self.logits[:self.n].clone()
