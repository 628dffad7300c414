"""Engine benchmark: model windows per second and latency per batch, by batch size."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from nes2net_stream.models.detector import Detector


def bench_model(detector: Detector, batch_sizes: list[int], *, window_s: float = 4.0,
                dtype: torch.dtype | None = None, warmup: int = 3, min_time_s: float = 2.0,
                max_iters: int = 200) -> list[dict[str, Any]]:
    """Time forward passes of random windows; one row per batch size."""
    device = next(detector.parameters()).device
    samples = int(window_s * 16000)
    rows = []
    for bs in batch_sizes:
        x = torch.randn(bs, samples, device=device) * 0.1
        ctx = (torch.autocast("cuda", dtype=dtype) if dtype is not None and device.type == "cuda"
               else torch.autocast("cpu", enabled=False))
        with torch.inference_mode(), ctx:
            for _ in range(warmup):
                detector(x)
            sync(device)
            times = []
            start = time.perf_counter()
            while len(times) < max_iters and (time.perf_counter() - start) < min_time_s:
                t = time.perf_counter()
                detector(x)
                sync(device)
                times.append(time.perf_counter() - t)
        times.sort()
        median = times[len(times) // 2]
        rows.append({"batch_size": bs, "iterations": len(times),
                     "latency_ms_median": round(1000 * median, 3),
                     "latency_ms_p90": round(1000 * times[int(0.9 * (len(times) - 1))], 3),
                     "windows_per_s": round(bs / median, 1)})
    return rows


#: a tiny SSL geometry for ``--smoke`` runs of the GPU benchmarks on a CPU
TINY_SSL: dict[str, Any] = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 128, "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2}


def time_calls(fn: Any, device: torch.device, min_time_s: float, max_iters: int) -> float:
    """Median seconds per call of ``fn`` (device work included) after 2 warm-up calls."""
    for _ in range(2):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (a no-op on CPU), so timings cover the whole computation."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print a benchmark's JSON result and, with ``out``, also write it there."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
