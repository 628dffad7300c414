"""Streaming engine throughput, one engine optimisation at a time (ablation).

Simulates ``batch`` concurrent call channels, each advancing by one hop (default 1.02 s: one
second of speech rounded up to 30 ms VAD frames, as the service's windows are) per engine
batch, and times the batch runner in steady state in these configurations:

- ``uncached``: the whole 4 s window through the model, bf16 autocast (the first baseline);
- ``cached``: the per-stream conv feature cache (each window encodes only its new audio);
- ``cached_backend_graph``: plus the back-end replayed from a CUDA graph;
- ``cached_backend_graph_bf16_weights``: plus the model cast to bf16 (``dtype_mode =
  "weights"``), the service's default on CUDA;
- ``uncached_backend_graph_bf16_weights``: the same without the cache;
- ``cached_backend_graph_bf16_weights_gemm_conv`` and
  ``uncached_backend_graph_bf16_weights_gemm_conv``: the same two with the conv feature
  encoder as channels-last matrix products (``[engine] conv_encoder = "gemm"``, the service
  default; the columns above use transformers' own encoder);
- ``cached_backend_graph_bf16_weights_gemm_conv_compiled``: the first of those with the
  back-end compiled by ``torch.compile`` (``[engine] compile_backend``), replayed from the same
  graphs;
- ``cached_backend_graph_bf16_weights_gemm_conv_fft_pos``: the same (not compiled) with the
  transformer's positional convolution through FFTs (``[engine] pos_conv = "fft"``);
- ``..._fft_pos_fused_layers``: plus the transformer layers' fused forward (``[engine]
  encoder_layers = "fused"``; every column above runs transformers' own layers), and
  ``..._fft_pos_fused_layers_compiled`` with the compiled back-end as well;
  ``..._fft_pos_fused_layers_compiled_norms``: the fused layers with the layer norms compiled
  with their residual add or GELU (``[engine] compile_norms``).

Each column also gives ``warmup_s``, the first two batches (cache fill, graph capture and, for
the compiled back-end, compilation).

Also reports each configuration's largest logit difference from ``uncached`` (the cache is exact
up to float rounding; bf16 weights round differently). Then the whole scoring engine with the
service's defaults (all of the above, dynamic batching) is timed on the same streams with its
loop pipelined (``[engine] pipeline``, the default on CUDA) and sequential: ``engine_pipelined``
and ``engine_sequential`` (windows per second over all steps, results delivered);
``engine_pipelined_one_stream`` copies staged batches to the device in the compute stream
(before the copy stream), ``engine_pipelined_native_layers`` is the first with transformers'
own layers and
``engine_pipelined_compiled`` with the compiled back-end, ``engine_pipelined_compiled_norms``
with the compiled norm kernels and ``engine_pipelined_compiled_all`` with both (compiled during
the engine's warm-up, which is not timed). Engine columns also give ``batch_ms`` and
``host_ms_per_batch``, the scoring worker's own host time per batch (staging, queuing kernels,
delivering scores): close to ``batch_ms``, the host is what limits the pipelined engine.
XLS-R 300M + Nes2Net-X with random weights on CUDA (bf16); ``--smoke`` or ``--cpu-geometry``
pick smaller front-ends with the same conv geometry for CPUs. Prints JSON.

    python benchmarks/feature_cache_bench.py --out cache.json            # CUDA machine
    python benchmarks/feature_cache_bench.py --cpu-geometry --batch-sizes 8,16
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from nes2net_stream.bench.engine import TINY_SSL, emit, environment, sync
from nes2net_stream.models.checkpoints import build_detector
from nes2net_stream.service.engine import ScoringEngine
from nes2net_stream.service.runner import BatchRunner

# XLS-R's conv stack (512 channels) under a small transformer: the CPU-sized case where the
# convolutional encoder is a large share of the cost, as it is on the GPU
CPU_SSL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
           "intermediate_size": 1024}


class Config(NamedTuple):
    """One configuration: the :class:`BatchRunner` arguments that differ between columns."""

    feature_cache: bool
    backend_graphs: bool = False
    cast_weights: bool = False
    conv_encoder: str = "native"
    compile_backend: bool = False
    pos_conv: str = "native"
    encoder_layers: str = "native"
    compile_norms: bool = False


_BF16 = {"backend_graphs": True, "cast_weights": True}
CONFIGS = {
    "uncached": Config(False),
    "cached": Config(True),
    "cached_backend_graph": Config(True, backend_graphs=True),
    "cached_backend_graph_bf16_weights": Config(True, **_BF16),
    "uncached_backend_graph_bf16_weights": Config(False, **_BF16),
    "cached_backend_graph_bf16_weights_gemm_conv": Config(True, **_BF16, conv_encoder="gemm"),
    "uncached_backend_graph_bf16_weights_gemm_conv": Config(False, **_BF16,
                                                            conv_encoder="gemm"),
    "cached_backend_graph_bf16_weights_gemm_conv_compiled": Config(
        True, **_BF16, conv_encoder="gemm", compile_backend=True),
    "cached_backend_graph_bf16_weights_gemm_conv_fft_pos": Config(
        True, **_BF16, conv_encoder="gemm", pos_conv="fft"),
    "cached_backend_graph_bf16_weights_gemm_conv_fft_pos_fused_layers": Config(
        True, **_BF16, conv_encoder="gemm", pos_conv="fft", encoder_layers="fused"),
    "cached_backend_graph_bf16_weights_gemm_conv_fft_pos_fused_layers_compiled": Config(
        True, **_BF16, conv_encoder="gemm", pos_conv="fft", encoder_layers="fused",
        compile_backend=True),
    "cached_backend_graph_bf16_weights_gemm_conv_fft_pos_fused_layers_compiled_norms": Config(
        True, **_BF16, conv_encoder="gemm", pos_conv="fft", encoder_layers="fused",
        compile_norms=True),
}


class EngineColumn(NamedTuple):
    """A whole-engine column: the :class:`ScoringEngine` settings that differ."""

    pipeline: bool = True
    encoder_layers: str = "fused"
    compile_backend: bool = False
    compile_norms: bool = False
    copy_stream: bool = True


ENGINE_COLUMNS = {"engine_pipelined": EngineColumn(),
                  "engine_pipelined_one_stream": EngineColumn(copy_stream=False),
                  "engine_sequential": EngineColumn(pipeline=False),
                  "engine_pipelined_native_layers": EngineColumn(encoder_layers="native"),
                  "engine_pipelined_compiled": EngineColumn(compile_backend=True),
                  "engine_pipelined_compiled_norms": EngineColumn(compile_norms=True),
                  "engine_pipelined_compiled_all": EngineColumn(compile_backend=True,
                                                                compile_norms=True)}


class ColumnFailed(RuntimeError):
    """One column could not be measured (the others still are)."""


def check_compiled(settings: Config | EngineColumn, runner: BatchRunner) -> None:
    """ColumnFailed when a part asked to run compiled fell back to eager (see the warning)."""
    if settings.compile_backend and not runner.backend_compiled:
        raise ColumnFailed("the back-end failed to compile (see the warning above)")
    if settings.compile_norms and not runner.norms_compiled:
        raise ColumnFailed("the norm kernels failed to compile (see the warning above)")


def measure(det: torch.nn.Module, batch: int, window: int, hop: int, steps: int,
            config: Config, dtype: torch.dtype | None,
            device: torch.device) -> tuple[float, float, torch.Tensor]:
    """Median seconds per steady-state batch, warm-up seconds, the logits of the last batch."""
    runner = BatchRunner(copy.deepcopy(det), window_samples=window, max_batch_size=batch,
                         dtype=dtype, use_buckets=False, cuda_graphs=False, **config._asdict())
    rng = np.random.default_rng(1)
    signal = (0.1 * rng.standard_normal((batch, window + hop * (steps + 3)))).astype(np.float32)
    keys = [f"stream-{i}" for i in range(batch)]

    def step(k: int) -> torch.Tensor:
        end = window + hop * k
        return runner.run(signal[:, end - window:end], keys, [end] * batch)

    t0 = time.perf_counter()
    step(0)  # fills the cache (and warms up: graph capture, compilation)
    step(1)
    sync(device)
    warmup = time.perf_counter() - t0
    check_compiled(config, runner)
    times = []
    logits = torch.empty(0)
    for k in range(2, steps + 2):
        t = time.perf_counter()
        logits = step(k)
        sync(device)
        times.append(time.perf_counter() - t)
    if config.feature_cache:
        assert runner.cache is not None and runner.cache.hits >= batch * steps
    return sorted(times)[len(times) // 2], warmup, logits


def measure_engine(det: torch.nn.Module, batch: int, window: int, hop: int, steps: int,
                   dtype: torch.dtype | None, device: torch.device,
                   column: EngineColumn) -> dict[str, float]:
    """The whole engine on ``batch`` streams, ``steps`` hops each.

    ``windows_per_s`` over the timed hops (results delivered), ``warmup_s`` (every bucket
    captured, compiled where asked), and per batch the wall time ``batch_ms`` and the worker's
    host time ``host_ms_per_batch`` (staging, queuing kernels, delivering scores: when it
    nears ``batch_ms``, the host and not the device limits the pipelined engine).
    """
    engine = ScoringEngine(copy.deepcopy(det),
                           max_batch_size=batch, max_delay_ms=5.0, max_queue=batch * (steps + 3),
                           dtype=dtype, window_samples=window, cast_weights=dtype is not None,
                           **column._asdict())
    t0 = time.perf_counter()
    engine.warmup()  # every bucket: graph capture and, compiled, compilation
    warmup = time.perf_counter() - t0
    check_compiled(column, engine.runner)
    rng = np.random.default_rng(2)
    signal = (0.1 * rng.standard_normal((batch, window + hop * (steps + 3)))).astype(np.float32)
    done = threading.Semaphore(0)
    failed: list[BaseException] = []

    def deliver(result: object, error: BaseException | None) -> None:
        if error is not None:
            failed.append(error)
        done.release()

    def submit_steps(first: int, count: int) -> None:
        for k in range(first, first + count):
            end = window + hop * k
            for i in range(batch):
                engine.submit_callback(signal[i, end - window:end], deliver, key=f"s{i}",
                                       end=end)
        for _ in range(batch * count):
            done.acquire()
        if failed:
            raise ColumnFailed(f"window failed: {failed[0]!r}")

    engine.start()
    try:
        submit_steps(0, 2)  # fills the cache, captures graphs
        sync(device)
        host0, batches0 = engine.host_seconds, engine.batches
        t = time.perf_counter()
        submit_steps(2, steps)
        secs = time.perf_counter() - t
        batches = max(1, engine.batches - batches0)
        host = engine.host_seconds - host0
    finally:
        engine.stop()
    return {"windows_per_s": round(batch * steps / secs, 1), "warmup_s": round(warmup, 1),
            "batches": batches, "batch_ms": round(1000 * secs / batches, 2),
            "host_ms_per_batch": round(1000 * host / batches, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="64,128,256")
    ap.add_argument("--window-s", type=float, default=4.0)
    ap.add_argument("--hop-samples", type=int, default=16_320)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--cpu-geometry", action="store_true")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated configurations to time (uncached always runs)")
    ap.add_argument("--no-engine", action="store_true",
                    help="skip the whole-engine (pipelined vs sequential) measurements")
    ap.add_argument("--engine-columns", default="engine_pipelined,engine_sequential",
                    help=f"whole-engine columns to time, of {', '.join(ENGINE_COLUMNS)}")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.smoke:
        a.batch_sizes, a.window_s, a.steps, a.hop_samples = "2,4", 1.0, 3, 4800
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = TINY_SSL if a.smoke else (CPU_SSL if a.cpu_geometry else None)
    torch.manual_seed(0)
    det = build_detector("xlsr300m-nes2net-x", ssl_overrides=overrides,
                         backend_options={"outer_ratio": 4, "inner_ratio": 4} if overrides
                         else None, device=device if device.type == "cuda" else None)
    det = det.to(device).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else None
    window = int(a.window_s * 16000)
    rows = []
    names = [n for n in a.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        ap.error(f"unknown --configs {unknown}; choose from {sorted(CONFIGS)}")
    unknown = sorted(set(a.engine_columns.split(",")) - set(ENGINE_COLUMNS) - {""})
    if unknown:
        ap.error(f"unknown --engine-columns {unknown}; choose from {sorted(ENGINE_COLUMNS)}")
    for bs in [int(b) for b in a.batch_sizes.split(",")]:
        row: dict = {"batch_size": bs}
        base = None
        for name in ["uncached"] + [n for n in names if n != "uncached"]:
            try:
                secs, warmup, logits = measure(det, bs, window, a.hop_samples, a.steps,
                                               CONFIGS[name], dtype, device)
            except Exception as exc:  # one column's failure (a compiler, memory) ends no run
                if name == "uncached":
                    raise  # the reference for every other column
                row[name] = {"error": repr(exc)[:500]}
                print(json.dumps(row), file=sys.stderr, flush=True)
                continue
            base = logits if base is None else base
            row[name] = {"latency_ms": round(1000 * secs, 2),
                         "windows_per_s": round(bs / secs, 1), "warmup_s": round(warmup, 2),
                         "max_abs_logit_diff_vs_uncached": float((logits - base).abs().max())}
            print(json.dumps(row), file=sys.stderr, flush=True)  # progress, column by column
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for name in [] if a.no_engine else [c for c in a.engine_columns.split(",") if c]:
            try:
                row[name] = measure_engine(det, bs, window, a.hop_samples, a.steps, dtype,
                                           device, ENGINE_COLUMNS[name])
            except Exception as exc:
                row[name] = {"error": repr(exc)[:500]}
            print(json.dumps(row), file=sys.stderr, flush=True)  # progress, column by column
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    best = max((v["windows_per_s"] for r in rows for k, v in r.items()
                if k != "batch_size" and "windows_per_s" in v), default=None)
    result = {"benchmark": "feature_cache", "device": str(device), "smoke": a.smoke,
              "geometry": "tiny" if a.smoke else ("cpu" if a.cpu_geometry else "xlsr300m"),
              "environment": environment(device), "window_s": a.window_s,
              "hop_samples": a.hop_samples, "dtype": "bfloat16" if dtype else "float32",
              "rows": rows, "best_windows_per_s": best}
    emit(result, a.out)


if __name__ == "__main__":
    main()
