"""With an alert journal, alerts survive a service stopped or killed while Redis is down."""

import asyncio
import contextlib
import json
import os
import signal

import pytest
from helpers import tone_bursts
from servers import RedisServer

from nes2net_stream.client import stream_samples
from nes2net_stream.config import load_settings
from nes2net_stream.errors import ConfigError
from nes2net_stream.localstack import ServiceProcess
from nes2net_stream.service.alert_journal import AlertJournal
from nes2net_stream.service.server import Service


def _settings(small_bundle, redis_url, journal, **redis):
    return load_settings(None, environ={}, overrides={
        "model": {"path": str(small_bundle)}, "server": {"port": 0, "drain_timeout_s": 2.0},
        "http": {"port": 0},
        "redis": {"url": redis_url, "alert_journal_dir": str(journal), **redis}})


def _alerts(res):
    return [e["event_id"] for e in res.events if e["type"] in ("state", "summary")]


async def _flushed(svc: Service) -> None:
    for _ in range(200):
        if svc.ctx.publisher.buffered == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the publisher did not flush")


@pytest.mark.both_loops
async def test_alerts_of_a_stop_during_an_outage_are_replayed_by_the_next_start(
        small_bundle, tmp_path):
    redis = RedisServer(tmp_path / "redis")           # not started: Redis is down
    journal = tmp_path / "journal"
    svc = Service(_settings(small_bundle, redis.url, journal))
    await svc.start()
    res = await stream_samples(f"ws://127.0.0.1:{svc.port}/v1/stream", tone_bursts(8.0, 8000),
                               8000, call_id="outage", realtime=False)
    await svc.drain()                                 # the flush times out: Redis is down
    sent = _alerts(res)
    assert res.summary is not None and len(sent) >= 2
    assert list((journal / "w0").glob("*.jsonl"))    # kept for the next start

    redis.start()
    try:
        svc2 = Service(_settings(small_bundle, redis.url, journal))
        await svc2.start()
        await _flushed(svc2)
        client = redis.client()
        stored = [f["event_id"] for _, f in client.xrange("nes2net:alerts")]
        assert stored == sent                         # every alert, in order, same ids
        assert client.xlen("nes2net:scores") == 0     # scores are not journaled
        assert client.hget("nes2net:call:outage", "ended") == "1"
        metrics = svc2.ctx.metrics.render().decode()
        assert f"nes2net_alerts_replayed_total {float(len(sent))}" in metrics
        await svc2.drain()
    finally:
        redis.stop()
    assert list((journal / "w0").glob("*.jsonl")) == []  # all delivered: nothing left


async def test_a_failing_journal_keeps_alerts_in_memory(small_bundle, redis_server,
                                                        redis_client, tmp_path):
    svc = Service(_settings(small_bundle, redis_server.url, tmp_path / "journal"))
    await svc.start()

    def broken(doc, **_kw):
        raise OSError(28, "No space left on device")

    svc.ctx.publisher.keeper.journal.append = broken
    try:
        res = await stream_samples(f"ws://127.0.0.1:{svc.port}/v1/stream",
                                   tone_bursts(6.0, 8000), 8000, call_id="disk-full",
                                   realtime=False)
        await _flushed(svc)
    finally:
        await svc.drain()
    stored = [f["event_id"] for _, f in redis_client.xrange("nes2net:alerts")]
    assert stored == _alerts(res) and len(stored) >= 2  # a state change and the summary
    assert "nes2net_alert_journal_errors_total" in svc.ctx.metrics.render().decode()
    assert svc.ctx.metrics.alert_journal_errors._value.get() == len(stored)


async def test_an_unusable_journal_directory_fails_the_start_naming_the_key(
        small_bundle, redis_server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    svc = Service(_settings(small_bundle, redis_server.url, blocker))
    with pytest.raises(ConfigError, match="redis.alert_journal_dir"):
        await svc.start()
    svc.ctx.engine.stop(drain=False)


async def test_worker_zero_replays_journals_of_indices_no_longer_configured(
        small_bundle, redis_server, redis_client, tmp_path):
    journal = tmp_path / "journal"
    docs = []
    for w, n in (("w3", 2), ("w0", 1)):              # a pool of 4 left these; now 1 process
        j = AlertJournal(journal / w)
        j.open()
        for i in range(n):
            ev = {"type": "summary", "event_id": f"{w}-{i}", "call_id": f"{w}-call-{i}",
                  "ts": "2026-11-27T07:00:00Z", "model_id": "m", "state": "spoof",
                  "source": {"gateway": "generic"}}
            docs.append(ev["event_id"])
            j.append(json.dumps(ev))
        assert j.close() is False
    svc = Service(_settings(small_bundle, redis_server.url, journal))
    await svc.start()
    await _flushed(svc)
    await svc.drain()
    stored = [f["event_id"] for _, f in redis_client.xrange("nes2net:alerts")]
    assert stored == ["w0-0", "w3-0", "w3-1"]         # its own first, then the orphans'
    assert sorted(stored) == sorted(docs)
    assert list(journal.rglob("*.jsonl")) == []


def _pending(directory) -> int:
    j = AlertJournal(directory)
    n = len(j.open())
    j.close()
    return n


def _wait_for_log(path, text: str, count: int, timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged {count} times")


async def test_killed_service_processes_lose_no_alert(small_bundle, tmp_path):
    """Two ingest workers, Redis down, everything SIGKILLed; one worker replays both."""
    from test_service_workers import _worker_pids

    redis = RedisServer(tmp_path / "redis")
    journal = tmp_path / "journal"
    env = {"NES2NET_HTTP__PORT": "0", "NES2NET_LOGGING__LEVEL": "info",
           "NES2NET_REDIS__ALERT_JOURNAL_DIR": str(journal)}
    first = ServiceProcess(redis.url, model=str(small_bundle), log_path=tmp_path / "log1",
                           extra_env={**env, "NES2NET_SERVER__WORKERS": "2"})
    try:
        await asyncio.to_thread(_wait_for_log, tmp_path / "log1", '"service listening"', 2, 120)
        results = await asyncio.gather(*[
            stream_samples(first.url, tone_bursts(6.0, 8000, seed=i), 8000, call_id=f"k-{i}",
                           realtime=False) for i in range(8)])
        workers = _worker_pids(first.proc.pid)
        for pid in [*workers, first.proc.pid]:       # a crash no handler can catch
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        first.proc.wait(30)
    finally:
        first.stop(10)
    sent = {r.summary["call_id"]: _alerts(r) for r in results}
    assert all(r.summary is not None for r in results)
    pending = {d.name: _pending(d) for d in journal.glob("w*")}
    assert set(pending) == {"w0", "w1"}               # each worker kept its own journal
    assert sum(pending.values()) == sum(map(len, sent.values()))

    redis.start()
    env.pop("NES2NET_REDIS__ALERT_JOURNAL_DIR")       # the same, as a flag of `serve`
    second = ServiceProcess(redis.url, model=str(small_bundle), log_path=tmp_path / "log2",
                            extra_env=env, args=["--alert-journal", str(journal)])
    # one process now: it takes over w1
    try:
        await asyncio.to_thread(second.wait_ready, 120)
        client = redis.client()
        for _ in range(100):
            stored = [json.loads(f["event"]) for _, f in client.xrange("nes2net:alerts")]
            if len(stored) >= sum(map(len, sent.values())):
                break
            await asyncio.sleep(0.1)
        code = await asyncio.to_thread(second.stop, 60)
    finally:
        redis.stop()
    assert code == 0
    by_call: dict[str, list[str]] = {}
    for ev in stored:
        by_call.setdefault(ev["call_id"], []).append(ev["event_id"])
    assert by_call == sent                            # every alert once, in order per call
    assert [p.name for p in journal.rglob("*.jsonl")] == []
    assert '"replaying alerts from the alert journal"' in (tmp_path / "log2").read_text()


async def test_a_journal_entry_that_is_not_an_event_does_not_stop_the_start(
        small_bundle, redis_server, redis_client, tmp_path):
    journal = tmp_path / "journal"
    j = AlertJournal(journal / "w0")
    j.open()
    j.append("not an event")
    j.append(json.dumps({"type": "state", "event_id": "good", "call_id": "c", "ts": "t",
                         "model_id": "m", "state": "spoof", "source": {"gateway": "generic"}}))
    j.close()
    svc = Service(_settings(small_bundle, redis_server.url, journal))
    await svc.start()
    await _flushed(svc)
    await svc.drain()
    assert [f["event_id"] for _, f in redis_client.xrange("nes2net:alerts")] == ["good"]
    assert list(journal.rglob("*.jsonl")) == []


async def test_calls_in_progress_when_the_process_is_killed_get_a_lost_summary(
        small_bundle, redis_server, redis_client, tmp_path):
    journal = tmp_path / "journal"
    env = {"NES2NET_HTTP__PORT": "0", "NES2NET_LOGGING__LEVEL": "info"}
    args = ["--alert-journal", str(journal)]
    first = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=tmp_path / "log1",
                           extra_env=env, args=args)
    calls = []
    try:
        await asyncio.to_thread(first.wait_ready, 120)
        # one call ends normally, three are streaming when the process dies
        done = await stream_samples(first.url, tone_bursts(5.0, 8000), 8000, call_id="ended",
                                    realtime=False)
        calls = [asyncio.ensure_future(stream_samples(
            first.url, tone_bursts(30.0, 8000, seed=i), 8000, call_id=f"live-{i}",
            realtime=True, speed=2.0)) for i in range(3)]
        # and one so young (a tenth of real time) that it has no window, hence no state
        calls.append(asyncio.ensure_future(stream_samples(
            first.url, tone_bursts(30.0, 8000, seed=9), 8000, call_id="young", realtime=True,
            speed=0.1)))
        states: dict[str, dict] = {}
        for _ in range(300):                          # each live call has a state by now
            for _, f in redis_client.xrange("nes2net:alerts"):
                ev = json.loads(f["event"])
                if ev["type"] == "state":
                    states[ev["call_id"]] = ev
            if all(f"live-{i}" in states for i in range(3)):
                break
            await asyncio.sleep(0.1)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(30)
    finally:
        first.stop(10)
        await asyncio.gather(*calls, return_exceptions=True)
    assert done.summary is not None

    second = ServiceProcess(redis_server.url, model=str(small_bundle),
                            log_path=tmp_path / "log2", extra_env=env, args=args)
    try:
        await asyncio.to_thread(second.wait_ready, 120)
        for _ in range(100):
            summaries = {json.loads(f["event"])["call_id"]: json.loads(f["event"])
                         for _, f in redis_client.xrange("nes2net:alerts")
                         if f["type"] == "summary"}
            if len(summaries) == 5:
                break
            await asyncio.sleep(0.1)
        code = await asyncio.to_thread(second.stop, 60)
    finally:
        second.stop(10)
    assert code == 0
    assert summaries["ended"]["summary"]["end_reason"] == "stop"   # not summarised twice
    for i in range(3):
        s, last = summaries[f"live-{i}"], states[f"live-{i}"]
        assert s["summary"]["end_reason"] == "lost" and s["degraded"] == "process_lost"
        # the last state this call published (later ones died with the process)
        published = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")
                     if f["type"] == "state" and f["call_id"] == f"live-{i}"]
        assert s["state"] == published[-1]["state"] == s["summary"]["final_state"]
        assert s["summary"]["windows_scored"] >= last["running"]["windows"]
        assert redis_client.hget(f"nes2net:call:live-{i}", "ended") == "1"
    young = summaries["young"]  # journaled when it started: summarised although stateless
    assert young["summary"]["end_reason"] == "lost" and young["degraded"] == "process_lost"
    assert young["state"] is None and young["summary"]["final_state"] is None
    assert young["summary"]["windows_scored"] == 0
    assert list(journal.rglob("*.jsonl")) == []
    assert '"call lost with an earlier process; its summary is published"' in \
        (tmp_path / "log2").read_text()


async def test_a_killed_ingest_workers_replacement_summarises_its_lost_calls(
        small_bundle, redis_server, redis_client, tmp_path):
    """One of two ingest workers SIGKILLed mid-call: the scorer restarts it on the same index,
    which reads that index's journal and publishes a ``lost`` summary for each of its calls."""
    from test_service_workers import _wait_listening, _worker_pids

    log = tmp_path / "log"
    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=log,
                         extra_env={"NES2NET_SERVER__WORKERS": "2", "NES2NET_HTTP__PORT": "0",
                                    "NES2NET_LOGGING__LEVEL": "info"},
                         args=["--alert-journal", str(tmp_path / "journal")])
    calls = []
    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        await asyncio.to_thread(_wait_listening, log, {0, 1}, 60)
        victim = _worker_pids(svc.proc.pid)[0]
        calls = [asyncio.ensure_future(stream_samples(
            svc.url, tone_bursts(30.0, 8000, seed=i), 8000, call_id=f"w-{i}", realtime=True,
            speed=2.0)) for i in range(8)]
        states: set[str] = set()
        for _ in range(300):                          # every call has published a state
            states = {f["call_id"] for _, f in redis_client.xrange("nes2net:alerts")
                      if f["type"] == "state"}
            if len(states) == 8:
                break
            await asyncio.sleep(0.1)
        assert len(states) == 8
        os.kill(victim, signal.SIGKILL)
        results = await asyncio.gather(*calls, return_exceptions=True)
        summaries: dict[str, dict] = {}
        for _ in range(200):                          # the replacement's lost summaries
            summaries = {f["call_id"]: json.loads(f["event"])
                         for _, f in redis_client.xrange("nes2net:alerts")
                         if f["type"] == "summary"}
            if len(summaries) == 8:
                break
            await asyncio.sleep(0.1)
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
        await asyncio.gather(*calls, return_exceptions=True)
    assert code == 0
    every = [f["call_id"] for _, f in redis_client.xrange("nes2net:alerts")
             if f["type"] == "summary"]
    assert sorted(every) == sorted(f"w-{i}" for i in range(8))  # every call summarised, once
    lost = {c for c, s in summaries.items() if s["summary"]["end_reason"] == "lost"}
    cut = {f"w-{i}" for i, r in enumerate(results)
           if isinstance(r, BaseException) or r.summary is None}
    assert lost == cut and lost                        # exactly the killed worker's calls
    assert all(summaries[c]["degraded"] == "process_lost" for c in lost)
    assert '"call lost with an earlier process; its summary is published"' in log.read_text()
