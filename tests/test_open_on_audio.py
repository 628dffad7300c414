"""Channels opened at their first audio (``CallStart.open_on_audio``): a party who may never
be heard gets no state and no summary until it is, then a channel on the call's clock. And
channels ended before their call (``CallHandle.end_channel``): a party leaves a conference, its
summary is published once its last windows are scored, its later audio is ignored, the alert
journal owes it nothing more and the other channels go on."""

import asyncio

import numpy as np
import pytest
from helpers import tone_bursts

from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.service.alert_journal import describe, worker_dirs
from nes2net_stream.service.events import AudioChunk, CallEnd, CallStart, Source


def start(call_id: str, **kw) -> CallStart:
    return CallStart(call_id=call_id, encoding="pcm_s16le", sample_rate=8000,
                     channels=("caller", "agent", "third"),
                     score_channels=frozenset({"caller", "agent", "third"}),
                     source=Source("gateway", "test"), **kw)


def pcm(x: np.ndarray) -> bytes:
    return float_to_pcm16(x).tobytes()


async def feed(session, audio: dict[str, np.ndarray], seconds: float, *, gap_at: float = -1.0,
               gap_s: float = 0.0, third_from: float | None = None) -> None:
    """Per-channel 20 ms packets; ``third`` only from ``third_from`` seconds on."""
    step = 160
    for i in range(int(seconds * 8000) // step):
        t = i * step / 8000
        if gap_at >= 0 and abs(t - gap_at) < 1e-9:
            session.discontinuity(gap_s)
        for role, x in audio.items():
            if role == "third" and (third_from is None or t < third_from):
                continue
            offset = i * step - (int(third_from * 8000) if role == "third" and third_from else 0)
            session.feed(AudioChunk(pcm(x[offset:offset + step]), channel=role))
        if i % 50 == 0:
            await asyncio.sleep(0)


@pytest.fixture
def audio():
    return {role: tone_bursts(12.0, 8000, seed=k)
            for k, role in enumerate(("caller", "agent", "third"))}


async def test_a_party_never_heard_has_no_summary(make_service, audio):
    svc = await make_service()
    events = []
    session = svc.ctx.open_call(start("two-party", open_on_audio=frozenset({"third"})),
                                sink=events.append)
    assert session.scored_roles == ["caller", "agent", "third"]
    await feed(session, {k: audio[k] for k in ("caller", "agent")}, 6.0)
    summaries = await svc.ctx.end_call(session, CallEnd())
    assert sorted(s.channel for s in summaries) == ["agent", "caller"]
    assert all(e.channel != "third" for e in events)


async def test_a_late_party_is_scored_on_the_call_clock(make_service, redis_server, audio,
                                                        tmp_path):
    journal = tmp_path / "journal"
    svc = await make_service(redis={"alert_journal_dir": str(journal)})
    session = svc.ctx.open_call(start("late", open_on_audio=frozenset({"third"})))
    # 1 s of the provider's audio missing at 2 s; the third party speaks from 4 s
    await feed(session, audio, 9.0, gap_at=2.0, gap_s=1.0, third_from=4.0)
    await asyncio.sleep(0.2)
    (wdir,) = worker_dirs(journal).values()
    assert ["late", "third"] in describe(wdir)["open_calls"]  # a lost summary is owed now
    summaries = {s.channel: s.to_dict() for s in await svc.ctx.end_call(session, CallEnd())}
    assert set(summaries) == {"caller", "agent", "third"}
    third = summaries["third"]["summary"]
    # opened at 4 s of audio plus the 1 s gap; its own 5 s of audio after that
    assert third["duration_s"] == pytest.approx(10.0, abs=0.03)
    assert third["windows_scored"] >= 1
    assert summaries["caller"]["summary"]["duration_s"] == pytest.approx(10.0, abs=0.03)


async def test_interleaved_audio_opens_every_such_channel_at_once(make_service, audio):
    svc = await make_service()
    events = []
    session = svc.ctx.open_call(start("interleaved", open_on_audio=frozenset({"third"})),
                                sink=events.append)
    frames = np.stack([audio["caller"], audio["agent"], audio["third"]], axis=1)[:5 * 8000]
    for block in np.array_split(frames, 25):
        session.feed(AudioChunk(pcm(block.reshape(-1))))
        await asyncio.sleep(0)
    summaries = await svc.ctx.end_call(session, CallEnd())
    assert sorted(s.channel for s in summaries) == ["agent", "caller", "third"]
    assert {s.to_dict()["summary"]["duration_s"] for s in summaries} == {5.0}


async def test_a_party_that_leaves_gets_its_summary_then(make_service, redis_server, audio,
                                                         tmp_path):
    journal = tmp_path / "journal"
    svc = await make_service(redis={"alert_journal_dir": str(journal)})
    events = []
    session = svc.ctx.open_call(start("leaves"), sink=events.append)
    await feed(session, audio, 5.0, third_from=0.0)
    session.end_channel("third", "left")
    for _ in range(100):  # its last windows are scored, then its summary is out
        await asyncio.sleep(0.05)
        if any(e.type == "summary" for e in events):
            break
    (early,) = [e for e in events if e.type == "summary"]
    body = early.to_dict()
    assert early.channel == "third"
    assert body["summary"]["detail"] == "left" and body["summary"]["end_reason"] == "stop"
    assert body["summary"]["duration_s"] == pytest.approx(5.0, abs=0.03)
    assert body["summary"]["windows_scored"] >= 1
    # every window of the channel came before its summary
    third = [e.type for e in events if e.channel == "third"]
    assert third[-1] == "summary" and third.count("summary") == 1
    (wdir,) = worker_dirs(journal).values()
    assert ["leaves", "third"] not in describe(wdir)["open_calls"]  # nothing owed for it
    assert ["leaves", "caller"] in describe(wdir)["open_calls"]
    # its later audio is ignored; the others go on; a second end is a no-op
    await feed(session, audio, 3.0, third_from=0.0)
    session.end_channel("third", "again")
    session.end_channel("nobody")
    summaries = {s.channel: s.to_dict()["summary"] for s in
                 await svc.ctx.end_call(session, CallEnd())}
    assert set(summaries) == {"caller", "agent"}
    assert summaries["caller"]["duration_s"] == pytest.approx(8.0, abs=0.03)
    assert [e.channel for e in events if e.type == "summary"].count("third") == 1


async def test_a_party_never_heard_that_leaves_gets_no_summary(make_service, audio):
    svc = await make_service()
    events = []
    session = svc.ctx.open_call(start("never", open_on_audio=frozenset({"third"})),
                                sink=events.append)
    await feed(session, {k: audio[k] for k in ("caller", "agent")}, 3.0)
    session.end_channel("third", "left")
    await feed(session, audio, 3.0, third_from=0.0)  # not reopened by later audio
    summaries = await svc.ctx.end_call(session, CallEnd())
    assert sorted(s.channel for s in summaries) == ["agent", "caller"]
    assert all(e.channel != "third" for e in events)


async def test_a_call_ended_right_after_a_party_left_sends_each_summary_once(make_service,
                                                                            audio):
    svc = await make_service()
    events = []
    session = svc.ctx.open_call(start("both"), sink=events.append)
    await feed(session, audio, 4.0, third_from=0.0)
    session.end_channel("agent", "left")  # its summary still waits for its last windows...
    summaries = await svc.ctx.end_call(session, CallEnd())  # ...when the call ends
    assert sorted(s.channel for s in summaries) == ["caller", "third"]
    sent = sorted(e.channel for e in events if e.type == "summary")
    assert sent == ["agent", "caller", "third"]
    agent = next(e for e in events if e.type == "summary" and e.channel == "agent")
    assert agent.to_dict()["summary"]["detail"] == "left"


async def test_the_call_clock_goes_on_after_the_first_party_left(make_service, audio):
    svc = await make_service()
    events = []
    session = svc.ctx.open_call(start("first-left", open_on_audio=frozenset({"third"})),
                                sink=events.append)
    await feed(session, {k: audio[k] for k in ("caller", "agent")}, 3.0)
    session.end_channel("caller", "left")  # the first channel's audio stops at 3 s
    # the agent goes on to 7 s; a third party speaks from 5 s
    await feed(session, {k: audio[k] for k in ("agent", "third")}, 4.0, third_from=2.0)
    assert session.audio_seconds == pytest.approx(7.0, abs=0.03)
    summaries = {s.channel: s.to_dict()["summary"] for s in
                 await svc.ctx.end_call(session, CallEnd())}
    assert set(summaries) == {"agent", "third"}
    # opened at 5 s on the call's clock, not where the first channel stopped
    assert summaries["third"]["duration_s"] == pytest.approx(7.0, abs=0.03)
    assert summaries["agent"]["duration_s"] == pytest.approx(7.0, abs=0.03)
    third = [e for e in events if e.channel == "third" and e.type == "window"]
    assert third and min(e.to_dict()["window"]["start_s"] for e in third) >= 5.0 - 0.03


async def test_every_channel_counts_towards_the_call_clock(make_service, audio):
    """Audio of one channel only (not the first) still advances the clock the limits read."""
    svc = await make_service()
    session = svc.ctx.open_call(start("agent-only"))
    await feed(session, {"agent": audio["agent"]}, 2.0)
    assert session.audio_seconds == pytest.approx(2.0, abs=0.03)
    await feed(session, audio, 1.0, third_from=0.0)  # channels together: the furthest one
    assert session.audio_seconds == pytest.approx(3.0, abs=0.03)
    await svc.ctx.end_call(session, CallEnd())


async def test_the_call_ended_log_counts_the_parties_who_left(make_service, audio):
    from structlog.testing import capture_logs

    svc = await make_service()
    session = svc.ctx.open_call(start("log-left"))
    await feed(session, audio, 5.0, third_from=0.0)
    session.end_channel("third", "left")
    with capture_logs() as logs:
        summaries = {s.channel: s.to_dict()["summary"] for s in
                     await svc.ctx.end_call(session, CallEnd())}
    (ended,) = [e for e in logs if e["event"] == "call ended"]
    assert "third" in ended["states"] and "third" not in summaries
    assert ended["windows"] > sum(s["windows_scored"] for s in summaries.values())
