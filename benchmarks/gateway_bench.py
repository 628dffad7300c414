"""Shared frame of the gateway ingest benchmarks (SIPREC, Asterisk External Media, Connect).

Each benchmark starts Redis (or uses ``$REDIS_URL``) and ``nes2net-stream serve`` with its
gateway, runs its provider's calls against the service, reads the service's ``/metrics`` and
the call summaries, and (for the RTP gateways) runs as many generic-protocol calls on the same
service for comparison. This module holds that frame, the metric readers and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from prometheus_client.parser import text_string_to_metric_families

from nes2net_stream.audio.io import load_audio
from nes2net_stream.bench.e2e import run_level
from nes2net_stream.bench.engine import emit, environment
from nes2net_stream.demo import sample_path
from nes2net_stream.localstack import LocalRedis, ServiceProcess
from nes2net_stream.service import event_loop

Samples = list[tuple[str, dict[str, str], float]]


def metrics(url: str) -> Samples:
    """Samples of a ``/metrics`` page: (name, labels, value)."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == x for k, x in labels.items()))


def p99_bucket(samples: Samples, name: str) -> float | None:
    """The upper bound of the histogram bucket holding the 99th percentile."""
    buckets: dict[float, float] = {}
    for n, lab, v in samples:
        if n == name + "_bucket":
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    total = buckets.get(float("inf"), 0.0)
    return next((le for le, v in sorted(buckets.items()) if v >= 0.99 * total),
                None) if total else None


def summary_windows(redis_url: str, prefix: str) -> int:
    """Windows scored in the calls whose summaries (in Redis) have ids starting ``prefix``."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    docs = [json.loads(f["event"]) for _, f in client.xrange("nes2net:alerts")
            if f.get("type") == "summary"]
    return sum(d["summary"]["windows_scored"] or 0 for d in docs
               if d["call_id"].startswith(prefix))


def human_call() -> Any:
    """The bundled human sample call at 8 kHz (float32)."""
    return load_audio(sample_path("human_call.wav"), sample_rate=8000).samples


Level = Callable[[ServiceProcess, str], Awaitable[dict[str, Any]]]


def stream_figures(calls: int, duration_s: float, elapsed: float, cpu_used: float, own: float,
                   messages: int, errors: list[str], **extra: Any) -> dict[str, Any]:
    """A streaming level's JSON figures: service CPU per call-second, failures, ``extra``."""
    return {"calls": calls, "duration_s": duration_s, **extra, "elapsed_s": round(elapsed, 2),
            "service_cpu_s": round(cpu_used, 2), "load_generator_cpu_s": round(own, 2),
            "cpu_ms_per_call_second": round(1000 * cpu_used / (calls * duration_s), 3),
            "messages_sent": messages, "streams_failed": len(errors),
            "first_errors": errors[:3]}


async def run(args: argparse.Namespace, name: str, env: dict[str, str], level: Level, *,
              calls: int, call_prefix: str, rtp_metric: str | None = None,
              generic: bool = True) -> dict[str, Any]:
    """Start the service with ``env``, run ``level(service, redis_url)``, then read the results.

    ``level`` returns its own figures; this adds the calls' end reasons, windows (summaries
    whose ids start ``call_prefix``), the p99 window latency bucket and, with ``rtp_metric``,
    the RTP packets received and lost. With ``generic`` the same number of generic-protocol
    calls runs next on the same service.
    """
    redis = None if os.environ.get("REDIS_URL") else LocalRedis()
    redis_url = os.environ.get("REDIS_URL") or redis.url  # type: ignore[union-attr]
    svc = ServiceProcess(redis_url, model=args.model, log_path=args.log, extra_env={
        "NES2NET_SERVER__WORKERS": str(getattr(args, "workers", 1)), "NES2NET_HTTP__PORT": "0",
        "NES2NET_LIMITS__MAX_CALLS": "5000", **env})
    out: dict[str, Any] = {"benchmark": f"{name}_ingest",
                           "workers": getattr(args, "workers", 1), "model": args.model}
    try:
        await asyncio.to_thread(svc.wait_ready, 180)
        await asyncio.sleep(1.0)
        result = await level(svc, redis_url)
        for _ in range(240):  # until every call has ended (its last windows scored)
            m = metrics(svc.http + "/metrics")
            if value(m, "nes2net_calls_ended_total") >= calls:
                break
            await asyncio.sleep(0.5)
        if rtp_metric:
            result.update(rtp_received=value(m, rtp_metric, result="received"),
                          rtp_lost=value(m, rtp_metric, result="lost"))
        result.update({
            "windows_scored": summary_windows(redis_url, call_prefix),
            "window_latency_p99_s_bucket": p99_bucket(m, "nes2net_window_latency_seconds"),
            "calls_ended": {lab["reason"]: v for n, lab, v in m
                            if n == "nes2net_calls_ended_total" and v}})
        out[name] = result
        if generic:
            g = await run_level(svc.url, redis_url, human_call(), 8000, calls, args.duration_s,
                                cpu=svc.cpu_seconds)
            out["generic"] = {"calls": g.calls, "cpu_ms_per_call_second": g.cpu_ms_per_call_second,
                              "windows": g.windows, "latency_p99_ms": g.latency_p99_ms,
                              "sustained": g.sustained}
    finally:
        out["service_exit_code"] = await asyncio.to_thread(svc.stop, 60)
        if redis is not None:
            redis.stop()
    out.update(environment=environment(torch.device("cpu")),
               date=datetime.now(UTC).date().isoformat())
    return out


def cli(doc: str, main: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]], *,
        unit: str = "calls", workers: bool = True,
        flags: dict[str, str] | None = None) -> None:
    """The benchmarks' command line: ``--<unit> --duration-s --workers --model --smoke ...``.

    ``flags``: a script's own on/off options, ``{"--name": help}``.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for flag, text in (flags or {}).items():
        ap.add_argument(flag, action="store_true", help=text)
    ap.add_argument(f"--{unit}", dest="calls", type=int, default=100)
    ap.add_argument("--duration-s", type=float, default=30.0)
    if workers:
        ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--model", default="builtin:demo")
    ap.add_argument("--smoke", action="store_true", help=f"5 {unit} of 5 s")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--log", type=Path, help="write the service's log here")
    a = ap.parse_args()
    if a.smoke:
        a.calls, a.duration_s = 5, 5.0
    emit(event_loop.run(main(a), "auto"), a.out)
