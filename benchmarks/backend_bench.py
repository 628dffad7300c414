"""The Nes2Net-X back-end alone: eager, replayed from a CUDA graph, compiled, both.

XLS-R 300M's back-end (D = 1024, 8 x 8 groups, 200 frames per 4 s window) with random
weights. It is made of about 400 small kernels (16-channel convolutions, activations, batch
norms, weighted sums), so it is launch- and latency-bound at every batch size: 5.2 ms per batch
of 128 replayed from a graph on an H200 (research ceilings), about a tenth of the whole cached
model's time, which the engine target cannot afford. Columns per batch size: ``eager_ms`` and
``eager_elementwise_sum_ms`` (Nes2Net-X's weighted sums as multiply-and-sum instead of matrix
products, measured alternately with the first); ``compiled_ms`` (``torch.compile``, what
``[engine] compile_backend`` does); on CUDA also ``graph_ms``, ``graph_elementwise_sum_ms`` and
``compiled_graph_ms`` (the engine replays the back-end from a graph for large buckets); the
compile time of each new shape (the first is static, the second recompiles with a dynamic batch
that covers the rest) and the compiled output's largest difference from eager.
Prints JSON.

    python benchmarks/backend_bench.py --out backend.json        # CUDA machine (bf16)
    python benchmarks/backend_bench.py --batch-sizes 1,16         # CPU (float32)
    python benchmarks/backend_bench.py --input-dim 256 --outer-ratio 4 --frames 401  # demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from nes2net_stream.bench.engine import emit, environment, sync, time_calls
from nes2net_stream.models import nes2net
from nes2net_stream.models.config import BackendConfig
from nes2net_stream.models.nes2net import Nes2Net
from nes2net_stream.service.capture import cuda_capture, default_compiler


def median_ms(fn: Any, device: torch.device, min_time_s: float, max_iters: int) -> float:
    """Median milliseconds per call (see :func:`time_calls`)."""
    return round(1000 * time_calls(fn, device, min_time_s, max_iters), 3)


@contextlib.contextmanager
def elementwise_weighted_sums() -> Iterator[None]:
    """Nes2Net-X's weighted sums as multiply-and-sum (the form before the matrix product)."""
    saved = nes2net._weighted_sum
    nes2net._weighted_sum = nes2net.elementwise_weighted_sum
    try:
        yield
    finally:
        nes2net._weighted_sum = saved


def eager_ab(fn: Any, device: torch.device, min_time_s: float, max_iters: int,
             rounds: int = 5) -> tuple[float, float]:
    """Median ms of ``fn`` with the weighted sums as products and element-wise, alternating
    ``rounds`` times (this machine's drift between two separate runs exceeded the difference).
    """
    current: list[float] = []
    elementwise: list[float] = []
    for _ in range(rounds):
        current.append(median_ms(fn, device, min_time_s / rounds, max_iters))
        with elementwise_weighted_sums():
            elementwise.append(median_ms(fn, device, min_time_s / rounds, max_iters))
    return statistics.median(current), statistics.median(elementwise)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="1,32,128,256")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--min-time-s", type=float, default=1.0)
    ap.add_argument("--max-iters", type=int, default=200)
    ap.add_argument("--input-dim", type=int, default=1024)
    ap.add_argument("--outer-ratio", type=int, default=8)
    ap.add_argument("--inner-ratio", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="a small back-end, for tests")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    cfg = BackendConfig(variant="nes2net_x", dilation=2, input_dim=a.input_dim,
                        outer_ratio=a.outer_ratio, inner_ratio=a.inner_ratio)
    if a.smoke:
        cfg = BackendConfig(variant="nes2net_x", input_dim=64, outer_ratio=4, inner_ratio=4,
                            dilation=2)
        a.batch_sizes, a.frames, a.min_time_s, a.max_iters = "1,4", 50, 0.05, 5
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    eager = Nes2Net(cfg).eval().to(device, dtype)
    compiled = default_compiler(eager)
    rows = []
    with torch.inference_mode():
        for bs in [int(b) for b in a.batch_sizes.split(",")]:
            x = torch.randn(bs, cfg.input_dim, a.frames, device=device, dtype=dtype)
            t = time.perf_counter()
            got = compiled(x)
            sync(device)
            row = {"batch_size": bs, "compile_s": round(time.perf_counter() - t, 2),
                   "max_abs_diff": float((got.float() - eager(x).float()).abs().max()),
                   "compiled_ms": median_ms(lambda xx=x: compiled(xx), device, a.min_time_s,
                                            a.max_iters)}
            row["eager_ms"], row["eager_elementwise_sum_ms"] = eager_ab(
                lambda xx=x: eager(xx), device, a.min_time_s, a.max_iters)
            if device.type == "cuda":
                for name, fn in (("graph_ms", eager), ("compiled_graph_ms", compiled)):
                    replay, _ = cuda_capture(fn, x.clone())
                    row[name] = median_ms(replay, device, a.min_time_s, a.max_iters)
                with elementwise_weighted_sums():  # captured with the element-wise form
                    replay, _ = cuda_capture(eager, x.clone())
                row["graph_elementwise_sum_ms"] = median_ms(replay, device, a.min_time_s,
                                                            a.max_iters)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    emit({"benchmark": "backend", "device": str(device), "smoke": a.smoke,
          "environment": environment(device), "dtype": str(dtype).removeprefix("torch."),
          "frames": a.frames, "config": {"input_dim": cfg.input_dim,
                                         "outer_ratio": cfg.outer_ratio,
                                         "inner_ratio": cfg.inner_ratio},
          "rows": rows}, a.out)


if __name__ == "__main__":
    main()
