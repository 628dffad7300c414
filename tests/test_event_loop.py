"""The service's event loop: uvloop by default where installed, asyncio's on request."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from helpers import tone_bursts

from nes2net_stream.client import stream_samples
from nes2net_stream.config import load_settings
from nes2net_stream.errors import ConfigError
from nes2net_stream.localstack import ServiceProcess
from nes2net_stream.service import event_loop


async def _name() -> str:
    return event_loop.loop_name()


def test_auto_prefers_uvloop_and_asyncio_is_available_on_request():
    import uvloop

    assert event_loop.loop_factory("auto") is uvloop.new_event_loop
    assert event_loop.run(_name(), "auto") == "uvloop"
    assert event_loop.run(_name(), "uvloop") == "uvloop"
    assert event_loop.run(_name(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_fails_naming_the_key(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert event_loop.run(_name(), "auto") == "asyncio"
    coro = _name()
    with pytest.raises(ConfigError, match=r"server\.event_loop: uvloop is not installed"):
        event_loop.run(coro, "uvloop")
    assert coro.cr_frame is None  # closed, not left un-awaited


def test_unknown_loop_kinds_are_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"server\.event_loop"):
        event_loop.loop_factory("tokio")
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    with pytest.raises(ConfigError, match=r"server\.event_loop"):
        load_settings(cfg, environ={"NES2NET_SERVER__EVENT_LOOP": "tokio"})
    cfg.write_text('[server]\nevent_loop = "asyncio"\n')
    assert load_settings(cfg, environ={}).server.event_loop == "asyncio"


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
async def test_serve_runs_calls_on_the_configured_loop(kind, small_bundle, redis_server,
                                                       redis_client, tmp_path):
    log = tmp_path / "log"
    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=log,
                         extra_env={"NES2NET_SERVER__EVENT_LOOP": kind,
                                    "NES2NET_HTTP__PORT": "0", "NES2NET_LOGGING__LEVEL": "info"})
    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        res = await stream_samples(svc.url, tone_bursts(6.0, 8000), 8000,
                                   call_id=f"loop-{kind}", realtime=False)
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
    assert code == 0
    assert res.summary is not None and res.summary["summary"]["windows_scored"] >= 1
    listening = [json.loads(line) for line in log.read_text().splitlines()
                 if '"service listening"' in line]
    assert [e["event_loop"] for e in listening] == [kind]
    summaries = [f for _, f in redis_client.xrange("nes2net:alerts")
                 if f["call_id"] == f"loop-{kind}" and f["type"] == "summary"]
    assert len(summaries) == 1
