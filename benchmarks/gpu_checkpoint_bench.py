"""GPU throughput of a published-architecture detector (XLS-R 300M + Nes2Net-X by default).

Builds the network with random weights (the weights do not change the cost), moves it to the
device and times forward passes of 4-second windows at batch sizes 1 to 256 under bf16
autocast, plus the fp32 latency of a single window. Prints one JSON object.

    python benchmarks/gpu_checkpoint_bench.py                 # on a CUDA machine
    python benchmarks/gpu_checkpoint_bench.py --smoke         # tiny geometry, CPU, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from nes2net_stream.bench.engine import TINY_SSL, bench_model, emit, environment
from nes2net_stream.models.checkpoints import ARCHITECTURES, build_detector
from nes2net_stream.models.nes2net import count_parameters

TINY_BACKEND = {"outer_ratio": 4, "inner_ratio": 4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="xlsr300m-nes2net-x", choices=list(ARCHITECTURES))
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu [cuda if available]")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256")
    p.add_argument("--window-s", type=float, default=4.0)
    p.add_argument("--min-time-s", type=float, default=2.0, help="timing per batch size")
    p.add_argument("--max-iters", type=int, default=200)
    p.add_argument("--no-fp32", action="store_true", help="skip the fp32 batch-1 latency")
    p.add_argument("--smoke", action="store_true",
                   help="tiny geometry, batch 1 and 2, 1 s windows: a quick functional check")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def precision_check(detector: torch.nn.Module, device: torch.device, window_s: float) -> dict:
    """Largest logit change of bf16 autocast against fp32 on 4 fixed random windows."""
    if device.type != "cuda":
        return {"skipped": "bf16 autocast is only used on CUDA"}
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, int(window_s * 16000), generator=g) * 0.1).to(device)
    with torch.inference_mode():
        ref = detector(x).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = detector(x).float()
    return {"max_abs_logit_diff": round(float((low - ref).abs().max()), 5),
            "max_abs_logit_fp32": round(float(ref.abs().max()), 5)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.smoke:
        args.batch_sizes, args.window_s, args.min_time_s, args.max_iters = "1,2", 1.0, 0.2, 5
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    torch.manual_seed(0)
    started = time.perf_counter()
    detector = build_detector(
        args.arch, ssl_overrides=TINY_SSL if args.smoke else None,
        backend_options=TINY_BACKEND if args.smoke else None,
        device=device if device.type == "cuda" else None)
    detector = detector.to(device).eval()
    build_s = time.perf_counter() - started
    bf16 = torch.bfloat16 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = bench_model(detector, sizes, window_s=args.window_s, dtype=bf16,
                       min_time_s=args.min_time_s, max_iters=args.max_iters)
    result = {
        "arch": args.arch,
        "smoke": args.smoke,
        "device": str(device),
        "environment": environment(device),
        "build_s": round(build_s, 2),
        "window_s": args.window_s,
        "parameters": {
            "frontend": count_parameters(detector.frontend, trainable_only=False),
            "backend": count_parameters(detector.backend, trainable_only=False),
        },
        "autocast": "bfloat16" if bf16 is not None else "none (fp32 on CPU)",
        "batches": rows,
        "best_windows_per_s": max(r["windows_per_s"] for r in rows),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    result["bf16_vs_fp32"] = precision_check(detector, device, args.window_s)
    if not args.no_fp32:
        result["fp32_batch1"] = bench_model(detector, [1], window_s=args.window_s, dtype=None,
                                            min_time_s=args.min_time_s,
                                            max_iters=args.max_iters)[0]
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
