import asyncio
import contextlib
import json
import shutil
import subprocess
import urllib.request
import uuid

import numpy as np
import pytest
from helpers import tone_bursts

from nes2net_stream.client import encode_samples, stream_samples
from nes2net_stream.settings import Settings

DOCUMENTED = {"schema", "event_id", "type", "call_id", "channel", "source", "metadata", "ts",
              "ts_unix", "model_id", "replica", "state"}


@pytest.mark.both_loops
async def test_call_events_on_socket_and_in_redis(make_service, redis_client):
    svc = await make_service()
    x = tone_bursts(7.0, 8000)
    res = await stream_samples(svc.url, x, 8000, call_id="call-1", encoding="mulaw",
                               realtime=False, metadata={"ani": "+15551234567"})
    types = [e["type"] for e in res.events]
    assert types[0] == "started" and types[-1] == "summary" and res.close_code == 1000
    windows = res.of_type("window")
    assert len(windows) >= 3
    w = windows[0]
    assert DOCUMENTED <= set(w)
    assert w["schema"] == "nes2net.event/v1" and w["call_id"] == "call-1"
    assert w["channel"] == "caller" and w["model_id"] == "test-small"
    assert w["source"]["gateway"] == "generic" and w["metadata"] == {"ani": "+15551234567"}
    assert 0.0 <= w["score"]["spoof_probability"] <= 1.0
    assert w["window"]["end_s"] > w["window"]["start_s"]
    summary = res.summary["summary"]
    assert summary["windows_scored"] == len(windows)
    assert summary["end_reason"] == "stop" and summary["final_state"] in (
        "bona_fide", "suspicious", "spoof")
    await asyncio.sleep(0.3)
    alerts = redis_client.xrange("nes2net:alerts")
    scores = redis_client.xrange("nes2net:scores")
    assert len(scores) == len(windows)
    alert_docs = [json.loads(f["event"]) for _, f in alerts]
    assert {d["type"] for d in alert_docs} == {"state", "summary"}
    assert all(DOCUMENTED <= set(d) for d in alert_docs)
    ids = [d["event_id"] for d in alert_docs] + [json.loads(f["event"])["event_id"]
                                                 for _, f in scores]
    assert len(set(ids)) == len(ids)
    h = redis_client.hgetall("nes2net:call:call-1")
    assert h["state"] == summary["final_state"] and h["ended"] == "1"
    assert 0 < redis_client.ttl("nes2net:call:call-1") <= 86400


async def test_stereo_call_scores_caller_and_requested_channels(make_service):
    svc = await make_service()
    caller = tone_bursts(6.0, 16000, seed=1)
    agent = tone_bursts(6.0, 16000, seed=2)
    res = await stream_samples(svc.url, np.stack([caller, agent], axis=1), 16000,
                               realtime=False, extra_start={"score_channels": ["caller", "agent"]})
    assert {e["channel"] for e in res.of_type("summary")} == {"caller", "agent"}
    only_caller = await stream_samples(svc.url, np.stack([caller, agent], axis=1), 16000,
                                       realtime=False)
    assert {e["channel"] for e in only_caller.of_type("window")} == {"caller"}


@pytest.mark.both_loops
async def test_fifty_concurrent_calls_all_get_summaries(make_service, redis_client):
    svc = await make_service()
    x = tone_bursts(5.0, 8000)
    results = await asyncio.gather(*[
        stream_samples(svc.url, x, 8000, call_id=f"load-{i}", encoding="mulaw", realtime=True,
                       speed=4.0) for i in range(50)])
    assert all(r.summary is not None for r in results)
    assert all(r.summary["summary"]["windows_scored"] >= 1 for r in results)
    await asyncio.sleep(0.5)
    summaries = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")
                 if f["type"] == "summary"]
    assert sorted(s["call_id"] for s in summaries) == sorted(f"load-{i}" for i in range(50))


async def test_health_and_metrics_endpoints(make_service, redis_server):
    svc = await make_service()
    base = f"http://127.0.0.1:{svc.port}"

    def get(path):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    assert (await asyncio.to_thread(get, "/livez"))[0] == 200
    status, body = await asyncio.to_thread(get, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    await stream_samples(svc.url, tone_bursts(5.0, 8000), 8000, realtime=False)
    status, text = await asyncio.to_thread(get, "/metrics")
    assert status == 200
    for name in ("nes2net_active_calls", "nes2net_windows_scored_total", "nes2net_batch_size",
                 "nes2net_queue_delay_seconds", "nes2net_inference_seconds",
                 "nes2net_windows_dropped_total", "nes2net_alerts_published_total",
                 "nes2net_redis_errors_total", "nes2net_window_latency_seconds"):
        assert name in text
    assert 'call_id' not in text
    assert (await asyncio.to_thread(get, "/nowhere"))[0] == 404


async def test_readyz_fails_without_redis(make_service, redis_server):
    svc = await make_service()
    redis_server.stop()
    try:
        def get():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{svc.port}/readyz", timeout=10)
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())
            return 200, None

        code, body = await asyncio.to_thread(get)
        assert code == 503 and body["checks"]["redis"] is False
    finally:
        redis_server.start()


@pytest.mark.both_loops
async def test_graceful_drain_publishes_summaries(make_service, redis_client):
    svc = await make_service()
    x = tone_bursts(30.0, 8000)
    task = asyncio.create_task(stream_samples(svc.url, x, 8000, call_id="draining",
                                              realtime=True, speed=2.0))
    await asyncio.sleep(4.0)
    await svc.drain()
    res = await task
    assert res.summary is not None, [e["type"] for e in res.events]
    assert res.summary["summary"]["end_reason"] == "shutdown"
    assert res.summary["summary"]["windows_scored"] >= 1
    alerts = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
    assert any(a["type"] == "summary" and a["call_id"] == "draining" for a in alerts)


def test_encode_samples_round_trip():
    from nes2net_stream.service.audio_decode import decode

    x = tone_bursts(0.5, 8000)
    for enc in ("pcm_s16le", "mulaw", "alaw"):
        y = decode(encode_samples(x, enc), enc, 1)[:, 0]
        assert np.max(np.abs(y - x)) < (1e-4 if enc == "pcm_s16le" else 0.02)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
async def test_listen_backlog_comes_from_config(make_service):
    """`[server] backlog`: a burst of calls waits in the accept queue, not for SYN retries."""
    svc = await make_service(server={"backlog": 7})
    out = (await asyncio.to_thread(subprocess.run, ["ss", "-ltnH", f"sport = :{svc.port}"],
                                   capture_output=True, text=True, check=True)).stdout.split()
    assert out[0] == "LISTEN" and out[2] == "7"  # Send-Q of a listener: its backlog
    assert Settings().server.backlog == 1024


async def with_control_midway(url: str, start: dict, audio: bytes, step: int, control: dict,
                              *, wait_s: float = 0.0) -> list[dict]:
    """Stream one call: half its audio, (a pause,) ``control``, the rest, stop; its events."""
    from websockets.asyncio.client import connect

    half = len(audio) // 2 // step * step
    async with connect(url) as ws:
        await ws.send(json.dumps(start))
        for i in range(0, half, step):
            await ws.send(audio[i:i + step])
        await asyncio.sleep(wait_s)
        await ws.send(json.dumps(control))
        for i in range(half, len(audio), step):
            await ws.send(audio[i:i + step])
        await ws.send(json.dumps({"type": "stop"}))
        return [json.loads(msg) async for msg in ws]


async def refused(url: str, control: dict) -> tuple[int | None, dict]:
    """Start a call, send one control message; the close code and the one error event."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": f"bad-{uuid.uuid4().hex[:8]}",
                                  "encoding": "mulaw", "sample_rate": 8000}))
        await ws.send(json.dumps(control))
        got = []
        with contextlib.suppress(ConnectionClosed):
            async for m in ws:
                got.append(json.loads(m))
    (error,) = [e for e in got if e["type"] == "error"]
    return ws.close_code, error


async def test_metadata_update_during_a_call(make_service, redis_client):
    """``{"type": "update"}`` merges into the call's metadata: later events carry the result
    (the platform learned the customer's account after the IVR); a bad update is refused."""

    svc = await make_service()
    audio = encode_samples(tone_bursts(12.0, 8000), "mulaw")
    # the first half's windows are scored before the update
    events = await with_control_midway(
        svc.url, {"type": "start", "call_id": "upd-1", "encoding": "mulaw", "sample_rate": 8000,
                  "metadata": {"ani": "+15551234567"}}, audio, 1600,
        {"type": "update", "metadata": {"account_id": "A-17", "ani": None}}, wait_s=1.0)
    windows = [e for e in events if e["type"] == "window"]
    assert windows[0]["metadata"] == {"ani": "+15551234567"}
    assert windows[-1]["metadata"] == {"account_id": "A-17"}
    (summary,) = [e for e in events if e["type"] == "summary"]
    assert summary["metadata"] == {"account_id": "A-17"}
    close_code, error = await refused(svc.url, {"type": "update",
                                                "metadata": ["not", "an", "object"]})
    assert close_code == 4400
    assert error["code"] == "bad_message" and "update" in error["message"]


async def test_a_party_that_leaves_is_summarised_then(make_service, redis_client):
    """``{"type": "channel_end"}``: the agent leaves a conference call that goes on; its
    summary comes then (before ``stop``), the caller's at the end; bad ones are refused."""

    svc = await make_service()
    x = tone_bursts(10.0, 8000)
    frames = encode_samples(np.stack([x, x[::-1].copy()], axis=1).reshape(-1), "mulaw")
    events = await with_control_midway(
        svc.url, {"type": "start", "call_id": "leave-1", "encoding": "mulaw",
                  "sample_rate": 8000, "channels": 2, "channel_roles": ["caller", "agent"],
                  "score_channels": ["caller", "agent"]}, frames, 3200,
        {"type": "channel_end", "channel": "agent", "detail": "left"})
    summaries = [e for e in events if e["type"] == "summary"]
    assert [s["channel"] for s in summaries] == ["agent", "caller"]
    agent, caller = (s["summary"] for s in summaries)
    assert agent["detail"] == "left" and agent["duration_s"] == pytest.approx(5.0, abs=0.03)
    assert caller["duration_s"] == pytest.approx(10.0, abs=0.03)
    assert max(e["window"]["end_s"] for e in events
               if e["type"] == "window" and e["channel"] == "agent") <= 5.0 + 1e-6
    for bad, message in (({"channel": "nobody"}, "one of the call's channels"),
                         ({"channel": "caller", "detail": "Left Early"}, "detail"),
                         ({"channel": "caller", "why": 1}, "unknown fields")):
        close_code, error = await refused(svc.url, {"type": "channel_end", **bad})
        assert close_code == 4400
        assert error["code"] == "bad_message" and message in error["message"]


async def test_the_client_ends_a_channel_at_its_time_in_the_audio(make_service):
    svc = await make_service()
    x = tone_bursts(8.0, 8000)
    res = await stream_samples(svc.url, np.stack([x, x], axis=1), 8000, call_id="leave-3",
                               encoding="mulaw", channel_roles=["caller", "agent"],
                               realtime=False, extra_start={"score_channels": ["caller", "agent"]},
                               channel_ends=[(3.0, "agent")])
    by = {role: s["summary"] for role, s in res.summaries.items()}
    assert res.summary["channel"] == "agent"  # the leaver's came first
    assert by["agent"]["duration_s"] == pytest.approx(3.0, abs=0.03)
    assert by["caller"]["duration_s"] == pytest.approx(8.0, abs=0.03)


async def test_the_client_sends_updates_at_their_time_in_the_audio(make_service):
    svc = await make_service()
    res = await stream_samples(svc.url, tone_bursts(12.0, 8000), 8000, call_id="upd-3",
                               encoding="mulaw", realtime=True, speed=4.0,
                               metadata={"ani": "+15551234567"},
                               updates=[(6.0, {"account_id": "A-17"}), (99.0, {"ani": None})])
    windows = res.of_type("window")
    assert windows[0]["metadata"] == {"ani": "+15551234567"}
    assert {"ani": "+15551234567", "account_id": "A-17"} in [w["metadata"] for w in windows]
    # the update after the audio's end still lands before the stop: the summary carries it
    assert res.summary["metadata"] == {"account_id": "A-17"}
