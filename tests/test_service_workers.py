"""Several ingest processes feeding one scorer process: same events as single-process mode."""

import asyncio
import contextlib
import json

import pytest
from helpers import tone_bursts

from nes2net_stream.client import stream_samples
from nes2net_stream.localstack import ServiceProcess


async def test_two_ingest_workers_share_the_port_and_one_scorer(small_bundle, redis_server,
                                                               redis_client, tmp_path):
    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=tmp_path / "log",
                         extra_env={"NES2NET_SERVER__WORKERS": "2", "NES2NET_HTTP__PORT": "0",
                                    "NES2NET_LOGGING__LEVEL": "info"})
    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        x = tone_bursts(6.0, 8000)
        results = await asyncio.gather(*[
            stream_samples(svc.url, x, 8000, call_id=f"mp-{i}", realtime=True, speed=3.0)
            for i in range(12)])
        await asyncio.sleep(2.5)  # every worker refreshes its gauges
        scrapes = [await asyncio.to_thread(_scrape, svc.http + "/metrics") for _ in range(8)]
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
    assert code == 0
    assert all(r.summary is not None for r in results)
    assert all(r.summary["summary"]["windows_scored"] >= 1 for r in results)
    summaries = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")
                 if f["type"] == "summary"]
    assert sorted(s["call_id"] for s in summaries) == sorted(f"mp-{i}" for i in range(12))
    log = (tmp_path / "log").read_text()
    listening = [json.loads(line) for line in log.splitlines() if '"service listening"' in line]
    assert {e["worker"] for e in listening} == {0, 1}
    assert {e["event_loop"] for e in listening} == {"uvloop"}  # the default where installed
    # both workers took calls (the kernel spreads connections over SO_REUSEPORT sockets)
    assert '"scorer ready"' in log
    # whichever worker answers a scrape, it reports the sum over all workers
    for values in scrapes:
        assert values["nes2net_calls_started_total"] == 12, values
        assert values["nes2net_calls_ended_total"] == 12
        assert values["nes2net_active_calls"] == 0 and values["nes2net_ready"] == 1
        assert values["nes2net_audio_seconds_total"] == pytest.approx(12 * 6.0, rel=0.01)
        assert not any(k.startswith("process_") for k in values)  # per-process: left out


def _scrape(url: str) -> dict[str, float]:
    """Sample values of a /metrics page, summed over label sets."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _wait_listening(log_path, workers: set[int], timeout: float) -> None:
    """Wait until every ingest worker logged that it listens (startup is not simultaneous)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text() if log_path.exists() else ""
        seen = {json.loads(line).get("worker") for line in text.splitlines()
                if '"service listening"' in line}
        if workers <= seen:
            return
        time.sleep(0.1)
    raise AssertionError(f"workers {sorted(workers)} did not all start listening")


def _running(stat) -> bool:
    """True while the process of ``/proc/PID/stat`` exists and is not a zombie."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _worker_pids(pid: int) -> list[int]:
    """Ingest worker processes of a service (spawned multiprocessing children)."""
    from pathlib import Path

    from nes2net_stream.localstack import _children

    out = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out.append(child)
    return out


async def test_a_killed_ingest_worker_is_replaced_and_other_calls_go_on(
        small_bundle, redis_server, redis_client, tmp_path):
    import os
    import signal

    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=tmp_path / "log",
                         extra_env={"NES2NET_SERVER__WORKERS": "2", "NES2NET_HTTP__PORT": "0",
                                    "NES2NET_LOGGING__LEVEL": "info"})
    x = tone_bursts(8.0, 8000)
    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        # ready means one worker answers; calls must reach both before one is killed
        await asyncio.to_thread(_wait_listening, tmp_path / "log", {0, 1}, 60)
        workers = _worker_pids(svc.proc.pid)
        assert len(workers) == 2
        calls = [asyncio.ensure_future(stream_samples(svc.url, x, 8000, call_id=f"k-{i}",
                                                      realtime=True, speed=2.0))
                 for i in range(10)]
        await asyncio.sleep(1.5)
        os.kill(workers[0], signal.SIGKILL)  # a crash no handler can catch
        first = await asyncio.gather(*calls, return_exceptions=True)
        for _ in range(100):  # the scorer notices and starts a replacement
            now = _worker_pids(svc.proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            await asyncio.sleep(0.2)
        assert len(now) == 2 and workers[0] not in now
        await asyncio.sleep(1.0)
        second = await asyncio.gather(*[
            stream_samples(svc.url, x[:24000], 8000, call_id=f"after-{i}", realtime=True,
                           speed=3.0) for i in range(6)])
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
    assert code == 0
    survived = [r for r in first if not isinstance(r, BaseException) and r.summary is not None]
    assert survived, "the calls of the surviving worker must finish"
    assert all(r.summary is not None for r in second)
    published = {json.loads(f["event"])["call_id"] for _, f in redis_client.xrange(
        "nes2net:alerts") if f["type"] == "summary"}
    assert {r.summary["call_id"] for r in survived} <= published
    assert {f"after-{i}" for i in range(6)} <= published
    assert '"ingest worker died; restarting"' in (tmp_path / "log").read_text()


async def test_workers_end_their_calls_and_exit_when_the_scorer_dies(
        small_bundle, redis_server, redis_client, tmp_path):
    import os
    import signal
    from pathlib import Path

    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=tmp_path / "log",
                         extra_env={"NES2NET_SERVER__WORKERS": "2", "NES2NET_HTTP__PORT": "0",
                                    "NES2NET_LOGGING__LEVEL": "info"})
    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        workers = _worker_pids(svc.proc.pid)
        calls = [asyncio.ensure_future(stream_samples(svc.url, tone_bursts(20.0, 8000), 8000,
                                                      call_id=f"s-{i}", realtime=True))
                 for i in range(4)]
        await asyncio.sleep(6.0)  # every call has scored a few windows
        os.kill(svc.proc.pid, signal.SIGKILL)  # the scorer (and model owner) is gone
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)
        for _ in range(150):
            alive = [p for p in workers if _running(Path(f"/proc/{p}/stat"))]
            if not alive:
                break
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(svc.stop, 10)
        for p in workers:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
    assert not alive, "ingest workers must exit when the scorer is lost"
    ended = {r.summary["call_id"] for r in results
             if not isinstance(r, BaseException) and r.summary is not None}
    published = {json.loads(f["event"])["call_id"] for _, f in redis_client.xrange(
        "nes2net:alerts") if f["type"] == "summary"}
    assert ended == {f"s-{i}" for i in range(4)}  # every call got its summary, early
    assert ended <= published


@pytest.mark.parametrize("case", ["gateway", "calibration"])
def test_a_configuration_the_workers_refuse_stops_the_service_naming_the_key(
        small_bundle, tmp_path, case):
    """Each ingest worker checks its own gateways and calibrations; a refusal stops the whole
    service with exit code 2 instead of restarting workers that cannot start."""
    import subprocess
    import sys

    from servers import free_port

    cfg = tmp_path / "c.toml"
    body = (f'[model]\npath = "{small_bundle}"\n[server]\nworkers = 2\nport = {free_port()}\n'
            '[http]\nport = 0\n[redis]\nurl = "redis://127.0.0.1:1"\n')
    if case == "gateway":  # found by the worker's gateway check
        body += '[gateways.asterisk_ws]\nenabled = true\nusername = "a"\n'
        key = "gateways.asterisk_ws.username/password"
    else:  # found before any worker starts
        body += f'[scoring]\ncalibrations = {{ twilio = "{tmp_path / "none.json"}" }}\n'
        key = "scoring.calibrations.twilio"
    cfg.write_text(body)
    proc = subprocess.run([sys.executable, "-m", "nes2net_stream", "serve", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert key in out
    assert "ingest worker died; restarting" not in out
