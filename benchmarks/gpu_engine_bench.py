"""Scoring-engine throughput on a GPU: eager vs cuDNN autotuning vs bucketed CUDA graphs.

Builds XLS-R 300M + Nes2Net-X with random weights (weights do not change the cost), then times
the engine's batch runner (pinned host staging, asynchronous copy) for each batch size in these
modes, all but the last with transformers' positional convolution (``pos_conv = "native"``):
plain eager (bf16 autocast); eager with ``cudnn.benchmark``;
CUDA graphs (whole model replayed for buckets up to 16, the back-end alone above); the same
with the model cast to bf16 (``dtype_mode = "weights"``); that plus the conv feature encoder as
channels-last matrix products (``[engine] conv_encoder = "gemm"``; the other modes use
transformers' encoder); and that with the whole model replayed from a graph at every bucket
(with autocast that was slower than eager from batch 32 up; with cast weights it may not be);
``..._fft_pos`` (the positional convolution through FFTs, so the front-end runs on a batch's
real rows and only the back-end on its padded bucket; compare it with
``cuda_graph_bucket_bf16_weights_gemm_conv`` at a batch size between buckets, e.g. 192); and
the service's defaults, ``..._fft_pos_fused_layers`` (the transformer layers' fused forward,
``[engine] encoder_layers = "fused"``; every other mode runs transformers' own layers).
Also checks that graph replay and bucket padding give the same logits as eager execution, and
times each stage of the model (``stages``:
conv encoder, feature projection, positional convolution direct and through FFTs
(``[engine] pos_conv``), transformer layers (transformers', fused (``[engine] encoder_layers``)
and fused with compiled norm kernels (``[engine] compile_norms``)), back-end), with
the conv encoder also compared alone (``conv_encoder``: native vs GEMM on a whole window and on
one hop's new audio, times and largest difference; ``conv_gemm_hop_gathered``: the hop with
every layer's receptive fields gathered by a copy, the GEMM encoder's form before its padded
one; ``conv_gemm_hop_compiled_norms``: the hop with its layer norms and GELUs compiled).
Prints JSON.

    python benchmarks/gpu_engine_bench.py --out engine.json     # CUDA machine
    python benchmarks/gpu_engine_bench.py --smoke               # CPU, tiny geometry
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from nes2net_stream.bench.engine import TINY_SSL, emit, environment, time_calls
from nes2net_stream.models.checkpoints import build_detector
from nes2net_stream.models.conv_gemm import gemm_conv_features
from nes2net_stream.models.fused_norms import NormKernels
from nes2net_stream.service.capture import cuda_capture
from nes2net_stream.service.runner import BatchRunner

MODES = ("eager", "eager_cudnn_benchmark", "cuda_graph_bucket", "cuda_graph_bucket_bf16_weights",
         "cuda_graph_bucket_bf16_weights_gemm_conv",
         "cuda_graph_all_buckets_bf16_weights_gemm_conv",
         "cuda_graph_bucket_bf16_weights_gemm_conv_fft_pos",
         "cuda_graph_bucket_bf16_weights_gemm_conv_fft_pos_fused_layers")


def stage_times(det: torch.nn.Module, batch: int, samples: int, dtype: torch.dtype | None,
                device: torch.device, min_time_s: float, max_iters: int
                ) -> tuple[dict, list[dict]]:
    """Milliseconds per stage of the SSL front-end and the back-end at one batch size.

    Conv encoder (native and GEMM, whole window and one hop's new audio), feature projection,
    the convolutional positional embedding (direct and through FFTs), the transformer layers,
    the back-end (eager and, on CUDA, replayed from a graph): where the rest of the time goes
    once the conv encoder is cheap. Also returns the conv encoder comparison (times and
    largest GEMM-vs-native difference per input length).
    """
    model = copy.deepcopy(det).to(dtype) if dtype is not None else copy.deepcopy(det)
    frontend, ssl, backend = model.frontend, model.frontend.model, model.backend
    frontend.pos_conv_impl = "native"  # the copied model may carry a runner's setting
    act = dtype or torch.float32
    out: dict = {"batch_size": batch}

    def t(name: str, fn: Any) -> Any:
        out[f"{name}_ms"] = round(1000 * time_calls(fn, device, min_time_s, max_iters), 3)
        return fn()

    conv_entries = []
    with torch.inference_mode():
        # 16,400 samples: 51 new frames, one 1.02 s hop of the streaming cache
        for length, tag in ((samples, "window"), (16_400, "hop")):
            x = 0.1 * torch.randn(batch, length, device=device, dtype=act)
            convs = {}
            for impl in ("native", "gemm"):
                frontend.conv_impl = impl
                convs[impl] = t(f"conv_{impl}_{tag}", lambda xx=x: frontend.conv_features(xx))
            entry = {"batch_size": batch, "samples": length,
                     "native_ms": out[f"conv_native_{tag}_ms"],
                     "gemm_ms": out[f"conv_gemm_{tag}_ms"],
                     "max_abs_diff": float((convs["gemm"] - convs["native"]).abs().max()),
                     "max_abs_native": float(convs["native"].abs().max())}
            conv_entries.append(entry)
            print(json.dumps({"conv_encoder": entry}), file=sys.stderr, flush=True)
        hop = 0.1 * torch.randn(batch, 16_400, device=device, dtype=act)
        # the GEMM encoder gathering every layer's receptive fields (a copy each where they
        # overlap), as it did before its padded form (the default on accelerators, bf16)
        layers_ = frontend.model.feature_extractor.conv_layers
        t("conv_gemm_hop_gathered", lambda: gemm_conv_features(layers_, hop, padded=False))
        # [engine] compile_norms: each layer norm + GELU of the GEMM encoder one kernel
        kernels = NormKernels()
        frontend.use_norm_kernels(kernels)
        fused_conv = t("conv_gemm_hop_compiled_norms", lambda: frontend.conv_features(hop))
        frontend.use_norm_kernels(None)
        out["conv_gemm_hop_compiled_norms_max_abs_diff"] = float(
            (fused_conv.float() - frontend.conv_features(hop).float()).abs().max())
        conv = frontend.conv_features(0.1 * torch.randn(batch, samples, device=device,
                                                        dtype=act))
        hidden, _ = t("feature_projection", lambda: ssl.feature_projection(conv.transpose(1, 2)))
        enc = ssl.encoder
        native_pos = t("positional_conv", lambda: enc.pos_conv_embed(hidden))
        frontend.pos_conv_impl = "fft"  # [engine] pos_conv = "fft"
        fft_pos = t("positional_conv_fft", lambda: enc.pos_conv_embed(hidden))
        out["positional_conv_fft_max_abs_diff"] = float(
            (fft_pos.float() - native_pos.float()).abs().max())
        out["positional_conv_max_abs"] = float(native_pos.float().abs().max())
        frontend.pos_conv_impl = "native"

        def layers() -> torch.Tensor:
            h = hidden
            for layer in enc.layers:
                h = layer(h)
                h = h[0] if isinstance(h, tuple) else h
            return h

        native_layers = t("transformer_layers", layers)
        frontend.layers_impl = "fused"  # [engine] encoder_layers = "fused"
        fused_layers = t("transformer_layers_fused", layers)
        out["transformer_layers_fused_max_abs_diff"] = float(
            (fused_layers.float() - native_layers.float()).abs().max())
        out["transformer_layers_max_abs"] = float(native_layers.float().abs().max())
        frontend.use_norm_kernels(kernels)  # [engine] compile_norms
        compiled = t("transformer_layers_fused_compiled_norms", layers)
        out["norm_kernels_compiled"] = kernels.active  # False: they fell back to eager
        out["transformer_layers_fused_compiled_norms_max_abs_diff"] = float(
            (compiled.float() - native_layers.float()).abs().max())
        frontend.use_norm_kernels(None)
        frontend.layers_impl = "native"
        feats = frontend(0.1 * torch.randn(batch, samples, device=device, dtype=act))
        t("whole_frontend", lambda: frontend.forward_from_conv(conv))
        t("backend_eager", lambda: backend(feats))
        if device.type == "cuda":
            replay, _ = cuda_capture(backend, feats.clone())
            t("backend_graph", replay)
    print(json.dumps({"stages": out}), file=sys.stderr, flush=True)
    return out, conv_entries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    ap.add_argument("--window-s", type=float, default=4.0)
    ap.add_argument("--min-time-s", type=float, default=1.5)
    ap.add_argument("--max-iters", type=int, default=100)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma-separated modes to time (default: all)")
    ap.add_argument("--stages-only", action="store_true",
                    help="only the per-stage timings, at the given batch sizes (e.g. a CPU)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.smoke:
        a.batch_sizes, a.window_s, a.min_time_s, a.max_iters = "1,2,3", 1.0, 0.1, 3
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = [int(b) for b in a.batch_sizes.split(",")]
    modes = [m for m in a.modes.split(",") if m]
    if unknown := sorted(set(modes) - set(MODES)):
        ap.error(f"unknown --modes {unknown}; choose from {list(MODES)}")
    samples = int(a.window_s * 16000)
    torch.manual_seed(0)
    det = build_detector("xlsr300m-nes2net-x", ssl_overrides=TINY_SSL if a.smoke else None,
                         backend_options={"outer_ratio": 4, "inner_ratio": 4} if a.smoke
                         else None, device=device if device.type == "cuda" else None)
    det = det.to(device).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else None
    # per-stage timings first: the most telling part when a run is cut short
    stages, conv = [], []
    for bs in sizes if a.stages_only else sorted({min(128, max(sizes)), max(sizes)}):
        stage, entries = stage_times(det, bs, samples, dtype, device, a.min_time_s,
                                     a.max_iters)
        stages.append(stage)
        conv.extend(entries)
    rng = np.random.default_rng(0)
    rows = []
    for bs in [] if a.stages_only else sizes:
        x = (0.1 * rng.standard_normal((bs, samples))).astype(np.float32)
        row = {"batch_size": bs}
        eager: torch.Tensor | None = None  # the reference logits, computed once per batch size
        for mode in modes:
            torch.backends.cudnn.benchmark = mode != "eager"
            graphs = mode.startswith("cuda_graph")
            cast = "bf16_weights" in mode and dtype is not None
            runner = BatchRunner(copy.deepcopy(det), window_samples=samples,
                                 max_batch_size=max(sizes), dtype=dtype, use_buckets=graphs,
                                 cuda_graphs=graphs, backend_graphs=graphs, cast_weights=cast,
                                 graph_max_batch=max(sizes) if "all_buckets" in mode else 16,
                                 conv_encoder="gemm" if "gemm_conv" in mode else "native",
                                 pos_conv="fft" if "fft_pos" in mode else "native",
                                 encoder_layers="fused" if "fused_layers" in mode else "native")
            secs = time_calls(lambda r=runner, xx=x: r.run(xx), device, a.min_time_s,
                              a.max_iters)
            row[mode] = {"latency_ms": round(1000 * secs, 2),
                         "windows_per_s": round(bs / secs, 1)}
            if graphs:
                row["bucket"] = runner.bucket(bs)
                row["graph_captured"] = runner.bucket(bs) in runner._graphs
                if eager is None:
                    eager = BatchRunner(det, window_samples=samples, max_batch_size=max(sizes),
                                        dtype=dtype, use_buckets=False, cuda_graphs=False,
                                        conv_encoder="native", pos_conv="native",
                                        encoder_layers="native").run(x)
                row[mode]["max_abs_logit_diff_vs_eager"] = float(
                    (runner.run(x) - eager).abs().max())
            del runner
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    best = max((r[m]["windows_per_s"] for r in rows for m in modes), default=None)
    result = {"benchmark": "gpu_engine", "device": str(device), "smoke": a.smoke,
              "environment": environment(device), "window_s": a.window_s,
              "dtype": "bfloat16" if dtype else "float32", "rows": rows,
              "conv_encoder": conv, "stages": stages,
              "best_windows_per_s": best}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    emit(result, a.out)


if __name__ == "__main__":
    main()
