"""End-to-end load benchmark: N concurrent real-time calls over loopback WebSocket.

The service runs as a separate process (so its CPU time can be measured) with a real Redis.
Each simulated call streams a sample recording at real-time pace in 20 ms packets, like a
telephony gateway. A reader tails ``nes2net:scores`` and measures, for every window, the time
from the moment its last audio sample was sent to the moment its event was written to Redis
(the entry id's server timestamp). A load level is *sustained* when every call got its summary,
no window was dropped or skipped for load (every call scored at its configured hop) and the p99
latency stays under the target.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nes2net_stream.audio.io import load_audio
from nes2net_stream.client import stream_samples
from nes2net_stream.service.redis_client import create_redis_client


@dataclass
class LevelResult:
    """Measurements at one concurrency level."""

    calls: int
    duration_s: float
    windows: int
    windows_per_s: float
    dropped_windows: int
    summaries: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    latency_from_schedule_p99_ms: float | None
    service_cpu_s: float
    cpu_ms_per_call_second: float
    client_lag_p99_ms: float
    sustained: bool
    errors: list[str] = field(default_factory=list)
    windows_skipped_for_load: int = 0


class _SendLog:
    """When each call's audio was actually sent: (seconds sent, wall time) per packet."""

    def __init__(self) -> None:
        self.logs: dict[str, list[tuple[float, float]]] = {}

    def sent_at(self, call_id: str, audio_s: float) -> float | None:
        """Wall time at which the packet holding the audio at ``audio_s`` left the client."""
        log = self.logs.get(call_id)
        if not log:
            return None
        i = bisect.bisect_left(log, (audio_s - 1e-6, 0.0))
        return log[i][1] if i < len(log) else None


async def _reader(url: str, starts: dict[str, float], sends: _SendLog, latencies: list[float],
                  scheduled: list[float], stop: asyncio.Event, stream: str) -> int:
    client = create_redis_client(url, decode_responses=True)
    last = "$"
    seen = 0
    try:
        info = await client.xinfo_stream(stream)
        last = info["last-generated-id"]
    except Exception:  # noqa: BLE001 - the stream may not exist yet
        last = "0-0"
    try:
        while not stop.is_set():
            reply = await client.xread({stream: last}, block=200, count=1000)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    ev = json.loads(fields["event"])
                    t0 = starts.get(ev["call_id"])
                    if t0 is None:
                        continue
                    written = int(entry_id.split("-")[0]) / 1000.0
                    end_s = ev["window"]["end_s"]
                    scheduled.append(written - (t0 + end_s))
                    sent = sends.sent_at(ev["call_id"], end_s)
                    latencies.append(written - (sent if sent is not None else t0 + end_s))
                    seen += 1
    finally:
        await client.aclose()
    return seen


async def _level_part(ws_url: str, redis_url: str, clip: np.ndarray, rate: int, calls: range,
                      total: int, duration_s: float, ramp_s: float, frame_ms: int
                      ) -> dict[str, Any]:
    """Run a share of one level's calls in this process; return the raw measurements."""
    starts: dict[str, float] = {}
    sends = _SendLog()
    latencies: list[float] = []
    scheduled: list[float] = []
    lags: list[float] = []
    stop = asyncio.Event()
    reader = asyncio.create_task(_reader(redis_url, starts, sends, latencies, scheduled, stop,
                                         "nes2net:scores"))
    await asyncio.sleep(0.3)

    async def one(i: int) -> Any:
        await asyncio.sleep(ramp_s * i / max(1, total))
        call_id = f"bench-{total}-{i}"
        offset = int(i * rate * 0.37) % clip.shape[0]  # different audio per call
        x = np.roll(clip, offset)
        starts[call_id] = time.time()
        log = sends.logs[call_id] = []
        res = await stream_samples(ws_url, x, rate, call_id=call_id, encoding="mulaw",
                                   realtime=True, frame_ms=frame_ms, open_timeout=60,
                                   send_log=log)
        if log:  # how far behind its real-time schedule the client sent a packet, at worst
            (s0, w0) = log[0]
            lags.append(max(w - w0 - (s - s0) for s, w in log))
        return res

    results = await asyncio.gather(*[one(i) for i in calls], return_exceptions=True)
    await asyncio.sleep(1.0)
    stop.set()
    await reader
    ok = [r for r in results if not isinstance(r, BaseException)]
    summaries = [r.summary["summary"] for r in ok if r.summary is not None]
    return {"latencies": latencies, "scheduled": scheduled, "lags": lags,
            "errors": [repr(r) for r in results if isinstance(r, BaseException)][:5],
            "n_errors": sum(isinstance(r, BaseException) for r in results),
            "summaries": len(summaries),
            "windows": sum(s["windows_scored"] for s in summaries),
            "dropped": sum(s["windows_dropped"] for s in summaries),
            "skipped": sum(s.get("windows_skipped_for_load", 0) for s in summaries)}


def _part_in_process(args: tuple) -> dict[str, Any]:
    return asyncio.run(_level_part(*args))


async def run_level(ws_url: str, redis_url: str, audio: np.ndarray, rate: int, calls: int,
                    duration_s: float, *, cpu: Any, ramp_s: float = 5.0,
                    target_p99_ms: float = 500.0, frame_ms: int = 20,
                    procs: int = 1) -> LevelResult:
    """Run ``calls`` concurrent real-time calls of ``duration_s`` each (``procs`` clients)."""
    n = int(duration_s * rate)
    clip = np.tile(audio, int(np.ceil(n / audio.shape[0])))[:n]
    cpu0 = cpu()
    t_begin = time.monotonic()
    if procs <= 1:
        parts = [await _level_part(ws_url, redis_url, clip, rate, range(calls), calls,
                                   duration_s, ramp_s, frame_ms)]
    else:
        import concurrent.futures
        import multiprocessing

        shares = [range(k, calls, procs) for k in range(procs)]
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
            loop = asyncio.get_running_loop()
            parts = await asyncio.gather(*[
                loop.run_in_executor(pool, _part_in_process,
                                     (ws_url, redis_url, clip, rate, share, calls, duration_s,
                                      ramp_s, frame_ms)) for share in shares])
    elapsed = time.monotonic() - t_begin
    cpu_used = cpu() - cpu0
    latencies = [v for p in parts for v in p["latencies"]]
    scheduled = [v for p in parts for v in p["scheduled"]]
    lags = [v for p in parts for v in p["lags"]]
    errors = [e for p in parts for e in p["errors"]]
    n_errors = sum(p["n_errors"] for p in parts)
    summaries = sum(p["summaries"] for p in parts)
    windows = sum(p["windows"] for p in parts)
    dropped = sum(p["dropped"] for p in parts)
    lat = np.array(latencies) * 1000.0 if latencies else None
    p99 = float(np.percentile(lat, 99)) if lat is not None else None
    lag_p99 = 1000 * float(np.percentile(lags, 99)) if lags else 0.0
    skipped = sum(p["skipped"] for p in parts)
    sustained = (n_errors == 0 and summaries == calls and dropped == 0 and skipped == 0
                 and p99 is not None and p99 <= target_p99_ms and lag_p99 <= target_p99_ms)
    return LevelResult(
        calls=calls, duration_s=duration_s, windows=windows,
        windows_per_s=round(windows / elapsed, 2), dropped_windows=dropped,
        summaries=summaries,
        latency_p50_ms=None if lat is None else round(float(np.percentile(lat, 50)), 1),
        latency_p99_ms=None if p99 is None else round(p99, 1),
        latency_max_ms=None if lat is None else round(float(lat.max()), 1),
        latency_from_schedule_p99_ms=(round(1000 * float(np.percentile(scheduled, 99)), 1)
                                      if scheduled else None),
        service_cpu_s=round(cpu_used, 2),
        cpu_ms_per_call_second=round(1000 * cpu_used / (calls * duration_s), 3),
        client_lag_p99_ms=round(lag_p99, 1),
        sustained=sustained, errors=errors[:5],
        windows_skipped_for_load=skipped)


async def run_sweep(ws_url: str, redis_url: str, audio_path: Path, levels: list[int],
                    duration_s: float, *, cpu: Any, target_p99_ms: float = 500.0,
                    frame_ms: int = 20, stop_on_failure: bool = True,
                    procs: int = 1) -> dict[str, Any]:
    """Run increasing load levels; report each and the largest sustained one."""
    clip = load_audio(audio_path, sample_rate=8000)
    out: list[dict[str, Any]] = []
    best = 0
    for calls in levels:
        res = await run_level(ws_url, redis_url, clip.samples, 8000, calls, duration_s, cpu=cpu,
                              target_p99_ms=target_p99_ms, frame_ms=frame_ms, procs=procs)
        out.append(asdict(res))
        if res.sustained:
            best = max(best, calls)
        elif stop_on_failure:
            break
    return {"levels": out, "max_sustained_calls": best, "target_p99_ms": target_p99_ms,
            "frame_ms": frame_ms, "call_duration_s": duration_s, "client_processes": procs}
