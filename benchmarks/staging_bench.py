"""Host time of staging a batch: whole windows against the tails a cached batch reads.

Times :meth:`BatchRunner.stage` (the scoring worker writing each window into the staging
buffer, pinned on CUDA) for ``--batch`` windows of 4 s, whole and as the tail that the feature
cache reads when every call advanced one 1 s hop (XLS-R conv geometry), and reports the bytes
each copies to the device. Prints JSON.

    python benchmarks/staging_bench.py
    python benchmarks/staging_bench.py --smoke     # a few small batches (tests)
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

import numpy as np
import torch

from nes2net_stream.bench.engine import TINY_SSL, emit, environment
from nes2net_stream.models.checkpoints import build_detector
from nes2net_stream.service.runner import BatchRunner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--window-s", type=float, default=4.0)
    ap.add_argument("--hop-samples", type=int, default=16_320)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.smoke:
        a.batch, a.repeats = 8, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    det = build_detector("xlsr300m-nes2net-x", ssl_overrides=TINY_SSL,
                         backend_options={"outer_ratio": 4, "inner_ratio": 4}).to(device)
    window = int(a.window_s * 16000)
    runner = BatchRunner(det, window_samples=window, max_batch_size=a.batch,
                         feature_cache=True)
    assert runner.cache is not None
    g, frames = runner.cache.geometry, runner.cache.frames
    assert g is not None
    new = a.hop_samples // g.stride
    spans = {"whole_windows": (0, window),
             "cached_tails": ((frames - new) * g.stride, (frames - 1) * g.stride
                              + g.receptive_field)}
    rng = np.random.default_rng(0)
    windows = list((0.1 * rng.standard_normal((a.batch, window))).astype(np.float32))
    out: dict[str, dict[str, float]] = {}
    for name, (start, stop) in spans.items():
        times = []
        for _ in range(a.repeats + 2):
            t = time.perf_counter()
            runner.stage(windows, a.batch, start, stop)
            times.append(time.perf_counter() - t)
        out[name] = {"samples_per_window": stop - start,
                     "host_ms_per_batch": round(1000 * float(np.median(times[2:])), 3),
                     "mb_to_device_per_batch": round(a.batch * (stop - start) * 4 / 1e6, 2)}
    emit({"benchmark": "staging", "device": str(device), "environment": environment(device),
          "batch_size": a.batch, "window_s": a.window_s, "hop_samples": a.hop_samples,
          "spans": out}, a.out)


if __name__ == "__main__":
    main()
