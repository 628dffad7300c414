"""End-to-end load benchmark: N concurrent real-time calls over loopback WebSocket.

The service runs as a separate process (so its CPU time can be measured) with a real Redis. Each
simulated call streams a sample recording at real-time pace in ``frame_ms`` packets, like a
telephony gateway (the lean load generator of :mod:`nes2net_stream.bench.loadgen`). A reader
tails ``nes2net:scores`` and ``nes2net:alerts`` and measures, for every window, the time from
the moment its last audio sample was sent to the moment its event was written to Redis (the
entry id's server timestamp); the calls' summaries are read there too. A load level is
*sustained* when every call got its summary, no window was dropped or skipped for load (every
call scored at its configured hop) and the p99 latency stays under the target.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from nes2net_stream.audio.io import load_audio
from nes2net_stream.audio.vad import VADConfig, speech_stream
from nes2net_stream.bench.loadgen import LoadGenerator
from nes2net_stream.bench.provider_calls import PROTOCOLS
from nes2net_stream.client import encode_samples
from nes2net_stream.service import event_loop
from nes2net_stream.service.oslimits import raise_open_files
from nes2net_stream.service.publisher import RedisConfig
from nes2net_stream.service.redis_client import create_redis_client

SCORES, ALERTS = RedisConfig().scores_stream, RedisConfig().alerts_stream  # default key prefix


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
    #: CPU of the service's ingest worker processes alone (None: the service ran as one process)
    ingest_cpu_ms_per_call_second: float | None = None
    #: CPU of the load-generator processes (they share the host with the service)
    client_cpu_ms_per_call_second: float | None = None


def _sent_at(log: list[tuple[float, float]], audio_s: float) -> float | None:
    """Wall time at which the packet holding the audio at ``audio_s`` left the client."""
    i = bisect.bisect_left(log, (audio_s - 1e-6, 0.0))
    return log[i][1] if i < len(log) else None


async def _reader(url: str, prefix: str, seen: list[tuple[str, float, float]],
                  summaries: dict[str, dict[str, Any]], stop: asyncio.Event) -> None:
    """Collect the level's window events (call id, window end, time written) and summaries."""
    client = create_redis_client(url, decode_responses=True)
    last: dict[str, str] = {}
    for stream in (SCORES, ALERTS):
        try:
            last[stream] = (await client.xinfo_stream(stream))["last-generated-id"]
        except Exception:  # noqa: BLE001 - the stream may not exist yet
            last[stream] = "0-0"
    try:
        while not stop.is_set():
            reply = await client.xread(last, block=200, count=1000)  # type: ignore[arg-type]
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    last[stream] = entry_id
                    ev = json.loads(fields["event"])
                    if not ev["call_id"].startswith(prefix):
                        continue
                    if ev["type"] == "window":
                        seen.append((ev["call_id"], ev["window"]["end_s"],
                                     int(entry_id.split("-")[0]) / 1000.0))
                    elif ev["type"] == "summary":
                        summaries[ev["call_id"]] = ev["summary"]
    finally:
        await client.aclose()


async def _level_part(ws_url: str, clip: np.ndarray, rate: int, calls: range, total: int,
                      ramp_s: float, frame_ms: int, protocol: str = "generic"
                      ) -> dict[str, Any]:
    """Run a share of one level's calls in this process; return the raw measurements."""
    raise_open_files(len(calls))  # a socket per call
    cpu0 = time.process_time()
    packet = max(1, rate * frame_ms // 1000)
    proto = PROTOCOLS[protocol]
    encoded = np.frombuffer(encode_samples(clip, "mulaw"), dtype=np.uint8)  # one byte a sample
    plans = [proto.plan(f"bench-{total}-{i}",
                        np.roll(encoded, int(i * rate * 0.37) % clip.shape[0]).tobytes(),
                        rate=rate, packet=packet, delay_s=ramp_s * i / max(1, total))
             for i in calls]  # different audio per call
    url = urlunsplit(urlsplit(ws_url)._replace(path=proto.path))
    outcomes = await LoadGenerator(url).run(plans)
    failed = [o for o in outcomes if o.failure is not None or o.errors]
    return {"send_logs": {p.service_call_id: p.send_log for p in plans},
            "errors": [f"{o.call_id}: {o.failure or o.errors}" for o in failed][:5],
            "n_errors": len(failed), "cpu_s": time.process_time() - cpu0}


def _part_in_process(args: tuple, client_loop: str = "auto") -> dict[str, Any]:
    return event_loop.run(_level_part(*args), client_loop)


def _warm_up(delay_s: float) -> None:
    """Runs in each load-generator process before the level: imports this module there."""
    time.sleep(delay_s)


def _latencies(seen: list[tuple[str, float, float]], logs: dict[str, list[tuple[float, float]]]
               ) -> tuple[list[float], list[float]]:
    """Per window: seconds from its last sample's send, and from its real-time schedule."""
    latencies: list[float] = []
    scheduled: list[float] = []
    for call_id, end_s, written in seen:
        log = logs.get(call_id)
        if not log:
            continue
        t0 = log[0][1]  # the first packet left at the call's audio time 0
        scheduled.append(written - (t0 + end_s))
        sent = _sent_at(log, end_s)
        latencies.append(written - (sent if sent is not None else t0 + end_s))
    return latencies, scheduled


async def run_level(ws_url: str, redis_url: str, audio: np.ndarray, rate: int, calls: int,
                    duration_s: float, *, cpu: Any, ramp_s: float = 5.0,
                    target_p99_ms: float = 500.0, frame_ms: int = 20,
                    procs: int = 1, worker_cpu: Any = None,
                    protocol: str = "generic", client_loop: str = "auto") -> LevelResult:
    """Run ``calls`` concurrent real-time calls of ``duration_s`` each.

    The load comes from ``procs`` spawned load-generator processes speaking ``protocol`` (see
    :data:`~nes2net_stream.bench.provider_calls.PROTOCOLS`); this process reads the events and
    call summaries in Redis. ``cpu`` returns the service's CPU seconds so far, ``worker_cpu``
    (optional) those of its ingest worker processes alone. ``client_loop``: the load
    generators' event loop (``auto``: uvloop where installed, as the service's default).
    """
    import concurrent.futures
    import multiprocessing

    n = int(duration_s * rate)
    clip = np.tile(audio, int(np.ceil(n / audio.shape[0])))[:n]
    procs = max(1, min(procs, calls))
    seen: list[tuple[str, float, float]] = []
    found: dict[str, dict[str, Any]] = {}  # call summaries by call id
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(
            procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # start the processes and import this module there before the clock runs
        await asyncio.gather(*[loop.run_in_executor(pool, _warm_up, 0.5) for _ in range(procs)])
        reader = asyncio.create_task(_reader(redis_url, f"bench-{calls}-", seen, found, stop))
        await asyncio.sleep(0.3)
        cpu0 = cpu()
        worker0 = worker_cpu() if worker_cpu is not None else 0.0
        t_begin = time.monotonic()
        parts = await asyncio.gather(*[
            loop.run_in_executor(pool, _part_in_process,
                                 (ws_url, clip, rate, range(k, calls, procs), calls, ramp_s,
                                  frame_ms, protocol), client_loop) for k in range(procs)])
        elapsed = time.monotonic() - t_begin
        cpu_used = cpu() - cpu0
        worker_used = worker_cpu() - worker0 if worker_cpu is not None else 0.0
        for _ in range(100):  # the last summaries reach Redis (up to 10 s)
            if len(found) >= calls:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # and the last window events (alerts are written first)
        stop.set()
        await reader
    logs = {c: log for p in parts for c, log in p["send_logs"].items()}
    latencies, scheduled = _latencies(seen, logs)
    lags = [max(w - log[0][1] - (s - log[0][0]) for s, w in log)  # worst lateness per call
            for log in logs.values() if log]
    call_s = calls * duration_s
    errors = [e for p in parts for e in p["errors"]]
    n_errors = sum(p["n_errors"] for p in parts)
    summaries = len(found)
    windows = sum(s["windows_scored"] for s in found.values())
    dropped = sum(s["windows_dropped"] for s in found.values())
    lat = np.array(latencies) * 1000.0 if latencies else None
    p99 = float(np.percentile(lat, 99)) if lat is not None else None
    lag_p99 = 1000 * float(np.percentile(lags, 99)) if lags else 0.0
    skipped = sum(s.get("windows_skipped_for_load", 0) for s in found.values())
    if summaries < calls:
        errors.append(f"{calls - summaries} call(s) without a summary in Redis")
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
        cpu_ms_per_call_second=round(1000 * cpu_used / call_s, 3),
        ingest_cpu_ms_per_call_second=(round(1000 * worker_used / call_s, 3)
                                       if worker_used > 0 else None),
        client_cpu_ms_per_call_second=round(1000 * sum(p["cpu_s"] for p in parts) / call_s, 3),
        client_lag_p99_ms=round(lag_p99, 1),
        sustained=sustained, errors=errors[:5],
        windows_skipped_for_load=skipped)


def speech_only(samples: np.ndarray, rate: int, cfg: VADConfig | None = None) -> np.ndarray:
    """The frames of float ``samples`` the service's VAD (default settings) calls speech, joined.

    Looped, that is a call of continuous speech: a window every hop, the heaviest load per call.
    """
    speech = speech_stream(samples, cfg or VADConfig(), rate)
    if not speech.size:
        raise ValueError("the call audio has no speech to loop")
    return speech


async def run_sweep(ws_url: str, redis_url: str, audio_path: Path, levels: list[int],
                    duration_s: float, *, cpu: Any, target_p99_ms: float = 500.0,
                    frame_ms: int = 20, stop_on_failure: bool = True,
                    procs: int = 1, worker_cpu: Any = None,
                    protocol: str = "generic", speech: bool = False,
                    client_loop: str = "auto") -> dict[str, Any]:
    """Run increasing load levels; report each and the largest sustained one.

    ``speech``: loop only the audio's speech (:func:`speech_only`), not its pauses.
    """
    clip = load_audio(audio_path, sample_rate=8000).samples
    clip = speech_only(clip, 8000) if speech else clip
    out: list[dict[str, Any]] = []
    best = 0
    for calls in levels:
        res = await run_level(ws_url, redis_url, clip, 8000, calls, duration_s, cpu=cpu,
                              target_p99_ms=target_p99_ms, frame_ms=frame_ms, procs=procs,
                              worker_cpu=worker_cpu, protocol=protocol,
                              client_loop=client_loop)
        out.append(asdict(res))
        if res.sustained:
            best = max(best, calls)
        elif stop_on_failure:
            break
    return {"levels": out, "max_sustained_calls": best, "target_p99_ms": target_p99_ms,
            "frame_ms": frame_ms, "call_duration_s": duration_s, "client_processes": procs,
            "protocol": protocol, "speech_only": speech,
            "client_event_loop": event_loop.resolve(client_loop)}
