"""Cost of the alert journal per alert: append, acknowledge in publisher-sized batches, fsync.

Prints JSON: for each fsync policy, microseconds of the caller's (event loop's) time per alert
and alerts per second, plus the replay time of a journal of unacknowledged alerts.

    python benchmarks/alert_journal_bench.py [--alerts 20000] [--dir /path/on/the/target/disk]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from pathlib import Path

from nes2net_stream.service.alert_journal import AlertJournal

# a summary event as the service writes it (about 700 bytes of JSON)
DOC = json.dumps({
    "schema": "nes2net.event/v1", "event_id": "019ac3d5-6a1e-7c4b-9d2e-5f0a1b2c3d4e",
    "type": "summary", "call_id": "CA5f3c9e0b7d", "channel": "caller",
    "source": {"kind": "websocket", "gateway": "generic", "remote": "10.0.0.7:53122"},
    "metadata": {"ani": "+15551234567", "dnis": "+15557654321"},
    "ts": "2026-11-26T10:15:04.512Z", "ts_unix": 1795688104.512,
    "model_id": "nes2net-demo-lfb-v1", "replica": "nes2net-0", "state": "spoof",
    "summary": {"end_reason": "stop", "detail": None, "duration_s": 20.27, "speech_s": 15.8,
                "windows_scored": 13, "windows_dropped": 0, "max_spoof_probability": 0.99,
                "mean_spoof_probability": 0.91, "final_state": "spoof", "wall_s": 20.4},
    "running": {"llr": 2.9, "spoof_probability": 0.948, "windows": 13}}, separators=(",", ":"))


def run(directory: Path, alerts: int, fsync_s: float, batch: int) -> dict:
    """Append ``alerts`` alerts, acknowledging every ``batch`` (as the publisher does)."""
    j = AlertJournal(directory, fsync_interval_s=fsync_s)
    j.open()
    stop = threading.Event()

    def syncer() -> None:  # the publisher's periodic fsync, off the event loop
        while not stop.wait(fsync_s):
            j.sync()

    thread = threading.Thread(target=syncer, daemon=True) if fsync_s > 0 else None
    if thread is not None:
        thread.start()
    t0 = time.perf_counter()
    for i in range(alerts):
        seq = j.append(DOC)
        if (i + 1) % batch == 0:
            j.ack(seq)
    j.ack(j.last_seq)
    elapsed = time.perf_counter() - t0
    stop.set()
    if thread is not None:
        thread.join()
    j.close()
    return {"fsync_interval_s": fsync_s, "alerts": alerts, "ack_every": batch,
            "us_per_alert": round(elapsed / alerts * 1e6, 2),
            "alerts_per_s": round(alerts / elapsed)}


def replay(directory: Path, alerts: int) -> dict:
    """Time to read back a journal of ``alerts`` unacknowledged alerts at start."""
    j = AlertJournal(directory, fsync_interval_s=60)
    j.open()
    for _ in range(alerts):
        j.append(DOC)
    j.close()
    t0 = time.perf_counter()
    j2 = AlertJournal(directory)
    n = len(j2.open())
    elapsed = time.perf_counter() - t0
    j2.ack(j2.last_seq)
    j2.close()
    return {"alerts": n, "replay_read_s": round(elapsed, 4),
            "us_per_alert": round(elapsed / max(n, 1) * 1e6, 2)}


def main() -> None:
    """Run the benchmark and print its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=20_000)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--smoke", action="store_true", help="a few hundred alerts (tests)")
    args = ap.parse_args()
    alerts = 300 if args.smoke else args.alerts
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        rows = [run(base / f"f{i}", n, fsync_s, 256)
                for i, (fsync_s, n) in enumerate([(1.0, alerts), (0.0, max(alerts // 10, 100))])]
        rep = replay(base / "replay", alerts)
    print(json.dumps({"benchmark": "alert_journal", "doc_bytes": len(DOC), "rows": rows,
                      "replay": rep, "machine": platform.machine(),
                      "python": platform.python_version()}, indent=2))


if __name__ == "__main__":
    main()
