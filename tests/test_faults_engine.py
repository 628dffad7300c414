"""Scoring-engine faults in a running service: a crash of the worker thread is survived (the
worker restarts, calls go on marked degraded), a stalled batch makes /readyz fail."""

import asyncio
import json
import threading
import urllib.error
import urllib.request

from helpers import tone_bursts
from prometheus_client.parser import text_string_to_metric_families

from nes2net_stream.client import stream_samples


class Boom(BaseException):
    """Not an Exception: escapes the batch's error handling like a native-extension abort."""


def get(svc, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{svc.port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def flushed(svc) -> None:
    for _ in range(200):
        if svc.ctx.publisher.buffered == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("events still buffered for Redis")


async def metric(svc, name: str) -> float:
    _, text = await asyncio.to_thread(get, svc, "/metrics")
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == name), 0.0)


def crash_once(engine) -> threading.Event:
    """The engine's first forward pass after the returned event is set raises Boom."""
    original = engine.runner.launch
    armed = threading.Event()
    crashed = []

    def run(*args, **kwargs):
        if armed.is_set() and not crashed:
            crashed.append(True)
            raise Boom("simulated worker crash")
        return original(*args, **kwargs)

    engine.runner.launch = run
    return armed


async def test_worker_crash_restarts_engine_and_marks_active_calls_degraded(make_service,
                                                                            redis_client):
    svc = await make_service()
    engine = svc.ctx.engine
    armed = crash_once(engine)
    res = await stream_samples(svc.url, tone_bursts(10.0, 8000), 8000, call_id="crashy",
                               realtime=True, speed=4.0,  # crash once it has been scored
                               on_event=lambda e: e["type"] == "window" and armed.set())
    assert engine.restarts == 1 and engine.running
    windows = res.of_type("window")
    assert windows and "degraded" not in windows[0]          # before the crash: normal
    assert windows[-1]["degraded"] == "engine_restart"       # later windows still scored
    marked = [("degraded" in e) for e in res.events if e["type"] in ("window", "state",
                                                                      "summary")]
    assert marked == sorted(marked)                          # every event after the crash
    summary = res.summary["summary"]
    assert res.summary["degraded"] == "engine_restart" and summary["end_reason"] == "stop"
    assert summary["windows_dropped"] >= 1                   # the crashed batch's window
    status, body = await asyncio.to_thread(get, svc, "/readyz")
    assert status == 200 and json.loads(body)["checks"]["model_loaded"] is True
    assert await metric(svc, "nes2net_engine_restarts_total") == 1.0
    assert await metric(svc, "nes2net_windows_dropped_total") >= 1.0
    # a call started after the restart is scored normally and its alerts are published
    after = await stream_samples(svc.url, tone_bursts(5.0, 8000), 8000, call_id="after",
                                 realtime=False)
    assert after.of_type("window") and all("degraded" not in e for e in after.events)
    await flushed(svc)
    published = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
    summaries = {e["call_id"]: e for e in published if e["type"] == "summary"}
    assert summaries["crashy"]["degraded"] == "engine_restart"
    assert "degraded" not in summaries["after"]
    assert summaries["after"]["summary"]["windows_scored"] == len(after.of_type("window"))


async def test_crash_during_one_call_leaves_other_calls_alerts_published(make_service,
                                                                         redis_client):
    svc = await make_service()
    armed = crash_once(svc.ctx.engine)
    scored: set[str] = set()

    def seen(event):  # crash once every call has been scored at least once
        if event["type"] == "window":
            scored.add(event["call_id"])
            if len(scored) == 3:
                armed.set()

    calls = [asyncio.create_task(stream_samples(svc.url, tone_bursts(10.0, 8000, seed=i), 8000,
                                                call_id=f"peer-{i}", realtime=True, speed=4.0,
                                                on_event=seen))
             for i in range(3)]
    results = await asyncio.gather(*calls)
    assert svc.ctx.engine.restarts == 1
    await flushed(svc)
    published = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
    for res in results:
        assert res.close_code == 1000 and res.summary["summary"]["end_reason"] == "stop"
        assert res.summary["summary"]["windows_scored"] >= 1
        assert res.summary["degraded"] == "engine_restart"  # all were active at the crash
        sent = [e["event_id"] for e in res.events if e["type"] in ("state", "summary")]
        assert [e["event_id"] for e in published if e["call_id"] == res.call_id] == sent


async def test_stalled_batch_fails_readyz_until_it_finishes(make_service):
    svc = await make_service()
    engine = svc.ctx.engine
    engine.stall_timeout_s = 0.3
    original = engine.runner.launch
    release = threading.Event()

    def slow(*args, **kwargs):
        release.wait(10)  # a batch stuck in the model (a hung device, a deadlock)
        return original(*args, **kwargs)

    engine.runner.launch = slow
    call = asyncio.create_task(stream_samples(svc.url, tone_bursts(6.0, 8000), 8000,
                                              call_id="stuck", realtime=False))
    for _ in range(200):
        if engine.stalled:
            break
        await asyncio.sleep(0.05)
    assert engine.stalled and engine.running
    status, body = await asyncio.to_thread(get, svc, "/readyz")
    assert status == 503
    checks = json.loads(body)["checks"]
    assert checks == {"model_loaded": False, "redis": True, "not_draining": True}
    engine.runner.launch = original
    release.set()
    res = await call
    assert res.summary["summary"]["windows_scored"] >= 1 and "degraded" not in res.summary
    assert not engine.stalled
    status, body = await asyncio.to_thread(get, svc, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
