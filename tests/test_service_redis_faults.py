"""Redis faults never stall ingest or lose alerts: events are buffered and flushed in order."""

import asyncio
import json

from helpers import tone_bursts

from nes2net_stream.client import stream_samples


async def test_redis_killed_and_restarted_mid_call_loses_no_alert(make_service, redis_server):
    svc = await make_service()
    redis_server.stop()  # Redis dies as the call starts
    task = asyncio.create_task(stream_samples(svc.url, tone_bursts(12.0, 8000), 8000,
                                              call_id="outage", realtime=True, speed=3.0))
    await asyncio.sleep(2.5)
    assert svc.ctx.publisher.buffered > 0          # events wait in memory ...
    assert svc.ctx.publisher.errors > 0            # ... after failed writes
    redis_server.start()                           # Redis comes back (empty)
    res = await task
    assert res.summary is not None                 # ingest never stalled
    client = redis_server.client()
    for _ in range(100):
        if svc.ctx.publisher.buffered == 0:
            break
        await asyncio.sleep(0.1)
    alerts = [json.loads(f["event"]) for _, f in client.xrange("nes2net:alerts")]
    scores = [json.loads(f["event"]) for _, f in client.xrange("nes2net:scores")]
    sent_alerts = [e for e in res.events if e["type"] in ("state", "summary")]
    assert [a["event_id"] for a in alerts] == [e["event_id"] for e in sent_alerts]
    assert [s["window"]["index"] for s in scores] == list(range(len(res.of_type("window"))))
    assert svc.ctx.publisher.dropped == {"alert": 0, "score": 0}
    metrics = svc.ctx.metrics.render().decode()
    assert "nes2net_redis_errors_total" in metrics


async def test_bounded_buffer_drops_oldest_scores_first(make_service, redis_server):
    svc = await make_service(redis={"score_buffer": 10, "alert_buffer": 1000})
    redis_server.stop()
    try:
        res = await stream_samples(svc.url, tone_bursts(20.0, 8000), 8000, call_id="full",
                                   realtime=False)
        assert res.summary is not None
        assert svc.ctx.publisher.dropped["score"] > 0
        assert svc.ctx.publisher.dropped["alert"] == 0
    finally:
        redis_server.start()
    client = redis_server.client()
    for _ in range(100):
        if svc.ctx.publisher.buffered == 0:
            break
        await asyncio.sleep(0.1)
    kinds = [json.loads(f["event"])["type"] for _, f in client.xrange("nes2net:alerts")]
    assert kinds.count("summary") == 1 and "state" in kinds
    assert client.xlen("nes2net:scores") == 10    # the newest scores survived
