"""The HTTP app: pages, static files, auth, and the SSE event feed resuming after reconnects."""

import asyncio
import json

import aiohttp
import pytest
from helpers import tone_bursts

from nes2net_stream.client import stream_samples
from nes2net_stream.web.feeds import FeedRequestError, format_cursor, parse_cursor, parse_query

TOKEN = "dashboard-test-token-0123456789"


def base(svc) -> str:
    return f"http://127.0.0.1:{svc.http.port}"


async def read_sse(resp: aiohttp.ClientResponse, *, until, timeout_s: float = 20.0):
    """Parse SSE messages until ``until(messages)`` is true; returns [(id, event, data)]."""
    messages, current = [], {}

    async def pump():
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "data" in current:
                    messages.append((current.get("id"), current.get("event"),
                                     json.loads(current["data"])))
                    if until(messages):
                        return
                current.clear()
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = value

    await asyncio.wait_for(pump(), timeout_s)
    return messages


def events_of(messages, *types):
    return [(i, d) for i, e, d in messages if e in types]


async def test_feed_resumes_after_reconnect_without_duplicates_or_gaps(make_service,
                                                                      redis_client):
    svc = await make_service()
    x = tone_bursts(6.0, 8000)
    url = f"{base(svc)}/v1/events"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as resp:  # from now on
            assert resp.headers["Content-Type"] == "text/event-stream"
            await read_sse(resp, until=lambda m: any(e == "hello" for _, e, _ in m))
            first = await stream_samples(svc.url, x, 8000, call_id="feed-1", realtime=False)
            n_first = len(first.of_type("window")) + len(first.of_type("state")) + 1
            got = await read_sse(resp, until=lambda m: len(events_of(
                m, "window", "state", "summary")) >= n_first)
        seen = events_of(got, "window", "state", "summary")
        last_id = seen[-1][0]
        # while the dashboard is away, another call happens
        second = await stream_samples(svc.url, x, 8000, call_id="feed-2", realtime=False)
        n_second = len(second.of_type("window")) + len(second.of_type("state")) + 1
        await asyncio.sleep(0.5)
        async with s.get(url, headers={"Last-Event-ID": last_id}) as resp:
            again = await read_sse(resp, until=lambda m: len(events_of(
                m, "window", "state", "summary")) >= n_second)
    resumed = events_of(again, "window", "state", "summary")
    assert {d["call_id"] for _, d in seen} == {"feed-1"}
    assert {d["call_id"] for _, d in resumed} == {"feed-2"}
    ids = [d["event_id"] for _, d in seen + resumed]
    assert len(ids) == len(set(ids))  # nothing twice
    stored = [json.loads(f["event"])["event_id"] for key in ("nes2net:alerts", "nes2net:scores")
              for _, f in redis_client.xrange(key)]
    assert sorted(ids) == sorted(stored)  # nothing missed
    # SSE ids are "<alerts id>,<scores id>" and only move forward
    pairs = [tuple(int(p.split("-")[0]) for p in i.split(",")) for i, _ in seen + resumed]
    assert pairs == sorted(pairs)


async def test_feed_history_call_filter_and_active_calls(make_service):
    svc = await make_service()
    x = tone_bursts(7.0, 8000)  # windows enough for a state ([alerts] min_windows_for_state)
    await asyncio.gather(stream_samples(svc.url, x, 8000, call_id="hist-a", realtime=False),
                         stream_samples(svc.url, x, 8000, call_id="hist-b", realtime=False))
    await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base(svc)}/v1/events?history_s=300&streams=alerts"
                         "&call_id=hist-b") as resp:
            got = await read_sse(resp, until=lambda m: any(e == "summary" for _, e, _ in m))
        hello = next(d for _, e, d in got if e == "hello")
        assert hello["streams"] == ["alerts"] and hello["thresholds"]["spoof"] == 0.8
        alerts = events_of(got, "window", "state", "summary")
        assert {d["call_id"] for _, d in alerts} == {"hist-b"}
        assert {d["type"] for _, d in alerts} == {"state", "summary"}  # no scores stream
        assert all(i.endswith(",-") for i, _ in alerts)
        # a live call shows up in the "active" messages before it has any score
        ws_task = asyncio.create_task(stream_samples(svc.url, tone_bursts(4.0, 8000), 8000,
                                                     call_id="live-c", speed=1.0))
        await asyncio.sleep(0.3)
        async with s.get(f"{base(svc)}/v1/events?streams=alerts") as resp:
            got = await read_sse(resp, until=lambda m: any(
                e == "active" and d["calls"] for _, e, d in m))
        active = next(d for _, e, d in got if e == "active" and d["calls"])["calls"][0]
        assert active["call_id"] == "live-c" and active["source"]["kind"] == "websocket"
        async with s.get(f"{base(svc)}/v1/calls") as r:
            assert [c["call_id"] for c in (await r.json())["calls"]] == ["live-c"]
        await ws_task
        for bad in ("?streams=nope", "?history_s=-1", "?last_event_id=1-0"):
            async with s.get(f"{base(svc)}/v1/events{bad}") as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"


async def test_pages_static_files_and_auth(make_service):
    svc = await make_service(auth={"mode": "required", "tokens": [TOKEN]})
    async with aiohttp.ClientSession() as s:
        for path in ("/tryit", "/dashboard", "/v1/events", "/v1/calls", "/v1/webrtc/config"):
            async with s.get(base(svc) + path) as r:
                assert r.status == 401, path
                assert (await r.json())["error"]["code"] == "unauthorized"
        async with s.get(f"{base(svc)}/tryit?token={TOKEN}") as r:
            html = await r.text()
            assert r.status == 200 and "tryit.js" in html
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        async with s.get(f"{base(svc)}/dashboard",
                         headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and "dashboard.js" in await r.text()
        async with s.get(f"{base(svc)}/?token={TOKEN}", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == f"/dashboard?token={TOKEN}"
        for name, ctype in (("dashboard.js", "text/javascript"), ("style.css", "text/css")):
            async with s.get(f"{base(svc)}/static/{name}") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith(ctype)
        async with s.get(f"{base(svc)}/samples/synthetic_call.wav") as r:
            body = await r.read()
            assert r.status == 200 and body[:4] == b"RIFF" and body[8:12] == b"WAVE"
        for path in ("/static/..%2Fapp.py", "/static/app.py", "/samples/LICENSES.md"):
            async with s.get(base(svc) + path) as r:
                assert r.status == 404, path
        async with s.get(f"{base(svc)}/livez") as r:
            assert r.status == 200


async def test_drain_ends_open_feeds(make_service):
    svc = await make_service()
    async with aiohttp.ClientSession() as s, s.get(f"{base(svc)}/v1/events") as resp:
        await read_sse(resp, until=lambda m: any(e == "hello" for _, e, _ in m))
        await asyncio.wait_for(asyncio.gather(svc.drain(), resp.read()), 30)
    assert svc.http.feeds.open == 0


def test_cursor_round_trip_and_validation():
    assert parse_cursor("5-1,7-0", ("alerts", "scores")) == {"alerts": "5-1", "scores": "7-0"}
    assert parse_cursor("5-1,-", ("alerts",)) == {"alerts": "5-1"}
    assert format_cursor({"alerts": "5-1"}) == "5-1,-"
    for bad in ("5-1", "x,y", "5-1,7-0,9-9", "5,7"):
        with pytest.raises(FeedRequestError):
            parse_cursor(bad, ("alerts", "scores"))
    q = parse_query({"history_s": "60", "call_id": "c1"}, None)
    assert q.history_s == 60 and q.call_id == "c1" and q.cursor is None


async def test_http_listener_beyond_loopback_requires_the_token(make_service):
    # the WebSocket listener stays on loopback; the pages alone are exposed, which is enough
    # to require tokens everywhere
    svc = await make_service(http={"host": "0.0.0.0"}, auth={"tokens": [TOKEN]})
    assert svc.ctx.auth.required
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base(svc)}/dashboard") as r:
            assert r.status == 401
        async with s.get(f"{base(svc)}/dashboard?token={TOKEN}") as r:
            assert r.status == 200


def test_exposed_http_listener_without_tokens_fails_at_start():
    from types import SimpleNamespace

    from nes2net_stream.errors import ConfigError
    from nes2net_stream.service.auth import TokenAuth
    from nes2net_stream.settings import Settings
    from nes2net_stream.web.app import HttpApp

    settings = Settings.model_validate({"http": {"host": "0.0.0.0"}})
    service = SimpleNamespace(settings=settings, ctx=SimpleNamespace(auth=TokenAuth([], False)))
    with pytest.raises(ConfigError, match="authentication is required"):
        HttpApp._auth(service)
    settings.auth.mode = "off"  # an explicit choice on a trusted network
    assert HttpApp._auth(service).required is False
