"""The GEMM conv encoder's two forms on one hop: receptive fields gathered vs padded frames.

XLS-R's convolutional feature encoder (512 channels, kernels 10-3-3-3-3-2-2, strides
5-2-2-2-2-2-2, layer norm, random weights) on a hop's new audio (16,400 samples, 51 frames),
computed with every layer's overlapping receptive fields gathered by a copy (``gathered``) and
with padded frame counts, where the layers after the first read views and split a kernel that
overlaps the next row into two products (``padded``; models/conv_gemm.py). Median milliseconds
per batch and the largest difference between the two, per dtype and batch size. Prints JSON.

    python benchmarks/conv_encoder_bench.py --out conv.json          # any machine
    python benchmarks/conv_encoder_bench.py --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from nes2net_stream.bench.engine import emit, environment, time_calls
from nes2net_stream.models.checkpoints import build_detector
from nes2net_stream.models.conv_gemm import gemm_conv_features


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="8,32")
    ap.add_argument("--samples", type=int, default=16_400)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--min-time-s", type=float, default=2.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.smoke:
        a.batch_sizes, a.samples, a.min_time_s = "2", 4_000, 0.05
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    det = build_detector("xlsr300m-nes2net-x", ssl_overrides={
        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 128}, backend_options={"outer_ratio": 4, "inner_ratio": 4})
    layers = det.frontend.model.feature_extractor.conv_layers.to(device)
    rows = []
    for name in a.dtypes.split(","):
        dtype = getattr(torch, name)
        layers.to(dtype)
        for bs in [int(b) for b in a.batch_sizes.split(",")]:
            x = 0.1 * torch.randn(bs, a.samples, device=device, dtype=dtype)
            row: dict = {"dtype": name, "batch_size": bs}
            with torch.inference_mode():
                outs = {}
                for form in ("gathered", "padded"):
                    def run(form: str = form, x: torch.Tensor = x) -> torch.Tensor:
                        return gemm_conv_features(layers, x, padded=form == "padded")
                    row[f"{form}_ms"] = round(1000 * time_calls(run, device, a.min_time_s, 50),
                                              2)
                    outs[form] = run()
            row["speedup"] = round(row["gathered_ms"] / row["padded_ms"], 3)
            row["max_abs_diff"] = float((outs["padded"].float() - outs["gathered"].float())
                                        .abs().max())
            row["max_abs"] = float(outs["gathered"].float().abs().max())
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    emit({"benchmark": "conv_encoder", "device": str(device), "smoke": a.smoke,
          "environment": environment(device), "samples": a.samples, "rows": rows}, a.out)


if __name__ == "__main__":
    main()
