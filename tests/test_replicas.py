"""Horizontal scaling on one machine: two service replicas publishing to one Redis.

Each call is one WebSocket connection and stays on the replica that accepted it; every alert is
in Redis exactly once, stamped with the id of the replica that produced it. With HAProxy
installed, the same runs through the Compose entry point's configuration (docker/haproxy.cfg):
least-connections spreading and readiness gating on ``/readyz``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import tone_bursts
from servers import free_port

from nes2net_stream.client import stream_samples
from nes2net_stream.localstack import ServiceProcess

ROOT = Path(__file__).resolve().parents[1]
REPLICAS = ("r1", "r2")


@pytest.fixture(scope="module")
def replicas(redis_server, small_bundle, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replicas")
    procs = {rid: ServiceProcess(redis_server.url, model=str(small_bundle),
                                 log_path=logs / f"{rid}.log",
                                 extra_env={"NES2NET_REPLICA_ID": rid, "NES2NET_HTTP__PORT": "0"})
             for rid in REPLICAS}
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(lambda p: p.wait_ready(120), procs.values()))
        yield procs
    finally:
        with ThreadPoolExecutor(len(procs)) as pool:
            codes = list(pool.map(lambda p: p.stop(60), procs.values()))
        assert all(code == 0 for code in codes), codes


def _alerts(client, prefix: str) -> list[dict]:
    return [json.loads(f["event"]) for _, f in client.xrange("nes2net:alerts")
            if f["call_id"].startswith(prefix)]


def _metric(http: str, name: str) -> float:
    text = urllib.request.urlopen(http + "/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text,
                                                      re.MULTILINE))


def _check_exactly_once(client, results, prefix: str) -> list[dict]:
    """Every alert sent on a call's socket is in Redis once, from the call's replica."""
    alerts = _alerts(client, prefix)
    ids = [a["event_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was published twice"
    sent = [e for r in results for e in r.events if e["type"] in ("state", "summary")]
    assert sorted(ids) == sorted(e["event_id"] for e in sent)
    for r in results:
        replicas_of_call = {e["replica"] for e in r.events if "replica" in e}
        assert len(replicas_of_call) == 1, f"{r.call_id} spans {replicas_of_call}"
        stored = [a for a in alerts if a["call_id"] == r.call_id]
        assert {a["replica"] for a in stored} == replicas_of_call
        assert [a["type"] for a in stored].count("summary") == 1
        assert stored[-1]["type"] == "summary" and stored[-1]["summary"]["windows_scored"] >= 1
    return alerts


async def test_calls_spread_over_two_replicas_publish_every_alert_once(replicas, redis_client):
    x = tone_bursts(5.0, 8000)
    started = {rid: _metric(p.http, "nes2net_calls_started_total")
               for rid, p in replicas.items()}
    calls = [(f"spread-{i}", REPLICAS[i % 2]) for i in range(8)]
    results = await asyncio.gather(*[
        stream_samples(replicas[rid].url, x, 8000, call_id=cid, realtime=True, speed=4.0)
        for cid, rid in calls])
    for _ in range(50):  # summaries are written right after the socket's; allow the flush
        if len([a for a in _alerts(redis_client, "spread-") if a["type"] == "summary"]) == 8:
            break
        await asyncio.sleep(0.1)
    alerts = _check_exactly_once(redis_client, results, "spread-")
    by_call = {a["call_id"]: a["replica"] for a in alerts}
    assert by_call == dict(calls)
    for rid, p in replicas.items():  # each replica accepted exactly the calls sent to it
        assert _metric(p.http, "nes2net_calls_started_total") - started[rid] == 4
    hashes = {cid: redis_client.hgetall(f"nes2net:call:{cid}") for cid, _ in calls}
    assert all(h["ended"] == "1" for h in hashes.values())


def _entry_point_config(ports: dict[str, int], listen: int) -> str:
    """docker/haproxy.cfg with its ingest proxy pointed at local replicas (no Docker DNS)."""
    text = (ROOT / "docker" / "haproxy.cfg").read_text()
    sections = re.split(r"\n(?=\S)", text)
    keep = []
    for section in sections:
        head = section.split("\n", 1)[0]
        if head.startswith(("global", "defaults")):
            section = section.replace("maxconn 20000", "maxconn 1000")  # this machine's fds
            keep.append(section.replace("log stdout format raw local0 info",
                                        "log stderr format raw local0"))
        elif head == "frontend ingest":
            keep.append(section.replace("bind :8080", f"bind 127.0.0.1:{listen}"))
        elif head == "backend nes2net_ingest":
            section = section.replace(" resolvers docker init-addr none", "")
            servers = "\n".join(f"    server {rid} 127.0.0.1:{port}" for rid, port in
                                ports.items())
            keep.append(re.sub(r"    server-template .*", servers, section))
    return "\n".join(keep) + "\n"


@pytest.fixture()
def entry_point(replicas, tmp_path):
    """HAProxy with the ingest proxy of docker/haproxy.cfg in front of both replicas."""
    if shutil.which("haproxy") is None:
        pytest.skip("HAProxy is not installed (Debian: apt-get install haproxy)")
    listen = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(_entry_point_config({rid: p.port for rid, p in replicas.items()}, listen))
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    time.sleep(2.5)  # first health checks (rise 2, inter 2 s)
    yield f"ws://127.0.0.1:{listen}/v1/stream"
    proxy.terminate()
    proxy.wait(10)


async def test_entry_point_spreads_calls_and_gates_on_readiness(replicas, entry_point,
                                                                redis_client):
    x = tone_bursts(5.0, 8000)
    results = await asyncio.gather(*[
        stream_samples(entry_point, x, 8000, call_id=f"lb-{i}", realtime=True, speed=4.0)
        for i in range(8)])
    await asyncio.sleep(0.5)
    alerts = _check_exactly_once(redis_client, results, "lb-")
    per_replica = Counter({a["call_id"]: a["replica"] for a in alerts}.values())
    assert per_replica == {"r1": 4, "r2": 4}  # least connections: an even split
    # a stopping replica gets no new call: it closes its listener and fails /readyz at once,
    # HAProxy retries a refused connection on another replica and its check takes it out
    code = await asyncio.to_thread(replicas["r2"].stop, 60)
    assert code == 0
    t0 = time.monotonic()
    late = await asyncio.gather(*[
        stream_samples(entry_point, x[:16000], 8000, call_id=f"late-{i}", realtime=False)
        for i in range(4)])
    assert time.monotonic() - t0 < 30
    assert all(r.summary is not None for r in late)
    assert {e["replica"] for r in late for e in r.events if "replica" in e} == {"r1"}
