"""``nes2net-stream bench``: throughput and latency figures as JSON."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import click

from nes2net_stream.bench.provider_calls import PROTOCOLS


def _stamp() -> dict[str, str]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "host_cpus": str(os.cpu_count())}


@click.group()
def bench() -> None:
    """Benchmarks printing JSON figures."""


@bench.command("engine")
@click.option("--model", "model_path", default="builtin:demo", show_default=True,
              help="Model bundle to time.")
@click.option("--batch-sizes", default="1,8,32,128", show_default=True)
@click.option("--window-s", type=float, default=4.0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Autocast dtype on CUDA [bfloat16 on CUDA].")
@click.option("--min-time-s", type=float, default=2.0, show_default=True)
@click.option("--conv-encoder", type=click.Choice(["gemm", "native"]), default="gemm",
              show_default=True, help="SSL conv encoder form ([engine] conv_encoder).")
@click.option("--pos-conv", type=click.Choice(["fft", "native"]), default="fft",
              show_default=True, help="SSL positional convolution ([engine] pos_conv).")
def bench_engine(model_path: str, batch_sizes: str, window_s: float, device: str,
                 dtype: str | None, min_time_s: float, conv_encoder: str, pos_conv: str) -> None:
    """Windows per second and latency per batch of the scoring model."""
    import torch

    from nes2net_stream.bench.engine import bench_model, environment
    from nes2net_stream.bundle import load_model
    from nes2net_stream.cli.common import resolve_device

    dev = torch.device(resolve_device(device))
    detector = load_model(model_path, device=dev)
    detector.set_conv_impl(conv_encoder)  # as the engine runs it (no-ops without an SSL model)
    detector.set_pos_conv_impl(pos_conv)
    dt = getattr(torch, dtype or ("bfloat16" if dev.type == "cuda" else "float32"))
    rows = bench_model(detector, [int(b) for b in batch_sizes.split(",")], window_s=window_s,
                       dtype=None if dt == torch.float32 else dt, min_time_s=min_time_s)
    click.echo(json.dumps({"benchmark": "engine", **_stamp(), "model_id": detector.model_id,
                           "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                           "window_s": window_s, "environment": environment(dev),
                           "rows": rows}, indent=2))


@bench.command("e2e")
@click.option("--calls", default="25,50,100,150,200,250,300", show_default=True,
              help="Concurrency levels to try, in order.")
@click.option("--duration-s", type=float, default=30.0, show_default=True,
              help="Length of every simulated call.")
@click.option("--target-p99-ms", type=float, default=500.0, show_default=True)
@click.option("--frame-ms", type=int, default=20, show_default=True,
              help="Audio packet size sent by the simulated gateway.")
@click.option("--model", "model_path", default="builtin:demo", show_default=True)
@click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Call audio to loop [the bundled human sample call].")
@click.option("--redis-url", envvar="REDIS_URL", default=None,
              help="Use this Redis instead of starting a local redis-server.")
@click.option("--keep-going", is_flag=True, help="Run every level even after one fails.")
@click.option("--client-procs", type=int, default=1, show_default=True,
              help="Load-generator processes; each uses about 0.4 ms of CPU per call-second "
                   "at 100 ms packets, 1.3 ms at 20 ms.")
@click.option("--service-env", multiple=True, metavar="KEY=VALUE",
              help="Extra environment for the service, e.g. NES2NET_ENGINE__MAX_BATCH_SIZE=128.")
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default="generic",
              show_default=True,
              help="What the simulated gateways speak: the generic protocol (binary audio) or "
                   "Twilio Media Streams (JSON, base64 μ-law per packet).")
@click.option("--speech-only", is_flag=True,
              help="Loop only the call audio's speech, without its pauses: every call gets a "
                   "window every hop (the heaviest load per call).")
@click.option("--client-loop", type=click.Choice(["auto", "uvloop", "asyncio"]),
              default="auto", show_default=True,
              help="Event loop of the load generators (auto: uvloop where installed; figures "
                   "recorded before 2026-11-27 used asyncio's).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON here.")
def bench_e2e(calls: str, duration_s: float, target_p99_ms: float, frame_ms: int,
              model_path: str, audio: Path | None, redis_url: str | None, keep_going: bool,
              client_procs: int, service_env: tuple[str, ...], protocol: str,
              speech_only: bool, client_loop: str, out: Path | None) -> None:
    """Sustained concurrent real-time calls over loopback, latency window -> Redis event."""
    import tempfile

    from nes2net_stream.bench.e2e import run_sweep
    from nes2net_stream.demo import sample_path
    from nes2net_stream.localstack import LocalRedis, ServiceProcess

    local = None if redis_url else LocalRedis()
    url = redis_url or local.url  # type: ignore[union-attr]
    log = Path(tempfile.gettempdir()) / "nes2net-bench-service.log"
    env = {"NES2NET_LIMITS__MAX_CALLS": "100000", "NES2NET_LOGGING__LEVEL": "warning",
           "NES2NET_HTTP__PORT": "0", **PROTOCOLS[protocol].service_env}
    env.update(_env_pairs(service_env))
    service = ServiceProcess(url, model=model_path, log_path=log, extra_env=env)
    try:
        service.wait_ready(timeout=600)
        levels = [int(c) for c in calls.split(",")]
        report = asyncio.run(run_sweep(service.url, url, audio or sample_path("human_call.wav"),
                                       levels, duration_s, cpu=service.cpu_seconds,
                                       target_p99_ms=target_p99_ms, frame_ms=frame_ms,
                                       stop_on_failure=not keep_going, procs=client_procs,
                                       worker_cpu=service.worker_cpu_seconds,
                                       protocol=protocol, speech=speech_only,
                                       client_loop=client_loop))
    finally:
        exit_code = service.stop()
        if local is not None:
            local.stop()
    report = {"benchmark": "e2e", **_stamp(), "model": model_path, **report,
              "service_exit_code": exit_code}
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)


@bench.command("soak")
@click.option("--calls", type=int, default=100, show_default=True,
              help="Concurrent calls kept running.")
@click.option("--duration-s", type=float, default=1800.0, show_default=True)
@click.option("--call-s", type=float, default=60.0, show_default=True,
              help="Length of each call; a new one replaces it when it ends.")
@click.option("--sample-s", type=float, default=30.0, show_default=True,
              help="How often the service's /metrics is scraped.")
@click.option("--model", "model_path", default="builtin:demo", show_default=True)
@click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Call audio to loop [the bundled human sample call].")
@click.option("--service-env", multiple=True, metavar="KEY=VALUE",
              help="Extra environment for the service.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON here.")
def bench_soak(calls: int, duration_s: float, call_s: float, sample_s: float, model_path: str,
               audio: Path | None, service_env: tuple[str, ...], out: Path | None) -> None:
    """Long run at constant concurrency: memory, descriptors and tasks must stay flat."""
    import tempfile

    from nes2net_stream.audio.io import load_audio
    from nes2net_stream.bench.soak import report, run_soak
    from nes2net_stream.demo import sample_path
    from nes2net_stream.localstack import LocalRedis, ServiceProcess

    env = {"NES2NET_LOGGING__LEVEL": "warning", "NES2NET_HTTP__PORT": "0",
           **_env_pairs(service_env)}
    local = LocalRedis()
    log = Path(tempfile.gettempdir()) / "nes2net-soak-service.log"
    service = ServiceProcess(local.url, model=model_path, log_path=log, extra_env=env)
    try:
        service.wait_ready(timeout=600)
        clip = load_audio(audio or sample_path("human_call.wav"), sample_rate=8000)
        res = asyncio.run(run_soak(service.url, service.http, clip.samples, 8000, calls=calls,
                                   duration_s=duration_s, call_s=call_s, sample_s=sample_s))
    finally:
        exit_code = service.stop()  # graceful drain; its exit code is part of the report
        local.stop()
    text = json.dumps({"benchmark": "soak", **_stamp(), "model": model_path,
                       "service_exit_code": exit_code, **report(res)}, indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)


def _env_pairs(items: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}",
                                     param_hint="--service-env")
        env[key] = value
    return env
