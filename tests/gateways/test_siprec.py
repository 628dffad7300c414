"""SIPREC gateway over real UDP/TCP sockets: INVITE with SDP + RFC 7865 metadata, RTP, BYE."""

import asyncio

import pytest
from gwsupport import alerts, summaries, window_scores
from nes2net_gateways.sip_digest import digest_response, parse_digest
from nes2net_gateways.sip_sdp import parse_sdp
from siprec_client import (
    Dialog,
    RtpSender,
    SiprecClient,
    draft_metadata,
    new_dialog,
    real_speech,
    rs_metadata,
    rtp_packets,
    sdp_offer,
    send_rtp,
    siprec_service,
)
from structlog.testing import capture_logs

from nes2net_stream.client import encode_samples, stream_samples
from nes2net_stream.errors import ConfigError


@pytest.mark.both_loops
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_recording_session_end_to_end(make_service, redis_client, transport):
    svc = await siprec_service(make_service)
    caller = encode_samples(real_speech(), "mulaw")
    agent = encode_samples(real_speech("synthetic_call.wav"), "mulaw")
    d = new_dialog()
    async with SiprecClient(svc.sip_port, transport) as src:
        resp = await src.invite(d)
        assert resp.status == 200, resp
        assert [r.status for r in d.responses] == [100, 200]
        assert "+sip.srs" in resp.get("Contact") and resp.get("Content-Type") == "application/sdp"
        assert resp.get("Session-Expires") is None
        ans = d.answer
        assert all(p > 0 for p in d.ports) and len(set(d.ports)) == 2
        assert [m.direction for m in ans.media] == ["recvonly", "recvonly"]
        assert [m.label for m in ans.media] == ["1", "2"]
        assert [m.payload_types[0] for m in ans.media] == [0, 0]  # PCMU, first preference
        await asyncio.gather(send_rtp(d.ports[0], rtp_packets(caller)),
                             send_rtp(d.ports[1], rtp_packets(agent)))
        await asyncio.sleep(0.3)
        bye = await src.bye(d)
        assert bye.status == 200
    (s,) = await summaries(redis_client, d.call_id)
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(len(caller) / 8000, abs=0.03)
    assert s["source"]["gateway"] == "siprec" and s["source"]["kind"] == "gateway"
    assert s["metadata"] == {
        "provider": "siprec", "provider_call_id": "ab30317f1a784dc48ff824d0d3715d86",
        "ani": "+15551230001", "dnis": "+18005550100",
        "custom": {"recording_call_id": d.call_id, "codec": "pcmu", "srtp": False,
                   "participants": {"caller": "sip:+15551230001@carrier.example",
                                    "agent": "sip:+18005550100@pbx.example"},
                   "labels": {"caller": "1", "agent": "2"}}}
    # the caller's stream is scored exactly as the same bytes over the generic protocol
    got = await window_scores(redis_client, d.call_id)
    ref = await stream_samples(svc.url, real_speech(), 8000, encoding="mulaw", realtime=False)
    want = [w["score"]["spoof_probability"] for w in ref.of_type("window")]
    assert len(got) >= 2 and got == pytest.approx(want, abs=1e-6)


async def test_both_parties_scored_customer_by_label(make_service, redis_client):
    svc = await siprec_service(make_service, score_agent=True, customer_label="2")
    d = new_dialog()
    audio = encode_samples(real_speech(seconds=6.0), "mulaw")
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(d)).status == 200
        await asyncio.gather(*(send_rtp(p, rtp_packets(audio)) for p in d.ports))
        await asyncio.sleep(0.3)
        await src.bye(d)
    found = await summaries(redis_client, d.call_id, n=2)
    assert sorted(s["channel"] for s in found) == ["agent", "caller"]
    meta = found[0]["metadata"]
    assert meta["custom"]["labels"] == {"caller": "2", "agent": "1"}
    assert meta["ani"] == "+18005550100"  # the customer is the participant of label 2


@pytest.mark.parametrize("layout", [rs_metadata, draft_metadata], ids=["rfc7865", "drafts"])
async def test_the_customer_found_by_its_address(make_service, redis_client, layout):
    """``customer_aor``: the E.164 participant is the customer, whatever its stream's order
    (metadata in RFC 7865's layout or in the drafts' that some SBCs still send)."""
    svc = await siprec_service(make_service, customer_aor=r"^sip:\+")
    d = new_dialog()
    audio = encode_samples(real_speech(seconds=5.0), "mulaw")
    meta = layout(aors=("sip:2001@pbx.example", "sip:+4930123456@carrier.example"))
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(d, metadata=meta)).status == 200
        await send_rtp(d.ports[1], rtp_packets(audio))
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["channel"] == "caller" and s["metadata"]["ani"] == "+4930123456"
    assert s["metadata"]["custom"]["labels"] == {"agent": "1", "caller": "2"}
    assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.03)


async def test_the_customers_stream_offered_later_is_the_one_scored(make_service, redis_client):
    """An outbound call on an SBC that records the calling party (the agent) first and adds
    the called party's stream by re-INVITE once it answers: with ``customer_aor`` the session
    waits for the customer's stream, then records the re-offer's streams."""
    svc = await siprec_service(make_service, customer_aor=r"^sip:\+")
    d = new_dialog()
    agent = rtp_packets(encode_samples(real_speech("synthetic_call.wav", seconds=3.0), "mulaw"))
    customer = encode_samples(real_speech(seconds=6.0), "mulaw")
    aors = ("sip:2001@pbx.example", "sip:+4930123456@carrier.example")
    async with SiprecClient(svc.sip_port) as src:
        with capture_logs() as logs:
            assert (await src.invite(d, sdp=sdp_offer(labels=("1",)),
                                     metadata=rs_metadata(labels=("1",), aors=aors[:1]))
                    ).status == 200
        assert any(e["event"] == "recording session waits for the customer's stream"
                   for e in logs)
        await send_rtp(d.ports[0], agent)  # ringing: the agent's stream alone, not scored
        d.cseq += 1
        src.send(src.invite_text(d, sdp=sdp_offer(labels=("1", "2")),
                                 metadata=rs_metadata(labels=("1", "2"), aors=aors)))
        answer = await src.final(d)
        assert answer.status == 200
        src.send(src.request("ACK", d))
        ports = [m.port for m in parse_sdp(answer.body.decode()).media]
        assert len(ports) == 2 and all(ports)
        await send_rtp(ports[1], rtp_packets(customer))
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["channel"] == "caller" and s["metadata"]["ani"] == "+4930123456"
    assert s["metadata"]["custom"]["labels"] == {"agent": "1", "caller": "2"}
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.03)  # the customer's audio
    assert s["summary"]["windows_scored"] >= 2


async def test_without_the_customers_stream_the_offered_streams_are_scored_after_the_wait(
        make_service, redis_client):
    svc = await siprec_service(make_service, customer_aor=r"^sip:\+", customer_wait_s=0.5)
    d = new_dialog()
    audio = rtp_packets(encode_samples(real_speech(seconds=5.0), "mulaw"))
    async with SiprecClient(svc.sip_port) as src:
        meta = rs_metadata(labels=("1",), aors=("sip:2001@pbx.example",))
        assert (await src.invite(d, sdp=sdp_offer(labels=("1",)), metadata=meta)).status == 200
        with capture_logs() as logs:
            await asyncio.sleep(1.2)  # the wait is over: the stream there is gets recorded
        assert any("not offered in time" in e["event"] for e in logs)
        await send_rtp(d.ports[0], audio)
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["metadata"]["custom"]["participants"] == {"caller": "sip:2001@pbx.example"}
    assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.03)


async def test_without_metadata_nothing_is_waited_for(make_service, redis_client):
    """``customer_aor`` needs metadata to match: an SBC that sends none is recorded at once."""
    svc = await siprec_service(make_service, customer_aor=r"^sip:\+")
    d = new_dialog()
    audio = rtp_packets(encode_samples(real_speech(seconds=4.0), "mulaw"))
    async with SiprecClient(svc.sip_port) as src:
        with capture_logs() as logs:
            assert (await src.invite(d, metadata=None)).status == 200
        assert not any("waits" in e["event"] for e in logs)
        await send_rtp(d.ports[0], audio)
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["summary"]["duration_s"] == pytest.approx(4.0, abs=0.03)


async def test_a_session_ended_while_waiting_publishes_nothing(make_service, redis_client):
    svc = await siprec_service(make_service, customer_aor=r"^sip:\+")
    d = new_dialog()
    async with SiprecClient(svc.sip_port) as src:
        meta = rs_metadata(labels=("1",), aors=("sip:2001@pbx.example",))
        assert (await src.invite(d, sdp=sdp_offer(labels=("1",)), metadata=meta)).status == 200
        await send_rtp(d.ports[0], rtp_packets(encode_samples(real_speech(seconds=1.0),
                                                              "mulaw")))
        assert (await src.bye(d)).status == 200
    await asyncio.sleep(0.5)
    assert not svc.gw.calls and await summaries(redis_client, d.call_id, within=0.5) == []


async def test_retransmitted_invite_gets_the_same_answer(make_service, redis_client):
    svc = await siprec_service(make_service)
    d = new_dialog()
    async with SiprecClient(svc.sip_port) as src:
        text = src.invite_text(d, branch="z9hG4bKretrans1")
        src.send(text)
        first = await src.final(d)
        src.send(text)  # the client did not see the 200 OK and sends the INVITE again
        again = await src.final(d)
        assert first.status == again.status == 200 and first.body == again.body
        assert first.get("To") == again.get("To")
        # without an ACK the answer is retransmitted (RFC 3261 timer G)
        resent = await src.final(d, timeout=2.0)
        assert resent.status == 200 and resent.body == first.body
        d.to = first.get("To")
        src.send(src.request("ACK", d))
        await src.bye(d)
    assert len(await summaries(redis_client, d.call_id)) == 1


async def test_loss_reordering_and_foreign_packets(make_service, redis_client):
    svc = await siprec_service(make_service)
    d = new_dialog()
    audio = encode_samples(real_speech(seconds=6.0), "mulaw")
    packets_ = rtp_packets(audio, seq=65500)  # the sequence number wraps during the call
    kept = [p for k, p in enumerate(packets_) if k % 25 != 7]  # 4 % loss
    kept[10], kept[11] = kept[11], kept[10]  # one pair out of order: put back in order
    async with SiprecClient(svc.sip_port) as src, RtpSender() as sbc:
        assert (await src.invite(d)).status == 200
        await sbc.send(d.ports[0], kept[:100])
        # another sender on the same port after the stream latched: ignored
        await send_rtp(d.ports[0], rtp_packets(b"\x00" * 16000, ssrc=1))
        await sbc.send(d.ports[0], kept[100:])
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    # lost packets are concealed, so stream time follows the sender's clock
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    reg = svc.ctx.metrics.registry

    def packets(result):
        return reg.get_sample_value("nes2net_siprec_rtp_packets_total", {"result": result})

    assert packets("received") == len(kept)
    assert (packets("lost"), packets("late"), packets("reordered"), packets("invalid")) == (
        len(packets_) - len(kept), None, 1, 100)  # None: never counted
    # each lost packet (20 ms) concealed; nothing left to fill with silence
    assert reg.get_sample_value("nes2net_siprec_rtp_concealed_seconds_total") == \
        pytest.approx(0.02 * (len(packets_) - len(kept)))
    assert reg.get_sample_value("nes2net_siprec_rtp_gap_fill_seconds_total") == 0
    assert reg.get_sample_value("nes2net_siprec_responses_total", {"status": "200"}) == 2


async def test_idle_stream_times_out_and_the_gateway_hangs_up(make_service, redis_client):
    svc = await siprec_service(make_service, limits={"idle_timeout_s": 0.5, "start_timeout_s": 0.5})
    d = new_dialog()
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(d)).status == 200
        await send_rtp(d.ports[0], rtp_packets(encode_samples(real_speech(seconds=1.0),
                                                              "mulaw")))
        bye = await src.expect_request("BYE", timeout=5)
        assert bye.call_id == d.call_id
        assert bye.get("To").startswith("<sip:src@127.0.0.1>;tag=")
    (s,) = await summaries(redis_client, d.call_id)
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("timeout", "idle_timeout")


async def test_paused_recording_does_not_time_out(make_service, redis_client):
    svc = await siprec_service(make_service, limits={"idle_timeout_s": 0.6})
    d = new_dialog()
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(d)).status == 200
        ports = d.ports
        await send_rtp(ports[0], rtp_packets(encode_samples(real_speech(seconds=1.0), "mulaw")))
        d.cseq += 1  # pause (RFC 7866 §8: a=inactive in a re-INVITE, metadata updated)
        with capture_logs() as logs:
            src.send(src.invite_text(d, sdp=sdp_offer(direction="inactive"),
                                     metadata=rs_metadata(aors=("sip:+1@a", "sip:+2@b"))))
            paused = await src.final(d)
        assert paused.status == 200
        (update,) = [e for e in logs if e["event"] == "recording metadata updated"]
        assert update["participants"] == ["sip:+1@a", "sip:+2@b"]
        assert [m.port for m in parse_sdp(paused.body.decode()).media] == ports
        src.send(src.request("ACK", d))
        await asyncio.sleep(1.5)  # longer than idle_timeout_s: still recording
        assert svc.gw.calls
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["summary"]["end_reason"] == "stop"


async def test_digest_authentication(make_service, redis_client):
    svc = await siprec_service(make_service, password="s3cret-siprec", auth="required")
    d = new_dialog()
    async with SiprecClient(svc.sip_port) as src:
        challenge = await src.invite(d)
        assert challenge.status == 401
        offers = challenge.get_all("WWW-Authenticate")
        assert [parse_digest(c)["algorithm"] for c in offers] == ["SHA-256", "MD5"]
        params = parse_digest(offers[0])
        uri = f"sip:srs@127.0.0.1:{svc.sip_port}"
        wrong = digest_response(params, "nes2net", "guess", "INVITE", uri)
        d.cseq += 1
        assert (await src.invite(d, extra=[f"Authorization: {wrong}"])).status == 401
        good = digest_response(params, "nes2net", "s3cret-siprec", "INVITE", uri)
        d.cseq += 1
        assert (await src.invite(d, extra=[f"Authorization: {good}"])).status == 200
        await src.bye(d)
        replay = new_dialog()  # the same credentials again: refused
        assert (await src.invite(replay, extra=[f"Authorization: {good}"])).status == 401
    assert len(await summaries(redis_client, d.call_id)) == 1


async def test_requests_from_other_networks_are_ignored(make_service, redis_client):
    svc = await siprec_service(make_service, allowed_networks=["10.9.8.0/24"])
    async with SiprecClient(svc.sip_port) as src:
        src.send(src.invite_text(new_dialog()))
        with pytest.raises(TimeoutError):
            await src.final(new_dialog(), timeout=0.5)
    assert not svc.gw.calls


@pytest.mark.parametrize("case,status", [
    ("require", 420), ("no_sdp", 488), ("srtp_only", 488), ("ilbc_only", 488),
    ("bad_sdp", 400), ("doctype", 400), ("bye_unknown", 481), ("options", 200),
    ("register", 405), ("bad_content_type", 415),
])
async def test_bad_requests_get_an_answer_and_other_calls_go_on(make_service, redis_client,
                                                                case, status):
    svc = await siprec_service(make_service)
    good = new_dialog()
    audio = encode_samples(real_speech(seconds=5.0), "mulaw")
    async with SiprecClient(svc.sip_port) as src, RtpSender() as sbc:
        assert (await src.invite(good)).status == 200
        await sbc.send(good.ports[0], rtp_packets(audio)[:100])
        src.send(b"\x00\xffnot sip at all\r\n\r\n")
        d = new_dialog()
        text = {
            "require": lambda: src.invite_text(d, extra=["Require: 100rel"]),
            "no_sdp": lambda: src.request("INVITE", d, extra=["Require: siprec"]),
            "srtp_only": lambda: src.invite_text(d, sdp=sdp_offer(proto="RTP/SAVP")),
            "ilbc_only": lambda: src.invite_text(d, sdp=sdp_offer(formats="97",
                                                                  rtpmaps=("97 iLBC/8000",))),
            "bad_sdp": lambda: src.invite_text(d, sdp="m=audio x RTP/AVP 0\r\n"),
            "doctype": lambda: src.invite_text(d, metadata="<!DOCTYPE r [<!ENTITY a 'b'>]>"
                                               "<recording/>"),
            "bye_unknown": lambda: src.request("BYE", d),
            "options": lambda: src.request("OPTIONS", d),
            "register": lambda: src.request("REGISTER", d),
            "bad_content_type": lambda: src.request("INVITE", d, body="hello",
                                                    content_type="text/plain"),
        }[case]()
        src.send(text)
        resp = await src.final(d)
        assert resp.status == status, (resp.status, resp.reason, resp.get("Warning"))
        if case == "require":
            assert resp.get("Unsupported") == "100rel"
        if case == "options":
            assert "INVITE" in resp.get("Allow")
        await sbc.send(good.ports[0], rtp_packets(audio)[100:])
        await asyncio.sleep(0.2)
        assert (await src.bye(good)).status == 200
    (s,) = await summaries(redis_client, good.call_id)
    assert s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] > 2.0
    assert all(a["call_id"] == good.call_id for a in alerts(redis_client))


async def test_capacity_and_drain(make_service, redis_client):
    svc = await siprec_service(make_service, limits={"max_calls": 1})
    first, second = new_dialog(), new_dialog()
    async with SiprecClient(svc.sip_port) as src:
        assert (await src.invite(first)).status == 200
        busy = await src.invite(second)
        assert busy.status == 503 and busy.get("Retry-After") == "5"
        await send_rtp(first.ports[0], rtp_packets(
            encode_samples(real_speech(seconds=2.0), "mulaw")))
        drain = asyncio.create_task(svc.drain())
        bye = await src.expect_request("BYE", timeout=10)  # the gateway hangs up
        assert bye.call_id == first.call_id
        probe = new_dialog()  # an SBC's health check now takes this recorder out of rotation
        src.send(src.request("OPTIONS", probe))
        assert (await src.final(probe)).status == 503
        await drain
    (s,) = await summaries(redis_client, first.call_id)
    assert s["summary"]["end_reason"] == "shutdown"
    assert not await summaries(redis_client, second.call_id, within=0.2)


async def test_config_errors_name_the_key(make_service):
    with pytest.raises(ConfigError, match="gateways.siprec.allowed_networks"):
        await make_service(gateways={"siprec": {"enabled": True, "host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="gateways.siprec.rtp_port_min"):
        await make_service(gateways={"siprec": {"enabled": True, "rtp_port_min": 30000,
                                                "rtp_port_max": 30000}})
    with pytest.raises(ConfigError, match="gateways.siprec.customer_aor"):
        await make_service(gateways={"siprec": {"enabled": True, "customer_aor": "(+"}})
    with pytest.raises(ConfigError, match="gateways.siprec.codecs"):
        await make_service(gateways={"siprec": {"enabled": True, "codecs": ["ILBC"]}})


async def test_two_ingest_workers_share_the_sip_port(small_bundle, redis_server, redis_client,
                                                     tmp_path):
    """With ``server.workers = 2`` both processes listen on the SIP port (SO_REUSEPORT): each
    client's dialog stays with one worker, RTP ports never collide, every call is summarised."""
    from servers import free_port

    from nes2net_stream.localstack import ServiceProcess

    sip = free_port()
    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=tmp_path / "log",
                         extra_env={"NES2NET_SERVER__WORKERS": "2", "NES2NET_HTTP__PORT": "0",
                                    "NES2NET_GATEWAYS__SIPREC__ENABLED": "true",
                                    "NES2NET_GATEWAYS__SIPREC__PORT": str(sip),
                                    "NES2NET_GATEWAYS__SIPREC__RTP_PORT_MIN": "0"})
    dialogs = [new_dialog() for _ in range(6)]
    audio = encode_samples(real_speech(seconds=5.0), "mulaw")

    async def one(d: Dialog) -> int:
        async with SiprecClient(sip) as src:
            resp = await src.invite(d)
            if resp.status != 200:
                return resp.status
            await send_rtp(d.ports[0], rtp_packets(audio))
            await asyncio.sleep(0.3)
            return (await src.bye(d)).status

    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        await asyncio.sleep(1.0)  # the second worker may bind a moment after the first
        statuses = await asyncio.gather(*(one(d) for d in dialogs))
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
    assert statuses == [200] * len(dialogs) and code == 0
    for d in dialogs:
        (s,) = await summaries(redis_client, d.call_id)
        assert s["summary"]["end_reason"] == "stop"
        assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.03)


async def test_request_limits_never_drop_a_running_sessions_requests(make_service,
                                                                     redis_client):
    """New dialogs are limited per client address; ACK and BYE of running sessions are not
    counted there (a busy SBC's burst of new calls must not cost running calls their ACK)."""
    svc = await siprec_service(make_service, max_requests_per_s=2.0)  # bursts of 4
    dialogs = [new_dialog() for _ in range(4)]
    async with SiprecClient(svc.sip_port) as src:
        for d in dialogs:  # 4 INVITEs use the burst; their ACKs are in-dialog
            assert (await src.invite(d)).status == 200
        extra = new_dialog()
        src.send(src.invite_text(extra))  # over the limit: dropped unanswered
        with pytest.raises(TimeoutError):
            await src.final(extra, timeout=0.3)
        calls = list(svc.gw.calls.values())
        assert len(calls) == 4 and all(c.acked for c in calls)  # every ACK got through
        for d in dialogs:
            assert (await src.bye(d)).status == 200
    for d in dialogs:
        (s,) = await summaries(redis_client, d.call_id)
        assert s["summary"]["end_reason"] == "stop"


async def test_a_garbled_tcp_stream_closes_that_connection_only(make_service, redis_client):
    svc = await siprec_service(make_service)
    d = new_dialog()
    async with SiprecClient(svc.sip_port, "tcp") as good:
        assert (await good.invite(d)).status == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.sip_port)
        writer.write(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
        writer.close()
        assert (await good.bye(d)).status == 200  # the other connection's session goes on
    (s,) = await summaries(redis_client, d.call_id)
    assert s["summary"]["end_reason"] == "stop"


async def test_idle_tcp_connections_close_unless_a_session_uses_them(make_service,
                                                                    redis_client,
                                                                    monkeypatch):
    import nes2net_gateways.siprec as siprec_module

    monkeypatch.setattr(siprec_module, "TCP_IDLE_S", 0.3)
    svc = await siprec_service(make_service, limits={"idle_timeout_s": 30})
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.sip_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # idle and unused: closed
    writer.close()
    d = new_dialog()
    async with SiprecClient(svc.sip_port, "tcp") as src:
        assert (await src.invite(d)).status == 200
        await asyncio.sleep(1.0)  # quiet for longer than TCP_IDLE_S, but in use
        assert (await src.bye(d)).status == 200
