"""End-to-end GPU benchmark: the service with XLS-R 300M + Nes2Net-X under N concurrent calls.

Builds a random-weight XLS-R 300M + Nes2Net-X bundle (weights do not change the cost), then runs
``nes2net-stream bench e2e`` against it (a real redis-server, the service as its own process on
the GPU, several load-generator processes streaming real-time calls over loopback WebSocket)
while sampling GPU utilisation with nvidia-smi. Prints one JSON object.

    python benchmarks/gpu_e2e.py --calls 250,1000,2500 --out e2e.json     # CUDA machine
    python benchmarks/gpu_e2e.py --smoke                                  # CPU, tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from nes2net_stream.bench.engine import TINY_SSL, emit
from nes2net_stream.bundle import save_model
from nes2net_stream.models.checkpoints import build_detector


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot (Linux ``/proc/stat``), else None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class GpuSampler(threading.Thread):
    """Polls nvidia-smi and the host's CPU use every 0.5 s while the benchmark runs.

    The host's CPU share says whether load generators, ingest workers and scorer ran out of
    cores (then the GPU waits for them) or the GPU is the limit.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []
        self.cpu: list[tuple[float, float]] = []  # (time, busy % of all cores since last)
        self.stop = threading.Event()

    def run(self) -> None:
        smi = shutil.which("nvidia-smi")
        last = cpu_times()
        while not self.stop.is_set():
            if smi is not None:
                out = subprocess.run([smi, "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, check=False).stdout.strip().splitlines()
                if out:
                    util, mem = (float(v) for v in out[0].split(","))
                    self.samples.append((time.time(), util, mem))
            now = cpu_times()
            if now is not None and last is not None and now[1] > last[1]:
                self.cpu.append((time.time(), 100.0 * (now[0] - last[0]) / (now[1] - last[1])))
            last = now
            self.stop.wait(0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", default="250,1000,2500")
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--frame-ms", type=int, default=100)
    ap.add_argument("--client-procs", type=int, default=6)
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=6, help="ingest worker processes")
    ap.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                    help="more settings for the service, e.g. NES2NET_ENGINE__COMPILE_NORMS=true")
    ap.add_argument("--speech-only", action="store_true",
                    help="calls of continuous speech (the sample's pauses cut out)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    if a.smoke:
        a.calls, a.duration_s, a.client_procs, a.max_batch_size, a.workers = "4", 6.0, 2, 8, 2
    work = Path(tempfile.mkdtemp(prefix="nes2net-gpu-e2e-"))
    torch.manual_seed(0)
    t0 = time.time()
    det = build_detector("xlsr300m-nes2net-x", ssl_overrides=TINY_SSL if a.smoke else None,
                         backend_options={"outer_ratio": 4, "inner_ratio": 4} if a.smoke
                         else None, model_id="xlsr300m-nes2net-x-random")
    bundle = save_model(det.cpu(), work / "bundle")
    del det
    build_s = time.time() - t0
    sampler = GpuSampler()
    sampler.start()
    began = time.time()
    report_path = work / "e2e.json"
    cmd = [sys.executable, "-m", "nes2net_stream", "bench", "e2e", "--model", str(bundle),
           "--calls", a.calls, "--duration-s", str(a.duration_s), "--frame-ms", str(a.frame_ms),
           "--client-procs", str(a.client_procs), "--keep-going", "--target-p99-ms", "1000",
           "--out", str(report_path),
           "--service-env", f"NES2NET_MODEL__DEVICE={'cuda' if cuda else 'cpu'}",
           "--service-env", f"NES2NET_ENGINE__MAX_BATCH_SIZE={a.max_batch_size}",
           "--service-env", "NES2NET_ENGINE__MAX_DELAY_MS=25",
           "--service-env", "NES2NET_ENGINE__MAX_QUEUE=100000",
           "--service-env", "NES2NET_ENGINE__LATENCY_TARGET_MS=800",
           "--service-env", f"NES2NET_SERVER__WORKERS={a.workers}"]
    for setting in a.service_env:
        cmd += ["--service-env", setting]
    cmd += ["--speech-only"] if a.speech_only else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sampler.stop.set()
    sampler.join(5)
    result: dict = {"benchmark": "gpu_e2e", "smoke": a.smoke, "cuda": cuda,
                    "ingest_workers": a.workers, "service_env": a.service_env,
                    "gpu": torch.cuda.get_device_name(0) if cuda else None,
                    "bundle_build_s": round(build_s, 1), "exit_code": proc.returncode}
    if report_path.is_file():
        result["e2e"] = json.loads(report_path.read_text())
    else:
        result["stderr_tail"] = proc.stderr[-3000:]
    util = [u for t, u, _ in sampler.samples if t >= began]
    if util:
        result["gpu_utilization_pct"] = {"mean": round(sum(util) / len(util), 1),
                                         "max": max(util), "samples": len(util)}
        result["gpu_memory_used_mib_max"] = max(m for _, _, m in sampler.samples)
    busy = [b for t, b in sampler.cpu if t >= began]
    if busy:
        busy.sort()
        result["host_cpu_busy_pct"] = {"mean": round(sum(busy) / len(busy), 1),
                                       "p90": round(busy[int(0.9 * (len(busy) - 1))], 1),
                                       "max": round(busy[-1], 1), "samples": len(busy),
                                       "cores": os.cpu_count()}
    log = Path(tempfile.gettempdir()) / "nes2net-bench-service.log"
    if log.is_file():
        result["service_log_tail"] = log.read_text(errors="replace")[-2000:]
    emit(result, a.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
