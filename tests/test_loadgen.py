"""The lean load generator against real WebSocket servers on loopback."""

from __future__ import annotations

import asyncio
import json
import os
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve

from nes2net_stream.bench.loadgen import CallPlan, LoadGenerator
from nes2net_stream.client import start_message


def plan(call_id: str, seconds: float = 1.0, packet_s: float = 0.1, rate: int = 8000,
         delay_s: float = 0.0) -> CallPlan:
    payload = os.urandom(int(seconds * rate))
    packet = int(packet_s * rate)
    return CallPlan(call_id, start_message(call_id, "mulaw", rate), payload, packet_bytes=packet,
                    packet_s=packet / rate, audio_s=seconds, delay_s=delay_s)


class Recorder:
    """A server that keeps every message per call and answers ``stop`` with a summary."""

    def __init__(self, *, fail_after: int | None = None):
        self.messages: dict[str, list[bytes | str]] = {}
        self.fail_after = fail_after

    async def handler(self, conn: ServerConnection) -> None:
        start = json.loads(await conn.recv())
        got = self.messages.setdefault(start["call_id"], [start])
        await conn.send(json.dumps({"type": "state", "call_id": start["call_id"]}))
        async for msg in conn:
            got.append(msg)
            if self.fail_after is not None and len(got) > self.fail_after:
                await conn.send(json.dumps({"type": "error", "code": "rate_limited"}))
                await conn.close(1008, "rate_limited")
                return
            if isinstance(msg, str) and json.loads(msg)["type"] == "stop":
                # a long text message in fragments, as a server may send it
                summary = json.dumps({"type": "summary", "call_id": start["call_id"],
                                      "pad": "x" * 5000})
                await conn.send([summary[:1000], summary[1000:3000], summary[3000:]])
                await conn.close()
                return


async def test_calls_arrive_whole_in_order_at_real_time_pace():
    rec = Recorder()
    # pings every 0.2 s: the generator must answer them or the server drops the call
    async with serve(rec.handler, "127.0.0.1", 0, ping_interval=0.2, ping_timeout=0.5) as srv:
        port = srv.sockets[0].getsockname()[1]
        plans = [plan(f"c{i}", seconds=1.5, delay_s=0.05 * i) for i in range(5)]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        outcomes = await LoadGenerator(f"ws://127.0.0.1:{port}/v1/stream").run(plans)
        elapsed = loop.time() - t0
    for p, out in zip(plans, outcomes, strict=True):
        assert out.failure is None and out.summary is not None, out
        assert out.summary["call_id"] == p.call_id and len(out.summary["pad"]) == 5000
        assert out.events == 2 and out.close_code == 1000
        got = rec.messages[p.call_id]
        assert got[0] == p.start
        audio = [m for m in got[1:] if isinstance(m, bytes)]
        assert b"".join(audio) == p.payload and len(audio) == p.packets == 15
        assert json.loads(got[-1]) == {"type": "stop"}
        # one send-log entry per packet: audio seconds up to the call's length, times rising
        assert [s for s, _ in p.send_log] == [min((k + 1) * 0.1, 1.5) for k in range(15)]
        walls = [w for _, w in p.send_log]
        assert walls == sorted(walls)
        assert walls[-1] - walls[0] >= 1.4 - 0.01  # paced: 14 packet intervals, not a burst
    assert elapsed >= 1.4


async def test_a_call_ended_by_the_server_stops_sending_and_keeps_its_error():
    rec = Recorder(fail_after=3)
    async with serve(rec.handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        ok_rec_plan = plan("short", seconds=1.0)
        outcomes = await LoadGenerator(f"ws://127.0.0.1:{port}/v1/stream").run([ok_rec_plan])
    (out,) = outcomes
    assert out.summary is None and out.close_code == 1008
    assert out.errors == [{"type": "error", "code": "rate_limited"}]
    assert len(rec.messages["short"]) == 4  # start + 3 packets; the rest was not sent
    assert len(ok_rec_plan.send_log) < ok_rec_plan.packets


async def test_refused_handshakes_and_closed_ports_are_outcomes_not_exceptions():
    async def reject(conn: ServerConnection, request):  # noqa: ANN001
        return conn.respond(HTTPStatus.UNAUTHORIZED, "token required\n")

    rec = Recorder()
    async with serve(rec.handler, "127.0.0.1", 0, process_request=reject) as srv:
        port = srv.sockets[0].getsockname()[1]
        (out,) = await LoadGenerator(f"ws://127.0.0.1:{port}/v1/stream").run([plan("no")])
    assert out.summary is None and "401" in (out.failure or "")
    # the server is gone now: connection refused
    (out,) = await LoadGenerator(f"ws://127.0.0.1:{port}/v1/stream",
                                 open_timeout=5).run([plan("gone")])
    assert out.summary is None and out.failure is not None
    assert rec.messages == {}


async def test_twilio_calls_carry_the_providers_messages_in_order():
    """A Twilio Media Streams call as Twilio sends it: connected, start, media..., stop."""
    import base64

    from nes2net_stream.bench.provider_calls import twilio_plan

    got: list[dict] = []

    async def handler(conn: ServerConnection) -> None:
        async for msg in conn:
            got.append(json.loads(msg))
            if got[-1]["event"] == "stop":
                await conn.close()
                return

    audio = os.urandom(8000)  # 1 s of 8 kHz μ-law
    p = twilio_plan("CA-load-1", audio, rate=8000, packet=160, delay_s=0.0)
    async with serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        (out,) = await LoadGenerator(f"ws://127.0.0.1:{port}/v1/gateways/twilio").run([p])
    assert out.failure is None and out.close_code == 1000
    assert [m["event"] for m in got] == ["connected", "start"] + ["media"] * 50 + ["stop"]
    sid = got[1]["start"]["streamSid"]
    assert got[1]["start"]["callSid"] == "CA-load-1" and got[1]["streamSid"] == sid
    assert got[1]["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                              "channels": 1}
    media = got[2:-1]
    assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media) == audio
    assert [int(m["sequenceNumber"]) for m in got[1:]] == list(range(2, 54))
    assert [int(m["media"]["timestamp"]) for m in media] == [20 * k for k in range(50)]
    assert {m["streamSid"] for m in media} == {sid} and {m["media"]["track"] for m in media} == {
        "inbound"}
