"""Redis faults mid-call, against real redis-server processes: a paused server (CLIENT PAUSE),
an out-of-memory server (maxmemory + noeviction) and an unreachable one with a tiny byte
bound. Alerts are delivered at least once, in order; what cannot be held is counted and logged.
"""

import asyncio
import json

import pytest
from helpers import tone_bursts
from prometheus_client.parser import text_string_to_metric_families
from servers import RedisServer, free_port
from structlog.testing import capture_logs

from nes2net_stream.client import StreamResult, stream_samples
from nes2net_stream.service.events import OutputEvent, Source
from nes2net_stream.service.metrics import ServiceMetrics
from nes2net_stream.service.publisher import RedisConfig, RedisPublisher


def metric(svc, name: str, **labels: str) -> float:
    """A sample's value from the service's /metrics text (0 when absent)."""
    text = svc.ctx.metrics.render().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def flushed(pub: RedisPublisher, within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.05)):
        if pub.buffered == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pub.buffered} events still buffered")


def first_seen(ids: list[str]) -> list[str]:
    """Ids in order of first occurrence (what a consumer de-duplicating on event_id sees)."""
    return list(dict.fromkeys(ids))


def check_delivery(client, res: StreamResult) -> list[str]:
    """Every alert and window score of the call is in Redis, in order; returns alert ids."""
    alerts = [json.loads(f["event"]) for _, f in client.xrange("nes2net:alerts")]
    ids = [a["event_id"] for a in alerts if a["call_id"] == res.call_id]
    sent = [e["event_id"] for e in res.events if e["type"] in ("state", "summary")]
    assert sent and res.summary is not None
    assert first_seen(ids) == sent
    windows = [json.loads(f["event"]) for _, f in client.xrange("nes2net:scores")]
    indices = [w["window"]["index"] for w in windows if w["call_id"] == res.call_id]
    assert first_seen(indices) == [e["window"]["index"] for e in res.of_type("window")]
    return ids


@pytest.fixture()
def own_redis(tmp_path):
    """A redis-server of this test only: its configuration can be changed freely."""
    server = RedisServer(tmp_path / "redis", extra=["--maxmemory-policy", "noeviction"]).start()
    yield server
    server.stop()


@pytest.mark.both_loops
async def test_client_pause_mid_call_delays_but_loses_no_event(make_service, redis_client):
    svc = await make_service(redis={"socket_timeout_s": 0.5})
    pub = svc.ctx.publisher
    with capture_logs() as logs:
        task = asyncio.create_task(stream_samples(
            svc.url, tone_bursts(10.0, 8000), 8000, call_id="paused", realtime=True, speed=4.0))
        await asyncio.sleep(0.8)
        redis_client.execute_command("CLIENT", "PAUSE", 2000, "WRITE")  # writes block for 2 s
        peak = 0
        for _ in range(15):
            await asyncio.sleep(0.1)
            peak = max(peak, pub.buffered)
        res = await task
        await flushed(pub)
    assert res.summary["summary"]["end_reason"] == "stop"  # ingest never waited for Redis
    assert peak > 0                                        # events waited in memory ...
    assert pub.errors > 0 and metric(svc, "nes2net_redis_errors_total") == pub.errors
    check_delivery(redis_client, res)                     # ... and all came out, in order
    assert pub.dropped == {"alert": 0, "score": 0}
    assert metric(svc, "nes2net_redis_buffered_events") == 0
    failed = [e for e in logs if e["event"] == "redis write failed; buffering and retrying"]
    assert failed and failed[0]["cause"] == "timeout"
    assert any(e["event"] == "redis writes resumed" for e in logs)


async def test_out_of_memory_mid_call_is_retried_without_losing_alerts(make_service, own_redis):
    svc = await make_service(redis={"url": own_redis.url})
    pub = svc.ctx.publisher
    admin = own_redis.client()
    with capture_logs() as logs:
        task = asyncio.create_task(stream_samples(
            svc.url, tone_bursts(10.0, 8000), 8000, call_id="oom", realtime=True, speed=4.0))
        await asyncio.sleep(0.6)
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", used + 8192)  # a few more events fit, then XADD -> OOM
        for _ in range(60):
            if pub.errors:
                break
            await asyncio.sleep(0.05)
        assert pub.errors > 0, "Redis never refused a write"
        await asyncio.sleep(0.5)
        assert pub.buffered > 0
        admin.config_set("maxmemory", 0)  # memory is back (no limit)
        res = await task
        await flushed(pub)
    check_delivery(admin, res)
    assert pub.dropped == {"alert": 0, "score": 0}
    assert metric(svc, "nes2net_redis_errors_total") >= 1
    failed = [e for e in logs if e["event"] == "redis write failed; buffering and retrying"]
    assert failed and failed[0]["cause"] == "oom" and "maxmemory" in failed[0]["error"]
    admin.close()


def _big_alert(i: int) -> OutputEvent:
    return OutputEvent(type="state", call_id="partial", channel="caller",
                       source=Source("websocket", "generic"), model_id="m", state="suspicious",
                       body={"window": {"index": i}, "running": {"spoof_probability": 0.6}},
                       metadata={"pad": "x" * 4000})


async def test_partial_batch_under_oom_retries_only_the_unwritten_tail(own_redis):
    admin = own_redis.client()
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used + 200_000)  # room for a few dozen of the 100 events
    pub = RedisPublisher(RedisConfig(url=own_redis.url, batch_size=256, max_backoff_s=0.2),
                         ServiceMetrics())
    events = [_big_alert(i) for i in range(100)]
    with capture_logs() as logs:
        for ev in events:
            pub.publish(ev)  # all queued before the writer runs: one pipelined batch
        await pub.start()
        for _ in range(100):
            if pub.errors:
                break
            await asyncio.sleep(0.05)
        written = admin.xlen("nes2net:alerts")
        assert pub.errors > 0 and 0 < written < len(events)
        assert pub.partial_writes >= 1 and pub.buffered == len(events) - written
        admin.config_set("maxmemory", 0)
        await flushed(pub)
        await pub.stop()
    ids = [f["event_id"] for _, f in admin.xrange("nes2net:alerts")]
    assert ids == [ev.event_id for ev in events]  # no loss, no duplicate, order kept
    failed = [e for e in logs if e["event"] == "redis write failed; buffering and retrying"]
    assert failed[0]["cause"] == "oom" and failed[0]["written_of_batch"] == written
    admin.close()


async def test_byte_bound_drops_oldest_alerts_counts_and_logs_them():
    port = free_port()  # nothing listens here: every write fails
    metrics = ServiceMetrics()
    pub = RedisPublisher(RedisConfig(url=f"redis://127.0.0.1:{port}/0", alert_buffer=1000,
                                     alert_buffer_bytes=4 * 4400, socket_timeout_s=0.2,
                                     max_backoff_s=0.1), metrics)
    events = [_big_alert(i) for i in range(10)]
    with capture_logs() as logs:
        await pub.start()
        for ev in events:
            pub.publish(ev)
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
    assert pub.buffered == 3 and pub.buffered_bytes <= 4 * 4400  # the byte bound held
    assert pub.dropped == {"alert": 7, "score": 0}
    samples = {(s.name, s.labels.get("type")): s.value
               for f in text_string_to_metric_families(metrics.render().decode())
               for s in f.samples}
    assert samples[("nes2net_events_dropped_total", "alert")] == 7
    assert samples[("nes2net_redis_buffered_events", None)] == 3
    assert samples[("nes2net_redis_buffered_bytes", None)] == pub.buffered_bytes
    lost = [e["lost_event_id"] for e in logs
            if e["event"] == "redis buffer full, dropping oldest event"]
    assert lost == [ev.event_id for ev in events[:7]]  # the oldest went, each one logged
    assert all(e["log_level"] == "error" for e in logs if "lost_event_id" in e)
    await pub.stop(grace_s=0.2)
