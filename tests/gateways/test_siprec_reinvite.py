"""SIPREC sessions changed mid-call by a re-INVITE: transfers, added and removed streams, a
media sender that moves (real UDP sockets, real Redis)."""

import asyncio
import json

import pytest
from gwsupport import summaries, window_scores
from nes2net_gateways.sip_sdp import parse_sdp
from siprec_client import (
    RtpSender,
    SiprecClient,
    new_dialog,
    real_speech,
    rs_metadata,
    rtp_packets,
    sdp_offer,
    send_rtp,
    siprec_service,
)
from structlog.testing import capture_logs

from nes2net_stream.client import encode_samples
from nes2net_stream.service import alert_journal
from nes2net_stream.service.alert_journal import worker_dirs


async def test_a_transfer_in_a_reinvite_changes_the_participants_of_later_events(
        make_service, redis_client, tmp_path):
    """A partial metadata update (RFC 7865 §6) moves the agent's stream to a new participant:
    the windows scored after it, and the summary, name the new agent; the caller stays. The
    alert journal learns it too (a process dying now owes a summary naming the new agent)."""
    svc = await siprec_service(make_service, redis={"alert_journal_dir": str(tmp_path)})
    d = new_dialog()
    audio = encode_samples(real_speech(seconds=12.0), "mulaw")
    packets = rtp_packets(audio)
    half = len(packets) // 2
    transfer = "\r\n".join([
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<recording xmlns='urn:ietf:params:xml:ns:recording:1'>",
        "<datamode>partial</datamode>",
        "<participant participant_id=\"P2\"><nameID aor=\"sip:+18005550199@pbx.example\"/>"
        "</participant>",
        "<participantstreamassoc participant_id=\"P1\"></participantstreamassoc>",
        "<participantstreamassoc participant_id=\"P2\"><send>ST1</send>"
        "</participantstreamassoc>",
        "</recording>"])
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(d)).status == 200
        await send_rtp(d.ports[0], packets[:half])
        await asyncio.sleep(0.5)  # the first half's windows are scored before the transfer
        d.cseq += 1
        with capture_logs() as logs:
            src.send(src.invite_text(d, sdp=sdp_offer(), metadata=transfer))
            assert (await src.final(d)).status == 200
        src.send(src.request("ACK", d))
        assert any(e["event"] == "call metadata updated" for e in logs)
        (journal,) = worker_dirs(tmp_path).values()
        (open_call,) = alert_journal._read(journal).open_calls.values()
        assert json.loads(open_call)["metadata"]["dnis"] == "+18005550199"
        await send_rtp(d.ports[0], packets[half:])
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["metadata"]["dnis"] == "+18005550199" and s["metadata"]["ani"] == "+15551230001"
    assert s["metadata"]["custom"]["participants"] == {
        "caller": "sip:+15551230001@carrier.example", "agent": "sip:+18005550199@pbx.example"}
    await window_scores(redis_client, d.call_id)  # every window is in Redis
    windows = sorted((json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:scores")
                      if json.loads(f["event"])["call_id"] == d.call_id),
                     key=lambda w: w["window"]["index"])
    dnis = [w["metadata"]["dnis"] for w in windows]
    assert dnis[0] == "+18005550100" and dnis[-1] == "+18005550199"
    assert dnis == sorted(dnis)  # one switch, from the old agent to the new


async def test_a_stream_added_by_a_reinvite_is_scored_on_a_spare_channel(make_service,
                                                                        redis_client):
    """A third participant joins (a conference): the re-INVITE adds a stream, answered with a
    port of its own; it is scored as ``agent2`` from its first packet, on the call's clock,
    and the metadata names it. A stream added in another codec stays rejected (port 0)."""
    svc = await siprec_service(make_service, score_agent=True)
    d = new_dialog()
    packets = rtp_packets(encode_samples(real_speech(seconds=9.0), "mulaw"))
    third = rtp_packets(encode_samples(real_speech("synthetic_call.wav", 5.0), "mulaw"))
    labels = ("1", "2", "3")
    aors = ("sip:+15551230001@carrier.example", "sip:+18005550100@pbx.example",
            "sip:+18005550177@pbx.example")
    pcma_only = ("m=audio 49180 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=label:4\r\n"
                 "a=sendonly\r\n")
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(d)).status == 200
        assert len(d.ports) == 2
        await asyncio.gather(*(send_rtp(p, packets[:200]) for p in d.ports))  # 4 s each
        await asyncio.sleep(0.2)
        d.cseq += 1
        src.send(src.invite_text(d, sdp=sdp_offer(labels=labels) + pcma_only,
                                 metadata=rs_metadata(labels, aors)))
        resp = await src.final(d)
        assert resp.status == 200
        ports = [m.port for m in parse_sdp(resp.body.decode()).media]
        assert ports[:2] == d.ports and ports[2] > 0 and ports[3] == 0
        src.send(src.request("ACK", d))
        await asyncio.gather(*(send_rtp(p, packets[200:]) for p in ports[:2]),
                             send_rtp(ports[2], third))
        await asyncio.sleep(0.3)
        await src.bye(d)
    found = await summaries(redis_client, d.call_id, n=3)
    assert sorted(s["channel"] for s in found) == ["agent", "agent2", "caller"]
    added = next(s for s in found if s["channel"] == "agent2")
    assert added["metadata"]["custom"]["participants"]["agent2"] == aors[2]
    assert added["metadata"]["custom"]["labels"]["agent2"] == "3"
    assert added["summary"]["windows_scored"] >= 1
    await window_scores(redis_client, d.call_id, channel="agent2")
    starts = [w["window"]["start_s"] for w in (json.loads(f["event"]) for _, f in
                                               redis_client.xrange("nes2net:scores"))
              if w["call_id"] == d.call_id and w["channel"] == "agent2"]
    assert starts and min(starts) >= 4.0 - 0.05  # its audio began 4 s into the call


async def test_a_stream_removed_by_a_reinvite_is_answered_with_port_0_and_its_slot_reused(
        make_service, redis_client):
    """A conference participant leaves: the re-INVITE sets its m= line's port to 0, which the
    answer must repeat (RFC 3264 §8.2); its port closes and its channel's summary is published
    then. A later re-INVITE reusing the slot for a new participant gets a new port and channel."""
    svc = await siprec_service(make_service, score_agent=True)
    d = new_dialog()
    packets = rtp_packets(encode_samples(real_speech(seconds=9.0), "mulaw"))
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(d)).status == 200
        first = list(d.ports)
        await asyncio.gather(*(send_rtp(p, packets[:200]) for p in first))  # 4 s each
        await asyncio.sleep(0.2)
        d.cseq += 1
        with capture_logs() as logs:
            src.send(src.invite_text(d, sdp=sdp_offer(ports=(49170, 0)),
                                     metadata=rs_metadata()))
            left = await src.final(d)
        assert left.status == 200
        assert [m.port for m in parse_sdp(left.body.decode()).media] == [first[0], 0]
        assert any(e["event"] == "stream removed from the recording" and e["channel"] == "agent"
                   for e in logs)
        src.send(src.request("ACK", d))
        (gone,) = await summaries(redis_client, d.call_id)  # the leaver's verdict, right away
        assert gone["channel"] == "agent" and gone["summary"]["detail"] == "stream_removed"
        assert gone["summary"]["duration_s"] == pytest.approx(4.0, abs=0.05)
        await send_rtp(first[0], packets[200:300])
        await asyncio.sleep(0.2)  # (all of them, before the re-INVITE is read)
        d.cseq += 1  # the slot carries a new participant's stream
        src.send(src.invite_text(d, sdp=sdp_offer(labels=("1", "5"), ports=(49170, 49190)),
                                 metadata=rs_metadata(("1", "5"))))
        joined = await src.final(d)
        assert joined.status == 200
        ports = [m.port for m in parse_sdp(joined.body.decode()).media]
        assert ports[0] == first[0] and ports[1] > 0 and ports[1] != first[1]
        src.send(src.request("ACK", d))
        await asyncio.gather(send_rtp(ports[0], packets[300:]), send_rtp(ports[1], packets[300:]))
        await asyncio.sleep(0.3)
        await src.bye(d)
    found = await summaries(redis_client, d.call_id, n=3)
    assert sorted(s["channel"] for s in found) == ["agent", "agent2", "caller"]
    by = {s["channel"]: s["summary"] for s in found}
    assert by["caller"]["duration_s"] == pytest.approx(9.0, abs=0.05)
    assert by["agent"]["duration_s"] == pytest.approx(4.0, abs=0.05)  # heard until it left
    assert by["agent2"]["windows_scored"] >= 1


async def test_a_reinvite_can_move_the_media_sender(make_service, redis_client):
    """An SBC pair fails over: the re-INVITE names a new media address, accepted from then on
    (before it, packets from there are foreign)."""
    svc = await siprec_service(make_service)
    d = new_dialog()
    audio = encode_samples(real_speech(seconds=6.0), "mulaw")
    packets = rtp_packets(audio)
    async with SiprecClient(svc.sip_port) as src, RtpSender() as first, \
            RtpSender("127.0.0.2") as second:
        assert (await src.invite(d)).status == 200
        await first.send(d.ports[0], packets[:100])
        await second.send(d.ports[0], packets[100:150])  # not announced yet: dropped
        await asyncio.sleep(0.2)  # (all of them, before the re-INVITE is read)
        d.cseq += 1
        src.send(src.request("INVITE", d, body=sdp_offer(ip="127.0.0.2"),
                             content_type="application/sdp"))
        assert (await src.final(d)).status == 200
        src.send(src.request("ACK", d))
        await second.send(d.ports[0], packets[100:])
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.03)
    assert svc.ctx.metrics.registry.get_sample_value(
        "nes2net_siprec_rtp_packets_total", {"result": "invalid"}) == 50
