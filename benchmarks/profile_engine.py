"""Where a streaming batch's device time goes: the top kernels of one steady-state batch.

Runs the batch runner as the service configures it (feature cache, bf16 weights, GEMM conv
encoder, FFT positional convolution, fused transformer layers, back-end replayed from a graph)
on ``--batch`` concurrent streams advancing one hop per batch, then records ``--steps`` batches
with ``torch.profiler`` and prints what took the most self time per batch as JSON: on CUDA the
kernels and copies (device time; the operators that launched them are left out, their device
time would count the same kernels twice), otherwise the operators' CPU time; on CUDA also the
operators grouped by input shapes with the device time of the kernels each launched
(``top_operators``: which call a kernel row stands for). What to fuse or rewrite next.
Before the traced batches, untraced ones give ``host_launch_ms`` (until the batch is queued:
on CUDA the host's share of a batch) and ``batch_ms`` (until its logits are back), medians;
after them, batches pipelined as the engine runs them give the device's busy and idle time per
batch (``pipelined``: where the gap between the kernels' sum and the engine's pace goes).

    python benchmarks/profile_engine.py --out profile.json       # CUDA machine
    python benchmarks/profile_engine.py --smoke                   # CPU, tiny geometry
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from nes2net_stream.bench.engine import TINY_SSL, emit, environment, sync
from nes2net_stream.models.checkpoints import build_detector
from nes2net_stream.service.capture import Launched
from nes2net_stream.service.runner import BatchRunner


def self_time_us(event: object, cuda: bool) -> float:
    """An aggregated event's self time in microseconds (device time on CUDA)."""
    if cuda:
        for name in ("self_device_time_total", "self_cuda_time_total"):
            if hasattr(event, name):
                return float(getattr(event, name))
    return float(event.self_cpu_time_total)  # type: ignore[attr-defined]


def top_operators(prof: profile, steps: int, top: int) -> list[dict]:
    """Operators by input shapes, with the device time of the kernels each launched itself.

    Which call of an operation a kernel row stands for (the kernel names do not say: a layer
    norm of the transformer or of the conv encoder, a copy of which tensor).
    """
    events = [e for e in prof.key_averages(group_by_input_shape=True)
              if not str(getattr(e, "device_type", "")).endswith("CUDA")
              and self_time_us(e, True) > 0]
    events.sort(key=lambda e: self_time_us(e, True), reverse=True)
    return [{"name": e.key[:80], "input_shapes": str(e.input_shapes)[:160],
             "ms_per_batch": round(self_time_us(e, True) / 1000 / steps, 3),
             "calls_per_batch": round(e.count / steps, 1)} for e in events[:top]]


def busy_time(intervals: list[tuple[float, float]]) -> tuple[float, float]:
    """(busy, span) of (start, end) intervals: the length of their union and first to last."""
    if not intervals:
        return 0.0, 0.0
    intervals = sorted(intervals)
    busy, (cur_start, cur_end) = 0.0, intervals[0]
    for start, end in intervals[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    return busy, max(e for _, e in intervals) - intervals[0][0]


def device_intervals(prof: profile) -> list[tuple[float, float]]:
    """(start, end) in microseconds of every kernel and copy the profiler saw on the device."""
    return [(e.time_range.start, e.time_range.end) for e in prof.events()
            if str(getattr(e, "device_type", "")).endswith("CUDA")]


def pipelined_idle(launch: Callable[[int], Launched], first: int, steps: int) -> dict | None:
    """The device's busy and idle time per batch with batches pipelined as the engine does.

    The next batch is queued before the previous one's logits are collected; only device
    activity is traced (CPU tracing would slow the host and inflate the idle time). None
    without device events (CPU).
    """
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        pending = launch(first)
        for k in range(first + 1, first + steps):
            nxt = launch(k)
            pending.result()
            pending = nxt
        pending.result()
    busy, span = busy_time(device_intervals(prof))
    if span <= 0:
        return None
    return {"batches": steps, "device_busy_ms_per_batch": round(busy / 1000 / steps, 2),
            "device_span_ms_per_batch": round(span / 1000 / steps, 2),
            "device_idle_share": round(1 - busy / span, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--window-s", type=float, default=4.0)
    ap.add_argument("--hop-samples", type=int, default=16_320)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--compile-norms", action="store_true",
                    help="with [engine] compile_norms (the layer norms as compiled kernels)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.smoke:
        a.batch, a.window_s, a.hop_samples, a.steps, a.top = 4, 1.0, 4800, 2, 15
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    det = build_detector("xlsr300m-nes2net-x", ssl_overrides=TINY_SSL if a.smoke else None,
                         backend_options={"outer_ratio": 4, "inner_ratio": 4} if a.smoke
                         else None, device=device if cuda else None).to(device).eval()
    window = int(a.window_s * 16000)
    runner = BatchRunner(det, window_samples=window, max_batch_size=a.batch,
                         dtype=torch.bfloat16 if cuda else None, cast_weights=cuda,
                         feature_cache=True, use_buckets=False, cuda_graphs=False,
                         compile_norms=a.compile_norms)
    rng = np.random.default_rng(0)
    total = window + a.hop_samples * (3 * a.steps + 4)
    signal = (0.1 * rng.standard_normal((a.batch, total))).astype(np.float32)
    keys = [f"stream-{i}" for i in range(a.batch)]

    def launch(k: int) -> Launched:
        """Queue hop ``k`` of every stream (a whole window each, as the engine gets them)."""
        end = window + a.hop_samples * k
        return runner.launch(signal[:, end - window:end], keys, [end] * a.batch)

    def step(k: int) -> None:
        launch(k).result()

    for k in range(3):  # cache filled, graphs captured, kernels selected
        step(k)
    sync(device)
    host_ms, batch_ms = [], []
    for k in range(3, 3 + a.steps):  # untraced: the host's share of a batch, each waited for
        t0 = time.perf_counter()
        launched = launch(k)
        t1 = time.perf_counter()
        launched.result()
        host_ms.append(1000 * (t1 - t0))
        batch_ms.append(1000 * (time.perf_counter() - t0))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=cuda) as prof:
        for k in range(3 + a.steps, 3 + 2 * a.steps):
            step(k)
        sync(device)
    idle = pipelined_idle(launch, 3 + 2 * a.steps, a.steps) if cuda else None
    events = [e for e in prof.key_averages() if self_time_us(e, cuda) > 0]
    if cuda:  # kernels and copies only: an operator's device time is its kernels' again
        kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
        events = kernels or events
    events.sort(key=lambda e: self_time_us(e, cuda), reverse=True)
    per_batch_ms = sum(self_time_us(e, cuda) for e in events) / 1000.0 / a.steps
    rows = [{"name": e.key[:120], "ms_per_batch": round(self_time_us(e, cuda) / 1000 / a.steps,
                                                         3),
             "calls_per_batch": round(e.count / a.steps, 1),
             "share": round(self_time_us(e, cuda) / 1000 / a.steps / per_batch_ms, 4)}
            for e in events[:a.top]]
    operators = top_operators(prof, a.steps, a.top) if cuda else []
    emit({"benchmark": "profile_engine", "device": str(device), "smoke": a.smoke,
          "environment": environment(device), "batch_size": a.batch, "window_s": a.window_s,
          "hop_samples": a.hop_samples, "steps": a.steps, "compile_norms": a.compile_norms,
          "time_kind": "device self time" if cuda else "CPU self time",
          "self_ms_per_batch": round(per_batch_ms, 3),
          "host_launch_ms": round(float(np.median(host_ms)), 2),
          "batch_ms": round(float(np.median(batch_ms)), 2),
          "staged_samples_per_window": runner.staged_span[1] - runner.staged_span[0],
          "pipelined": idle,
          "top": rows,
          "top_operators": operators}, a.out)


if __name__ == "__main__":
    main()
