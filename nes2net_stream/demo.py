"""The main job on embedded defaults (``make demo``).

Starts a real Redis (a local ``redis-server`` on a free port, or ``$REDIS_URL``), starts the
streaming service with the bundled demo model, streams the two bundled sample calls (a human
caller and a synthetic voice saying the same words) at real-time pace as two concurrent calls,
and prints the alerts as they arrive in Redis. Ends with a graceful shutdown of the service.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from nes2net_stream.client import stream_file
from nes2net_stream.localstack import LocalRedis, ServiceProcess
from nes2net_stream.watch import tail_events

SAMPLES = {"human-call": "human_call.wav", "synthetic-call": "synthetic_call.wav"}
COLOURS = {"bona_fide": "\033[32m", "suspicious": "\033[33m", "spoof": "\033[31m"}


def sample_path(name: str) -> Path:
    """Path of a bundled sample call."""
    return Path(str(resources.files("nes2net_stream") / "assets" / "samples" / name))


def _paint(state: str | None, text: str) -> str:
    if not sys.stdout.isatty() or state not in COLOURS:
        return text
    return f"{COLOURS[state]}{text}\033[0m"


def _print_alert(event: dict[str, Any]) -> None:
    call = event["call_id"]
    if event["type"] == "state":
        p = event["running"]["spoof_probability"]
        line = (f"  ALERT  {call:<15} state {event['previous_state'] or '(new)'} -> "
                f"{event['state']:<10} running p(spoof)={p:.3f}  "
                f"after {event['window']['end_s']:.1f}s")
    else:
        s = event["summary"]
        mean = s["mean_spoof_probability"]
        line = (f"  SUMMARY {call:<14} final={s['final_state'] or 'none':<10} "
                f"windows={s['windows_scored']:<3} speech={s['speech_s']:.1f}s "
                f"mean p(spoof)={'n/a' if mean is None else f'{mean:.3f}'}")
    print(_paint(event.get("state"), line), flush=True)


async def _run(url: str, redis_url: str) -> dict[str, Any]:
    stop = asyncio.Event()
    alerts: list[dict[str, Any]] = []

    def on_alert(event: dict[str, Any]) -> None:
        alerts.append(event)
        _print_alert(event)

    watcher = asyncio.create_task(tail_events(redis_url, ["nes2net:alerts"], on_alert,
                                              stop=stop, block_ms=500))
    await asyncio.sleep(0.5)
    print(f"streaming {len(SAMPLES)} sample calls in real time (about 20 s) ...", flush=True)
    results = await asyncio.gather(*[
        stream_file(url, sample_path(f), sample_rate=8000, encoding="mulaw", call_id=cid,
                    realtime=True, metadata={"demo": True, "file": f})
        for cid, f in SAMPLES.items()])
    await asyncio.sleep(1.0)
    stop.set()
    await watcher
    return {r.call_id: (r.summary or {}).get("summary", {}).get("final_state") for r in results}


def main() -> int:
    """Run the demo; exit code 0 when both calls end in the expected state."""
    redis_url = os.environ.get("REDIS_URL")
    local = None if redis_url else LocalRedis()
    redis_url = redis_url or local.url  # type: ignore[union-attr]
    log = Path(tempfile.gettempdir()) / "nes2net-demo-service.log"
    print(f"redis: {redis_url}{' (local redis-server)' if local else ''}", flush=True)
    service = ServiceProcess(redis_url, log_path=log)
    try:
        service.wait_ready()
        print(f"service ready on {service.url} with the bundled demo model "
              f"(logs: {log})", flush=True)
        finals = asyncio.run(_run(service.url, redis_url))
    finally:
        code = service.stop()
        if local is not None:
            local.stop()
    print(f"service stopped (exit code {code})")
    expected = {"human-call": "bona_fide", "synthetic-call": "spoof"}
    for call, state in finals.items():
        mark = "as expected" if state == expected[call] else f"expected {expected[call]}"
        print(f"  {call:<15} final state: {state}  ({mark})")
    return 0 if finals == expected else 1


if __name__ == "__main__":
    sys.exit(main())
