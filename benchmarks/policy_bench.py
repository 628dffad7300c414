"""CPU per scored window of the alert policy as a call grows long.

Every scored window updates its channel's running score and state (``ChannelPolicy.update``)
and the window event reads the running LLR and probability. The figure that matters is how the
time per window grows with the number of windows the call has had (a 4-hour call at a 1 s hop
has up to 14,400). Prints microseconds per window at several call lengths for each
aggregation, as JSON.

    python benchmarks/policy_bench.py
    python benchmarks/policy_bench.py --smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from nes2net_stream.bench.engine import emit
from nes2net_stream.scoring.aggregate import AGGREGATIONS
from nes2net_stream.service.policy import AlertConfig, ChannelPolicy


def window(pol: ChannelPolicy, llr: float) -> None:
    """What the service does per scored window."""
    pol.update(llr, 0.5)
    _ = pol.running_llr, pol.running_probability


def measure(method: str, lengths: list[int], repeats: int) -> dict[str, float]:
    pol = ChannelPolicy(AlertConfig(aggregation=method))  # type: ignore[arg-type]
    llrs = np.random.default_rng(0).normal(size=max(lengths))
    out: dict[str, float] = {}
    for n, llr in enumerate(llrs, start=1):
        window(pol, float(llr))
        if n in lengths:
            t0 = time.perf_counter()
            for _ in range(repeats):
                window(pol, float(llr))
            out[str(n)] = round((time.perf_counter() - t0) / repeats * 1e6, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="100,3600,14400",
                    help="call lengths (windows) at which to time further windows")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args()
    lengths = [10, 100] if a.smoke else [int(v) for v in a.lengths.split(",")]
    emit({"benchmark": "policy", "date": datetime.now(UTC).isoformat(timespec="seconds"),
          "us_per_window_at_call_length": {m: measure(m, lengths, a.repeats)
                                           for m in AGGREGATIONS}}, a.out)


if __name__ == "__main__":
    main()
