"""Several ingest processes feeding one scorer process: same events as single-process mode."""

import asyncio
import json

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
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
    assert code == 0
    assert all(r.summary is not None for r in results)
    assert all(r.summary["summary"]["windows_scored"] >= 1 for r in results)
    summaries = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")
                 if f["type"] == "summary"]
    assert sorted(s["call_id"] for s in summaries) == sorted(f"mp-{i}" for i in range(12))
    log = (tmp_path / "log").read_text()
    workers = {json.loads(line).get("worker") for line in log.splitlines()
               if '"service listening"' in line}
    assert workers == {0, 1}
    # both workers took calls (the kernel spreads connections over SO_REUSEPORT sockets)
    assert '"scorer ready"' in log
