"""Soak benchmark: many concurrent real-time calls for a long time, resources sampled.

Keeps ``calls`` concurrent calls streaming against a service process: every call lasts
``call_s`` seconds and is replaced by a new one when it ends (so connection set-up and
tear-down are soaked too). Every ``sample_s`` seconds the service's ``/metrics`` is scraped for
its resident memory, open file descriptors, asyncio task count, active calls and Redis backlog.
The report gives each series' first, last, min and max after a warm-up, the memory slope per
hour, and a ``flat`` verdict: memory grew by less than ``max_rss_growth`` between the first and
last quarter after warm-up, and once every call ended, descriptors and tasks came back to
their level before the first call (plus a small margin).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nes2net_stream.client import stream_samples

#: Prometheus series sampled, and the name used in the report
SERIES = {"process_resident_memory_bytes": "rss_bytes",
          "process_open_fds": "open_fds",
          "nes2net_event_loop_tasks": "event_loop_tasks",
          "nes2net_active_calls": "active_calls",
          "nes2net_redis_buffered_events": "redis_buffered_events"}


@dataclass
class SoakResult:
    """What a soak run measured."""

    calls: int
    duration_s: float
    call_s: float
    calls_completed: int = 0
    calls_failed: int = 0
    windows_scored: int = 0
    windows_dropped: int = 0
    samples: list[dict[str, float]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    rss_slope_bytes_per_h: float | None = None
    flat: bool | None = None
    errors: list[str] = field(default_factory=list)


def parse_metrics(text: str) -> dict[str, float]:
    """The sampled series (sums over label sets) from a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        base = name.split("{", 1)[0]
        if base in SERIES:
            key = SERIES[base]
            out[key] = out.get(key, 0.0) + float(rest.split()[0])
    return out


def scrape(http_url: str, timeout: float = 5.0) -> dict[str, float]:
    """Scrape ``/metrics`` of a service once."""
    with urllib.request.urlopen(http_url + "/metrics", timeout=timeout) as resp:
        return parse_metrics(resp.read().decode())


def summarise(samples: list[dict[str, float]], warmup_s: float,
              max_rss_growth: float = 0.10) -> tuple[dict[str, Any], float | None, bool | None]:
    """Per-series statistics after warm-up, the RSS slope per hour and the flatness verdict."""
    steady = [s for s in samples if s["t_s"] >= warmup_s] or samples
    stats: dict[str, Any] = {}
    for key in SERIES.values():
        values = [s[key] for s in steady if key in s]
        if values:
            stats[key] = {"first": values[0], "last": values[-1], "min": min(values),
                          "max": max(values)}
    if len(samples) >= 2:
        stats["idle_before_after"] = {k: [samples[0].get(k, 0.0), samples[-1].get(k, 0.0)]
                                      for k in ("open_fds", "event_loop_tasks")}
    rss = [(s["t_s"], s["rss_bytes"]) for s in steady[:-1] if "rss_bytes" in s]
    if len(rss) < 3:
        return stats, None, None
    t, v = np.array(rss).T
    slope = float(np.polyfit(t, v, 1)[0]) * 3600.0
    first_rss = float(np.median(v[: max(1, len(v) // 4)]))
    last_rss = float(np.median(v[-max(1, len(v) // 4):]))
    flat = last_rss <= first_rss * (1.0 + max_rss_growth)
    for key, margin in (("open_fds", 16), ("event_loop_tasks", 16)):
        before, after = samples[0].get(key), samples[-1].get(key)
        if before is not None and after is not None:
            flat = flat and after <= before + margin
    return stats, round(slope, 1), bool(flat)


async def run_soak(ws_url: str, http_url: str, audio: np.ndarray, rate: int, *, calls: int,
                   duration_s: float, call_s: float = 60.0, sample_s: float = 30.0,
                   warmup_s: float | None = None, frame_ms: int = 20) -> SoakResult:
    """Run the soak (see the module docstring) and return its measurements."""
    n = int(call_s * rate)
    clip = np.tile(audio, int(np.ceil(n / audio.shape[0])))[:n]
    res = SoakResult(calls=calls, duration_s=duration_s, call_s=call_s)
    t0 = time.monotonic()
    deadline = t0 + duration_s
    counter = 0

    async def lane(i: int) -> None:
        nonlocal counter
        await asyncio.sleep(min(call_s, 10.0) * i / max(1, calls))  # ramp up
        while time.monotonic() + call_s <= deadline + 1.0:
            counter += 1
            x = np.roll(clip, int(counter * rate * 0.37) % clip.shape[0])
            try:
                r = await stream_samples(ws_url, x, rate, call_id=f"soak-{counter}",
                                         encoding="mulaw", realtime=True, frame_ms=frame_ms,
                                         open_timeout=60)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
                res.calls_failed += 1
                if len(res.errors) < 5:
                    res.errors.append(repr(exc))
                await asyncio.sleep(1.0)
                continue
            res.calls_completed += 1
            if r.summary is not None:
                res.windows_scored += r.summary["summary"]["windows_scored"]
                res.windows_dropped += r.summary["summary"]["windows_dropped"]

    async def sampler() -> None:
        while time.monotonic() < deadline + call_s:
            try:
                values = await asyncio.to_thread(scrape, http_url)
            except OSError as exc:
                res.errors.append(f"metrics scrape failed: {exc!r}")
            else:
                res.samples.append({"t_s": round(time.monotonic() - t0, 1), **values})
            await asyncio.sleep(sample_s)

    try:  # the idle baseline, before the first call
        res.samples.append({"t_s": 0.0, **await asyncio.to_thread(scrape, http_url)})
    except OSError as exc:
        res.errors.append(f"metrics scrape failed: {exc!r}")
    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*[lane(i) for i in range(calls)])
    await asyncio.sleep(3.0)  # let the last calls close, then the idle sample
    sampling.cancel()
    try:
        res.samples.append({"t_s": round(time.monotonic() - t0, 1),
                            **await asyncio.to_thread(scrape, http_url)})
    except OSError as exc:
        res.errors.append(f"metrics scrape failed: {exc!r}")
    warm = warmup_s if warmup_s is not None else min(duration_s / 5.0, 300.0)
    res.series, res.rss_slope_bytes_per_h, res.flat = summarise(res.samples, warm)
    return res


def report(res: SoakResult) -> dict[str, Any]:
    """JSON-ready report."""
    return asdict(res)
