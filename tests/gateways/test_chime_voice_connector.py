"""Chime SDK Voice Connector: EventBridge streaming events over real HTTP, each call leg read
with GetMedia from the Kinesis Video stand-in (``kvs_fake``), everything else the real service."""

import asyncio
import json

import aiohttp
import numpy as np
import pytest
from gwsupport import summaries, window_scores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvs_fake import ARN, Stream, fragment_number, mkv_tracks_fragment
from nes2net_gateways.chime_vc_events import parse_event
from siprec_client import real_speech

from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.client import stream_samples
from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

TOKEN = "eventbridge-api-key"
TID = "98a333db-f5c1-4e90-9935-372d18cb9e26"
CALLER_ARN = ARN.replace("connect-contact-stream", "ChimeVoiceConnector-vc1-caller")
CALLEE_ARN = ARN.replace("connect-contact-stream", "ChimeVoiceConnector-vc1-callee")


pytestmark = pytest.mark.usefixtures("aws_credentials")


async def service(make_service, kvs, **section):
    cfg = {"enabled": True, "port": 0, "api_token": TOKEN, "endpoint_url": kvs.url, **section}
    svc = await make_service(gateways={"chime_voice_connector": cfg})
    (gw,) = svc.gateways
    svc.gw = gw
    svc.api = f"http://127.0.0.1:{gw.bound_port}"
    return svc


def event(status, *, is_caller=None, arn=None, tid=TID, direction="Inbound", **detail):
    """A ``Chime VoiceConnector Streaming Status`` event as EventBridge delivers it."""
    body = {"streamingStatus": status, "transactionId": tid, "callId": "1112-2222-4333",
            "direction": direction, "fromNumber": "+12065550100", "toNumber": "+13605550199",
            "voiceConnectorId": "abcdef1ghij2klmno3pqr4", "version": "0"}
    if is_caller is not None:
        body["isCaller"] = is_caller
    if arn is not None:
        body.update(streamArn=arn, startFragmentNumber=fragment_number(0),
                    mediaType="audio/L16", startTime="2026-11-28T20:00:00.000Z")
    body.update(detail)
    return {"version": "0", "id": "12345678-1234-1234-1234-111122223333",
            "detail-type": "Chime VoiceConnector Streaming Status", "source": "aws.chime",
            "account": "111122223333", "time": "2026-11-28T20:00:00Z", "region": "us-east-1",
            "resources": [], "detail": body}


async def post(svc, body, token=TOKEN, data=None, path="/events"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.post(
            f"{svc.api}{path}", json=None if data is not None else body, data=data,
            headers=headers) as resp:
        return resp.status, await resp.json()


def pcm(x: np.ndarray) -> bytes:
    return float_to_pcm16(x).astype("<i2").tobytes()


def leg(audio: np.ndarray, tid: str = TID, seconds: float = 2.0,
        track: str = "AUDIO") -> list[bytes]:
    """One leg's stream: a single PCM track, each fragment tagged with the TransactionId."""
    step = int(seconds * 8000)
    return [mkv_tracks_fragment(k, ("TransactionId", tid), [(track, pcm(audio[i:i + step]))])
            for k, i in enumerate(range(0, len(audio), step))]


async def test_both_legs_of_a_call_are_its_two_channels(make_service, redis_client, kvs):
    customer = real_speech()
    agent = real_speech("synthetic_call.wav")
    nxt = leg(customer[:8000], tid="next-call")  # the streams are reused by the next call
    kvs.streams[CALLER_ARN] = Stream(leg(customer) + nxt)
    kvs.streams[CALLEE_ARN] = Stream(leg(agent, track="Track_audio") + nxt)
    svc = await service(make_service, kvs, score_agent=True)
    status, made = await post(svc, event("STARTED", is_caller=True, arn=CALLER_ARN))
    assert status == 201, made
    assert made == {"call_id": TID, "call_url": f"{svc.api}/calls/{TID}", "channel": "caller"}
    status, again = await post(svc, event("STARTED", is_caller="False", arn=CALLEE_ARN),
                               path=f"/events/{TID}")  # the id in the path, for balancers
    assert (status, again["channel"]) == (200, "agent")
    found = {s["channel"]: s for s in await summaries(redis_client, TID, n=2)}
    assert set(found) == {"caller", "agent"}
    for role, audio in (("caller", customer), ("agent", agent)):
        s = found[role]
        assert (s["summary"]["end_reason"], s["summary"]["detail"]) == (
            "stop", "transaction_changed")
        assert s["metadata"] == {
            "provider": "chime_voice_connector", "provider_call_id": "1112-2222-4333",
            "provider_stream_id": TID, "ani": "+12065550100", "dnis": "+13605550199",
            "custom": {"voice_connector_id": "abcdef1ghij2klmno3pqr4", "direction": "Inbound"}}
        # each party scored exactly as its audio over the generic protocol
        got = await window_scores(redis_client, TID, channel=role)
        ref = await stream_samples(svc.url, audio, 8000, realtime=False)
        want = [w["score"]["spoof_probability"] for w in ref.of_type("window")]
        assert len(got) >= 2 and got == pytest.approx(want, abs=1e-6), role
    for arn in (CALLER_ARN, CALLEE_ARN):
        assert kvs.streams[arn].requests == [{"StartSelectorType": "FRAGMENT_NUMBER",
                                              "AfterFragmentNumber": fragment_number(0)}]
    assert kvs.rejected == 0 and svc.gw.calls == {}
    # a STARTED repeated after the call's end does not read the stream again
    status, late = await post(svc, event("STARTED", is_caller=True, arn=CALLER_ARN))
    assert (status, late["ignored"]) == (200, "call_ended")
    assert len(kvs.streams[CALLER_ARN].requests) == 1


async def test_an_outbound_calls_callee_is_the_customer_and_ended_stops_the_leg(
        make_service, redis_client, kvs):
    audio = real_speech(seconds=4.0)
    kvs.streams[CALLEE_ARN] = Stream(leg(audio), hang=True)  # GetMedia stays open
    svc = await service(make_service, kvs, end_grace_s=0.3)
    status, made = await post(svc, event("STARTED", is_caller=False, arn=CALLEE_ARN,
                                         direction="Outbound"))
    assert (status, made["channel"]) == (201, "caller")
    status, again = await post(svc, event("STARTED", is_caller=False, arn=CALLEE_ARN,
                                          direction="Outbound"))  # EventBridge repeats itself
    assert status == 200
    for _ in range(50):
        async with aiohttp.ClientSession() as http, http.get(
                made["call_url"], headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            state = await r.json()
        if state["audio_s"] >= 4.0:
            break
        await asyncio.sleep(0.1)
    assert state["legs"]["caller"]["live"] is True and set(state["legs"]) == {"caller"}
    status, _ = await post(svc, event("ENDED", is_caller=False, direction="Outbound"))
    assert status == 200
    (s,) = await summaries(redis_client, TID)  # the agent's leg is not scored by default
    assert (s["channel"], s["summary"]["end_reason"], s["summary"]["detail"]) == (
        "caller", "stop", "stream_ended")
    assert s["summary"]["duration_s"] == pytest.approx(4.0, abs=0.01)
    assert len(kvs.streams[CALLEE_ARN].requests) == 1


async def test_a_leg_that_ends_first_gets_its_summary_then(make_service, redis_client, kvs):
    audio = real_speech(seconds=6.0)
    kvs.streams[CALLER_ARN] = Stream(leg(audio), hang=True)
    kvs.streams[CALLEE_ARN] = Stream(leg(audio[:2 * 8000]) + leg(audio[:8000], tid="next"))
    svc = await service(make_service, kvs, score_agent=True)
    await post(svc, event("STARTED", is_caller=True, arn=CALLER_ARN))
    await post(svc, event("STARTED", is_caller=False, arn=CALLEE_ARN))
    (agent,) = await summaries(redis_client, TID)  # the agent's leg moved on: only its summary
    assert (agent["channel"], agent["summary"]["detail"]) == ("agent", "transaction_changed")
    assert TID in svc.gw.calls
    async with aiohttp.ClientSession() as http, http.delete(
            f"{svc.api}/calls/{TID}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200 and (await r.json())["ended"] == "stop"
    found = {s["channel"]: s["summary"] for s in await summaries(redis_client, TID, n=2)}
    assert (found["caller"]["end_reason"], found["caller"]["detail"]) == ("stop", "deleted")


async def test_a_failed_stream_ends_the_call_with_an_error(make_service, redis_client, kvs):
    kvs.streams[CALLER_ARN] = Stream(leg(real_speech(seconds=2.0)), hang=True)
    svc = await service(make_service, kvs)
    await post(svc, event("STARTED", is_caller=True, arn=CALLER_ARN))
    await asyncio.sleep(0.5)
    assert (await post(svc, event("UPDATED", siprecMetadata="<recording/>")))[1][
        "ignored"] == "UPDATED"
    status, _ = await post(svc, event("FAILED", failureReason="Internal failure"))
    assert status == 200
    (s,) = await summaries(redis_client, TID)
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("error",
                                                                    "media_stream_failed")
    assert (await post(svc, event("ENDED", is_caller=True)))[1]["ignored"] == "unknown_call"


async def test_bad_events_get_clear_errors(make_service, kvs):
    svc = await service(make_service, kvs, allowed_stream_arns=[CALLER_ARN])
    ok = event("STARTED", is_caller=True, arn=CALLER_ARN)
    assert (await post(svc, ok, token="wrong"))[0] == 401
    cases = [({**ok, "detail-type": "Chime Meeting State Change"}, 400, "detail-type"),
             ({**ok, "source": "aws.s3"}, 400, "source"),
             (event("STARTED", arn=CALLER_ARN), 400, "isCaller"),
             (event("STARTED", is_caller="yes", arn=CALLER_ARN), 400, "isCaller"),
             (event("STARTED", is_caller=True, arn=CALLER_ARN, mediaType="audio/opus"), 415,
              "mediaType"),
             (event("STARTED", is_caller=True, arn="arn:aws:s3:::bucket"), 400, "streamArn"),
             (event("STARTED", is_caller=True, arn=CALLEE_ARN), 401, "allowed_stream_arns"),
             (event("GONE"), 400, "streamingStatus"),
             (event("ENDED", tid="a b"), 400, "transactionId"),
             (event("ENDED", fromNumber=7), 400, "fromNumber")]
    for body, status, words in cases:
        got, err = await post(svc, body)
        assert got == status and words in err["message"], (body["detail"], err)
    status, err = await post(svc, ok, path="/events/another-call")
    assert status == 400 and "transactionId" in err["message"]
    status, err = await post(svc, None, data=b"[1]")
    assert status == 400 and err["error"] == "bad_message"
    assert svc.gw.calls == {}


async def test_configuration_is_checked_naming_the_key(make_service, kvs):
    with pytest.raises(ConfigError, match=r"gateways\.chime_voice_connector\.api_token"):
        await make_service(gateways={"chime_voice_connector": {"enabled": True, "port": 0,
                                                               "host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match=r"gateways\.chime_voice_connector\.end_grace_s"):
        await service(make_service, kvs, end_grace_s=-1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(
                        ["detail", "detail-type", "source", "streamingStatus", "transactionId",
                         "isCaller", "streamArn", "startFragmentNumber", "mediaType",
                         "direction", "callId"]), inner, max_size=6), max_leaves=12))
def test_the_event_parser_raises_only_protocol_errors(doc):
    try:
        parse_event(json.dumps(doc).encode(), 16384)
    except ProtocolError:
        pass


async def test_two_ingest_workers_meet_a_calls_legs_in_one(small_bundle, redis_server,
                                                           redis_client, kvs, tmp_path):
    """With ``server.workers = 2`` the events of one call reach either process; the one that
    does not own the call passes them on, so each call is one call with both channels."""
    from gwsupport import free_port_run

    from nes2net_stream.localstack import ServiceProcess

    port = free_port_run(3)
    audio = real_speech(seconds=4.0)
    calls = [f"tx-{k}" for k in range(8)]
    for tid in calls:
        for side in ("caller", "callee"):
            arn = ARN.replace("connect-contact-stream", f"vc-{tid}-{side}")
            kvs.streams[arn] = Stream(leg(audio, tid=tid) + leg(audio[:8000], tid="next"),
                                      pace_s=0.5)  # both legs stream while the events arrive
    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=tmp_path / "log",
                         extra_env={"NES2NET_SERVER__WORKERS": "2", "NES2NET_HTTP__PORT": "0",
                                    "NES2NET_GATEWAYS__CHIME_VOICE_CONNECTOR__ENABLED": "true",
                                    "NES2NET_GATEWAYS__CHIME_VOICE_CONNECTOR__PORT": str(port),
                                    "NES2NET_GATEWAYS__CHIME_VOICE_CONNECTOR__API_TOKEN": TOKEN,
                                    "NES2NET_GATEWAYS__CHIME_VOICE_CONNECTOR__SCORE_AGENT":
                                        "true",
                                    "NES2NET_GATEWAYS__CHIME_VOICE_CONNECTOR__ENDPOINT_URL":
                                        kvs.url})
    shared = type("Api", (), {"api": f"http://127.0.0.1:{port}"})

    async def one(tid: str) -> list[int]:
        statuses = []
        for side, caller in (("caller", True), ("callee", False)):
            arn = ARN.replace("connect-contact-stream", f"vc-{tid}-{side}")
            status, _ = await post(shared, event("STARTED", is_caller=caller, arn=arn, tid=tid))
            statuses.append(status)
        return statuses

    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        await asyncio.sleep(1.0)  # the second worker may bind a moment after the first
        results = await asyncio.gather(*(one(tid) for tid in calls))
        for tid in calls:
            found = await summaries(redis_client, tid, n=2)
            assert sorted(s["channel"] for s in found) == ["agent", "caller"], tid
            assert {s["summary"]["duration_s"] for s in found} == {4.0}
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
    assert results == [[201, 200]] * len(calls) and code == 0
    log = (tmp_path / "log").read_text()
    assert log.count('"call started"') == len(calls)  # one call per transaction, not per leg
