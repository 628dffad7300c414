"""Amazon Connect: the control API over real HTTP, GetMedia from a Kinesis Video stand-in.

Kinesis Video Streams cannot run here, so ``kvs_fake.FakeKvs`` serves its two calls on
loopback (checking every request's AWS signature); everything else is the real service.
"""

import asyncio

import aiohttp
import numpy as np
import pytest
from gwsupport import summaries, window_scores
from kvs_fake import ARN, Stream, fragment_number, mkv_fragment
from siprec_client import real_speech

from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.client import stream_samples
from nes2net_stream.errors import ConfigError

TOKEN = "connect-lambda-token"
CONTACT = "5fa1c2d3-0b4e-4c6f-9a8b-7c6d5e4f3a2b"


pytestmark = pytest.mark.usefixtures("aws_credentials")


async def service(make_service, kvs, limits=None, **section):
    cfg = {"enabled": True, "port": 0, "api_token": TOKEN, "endpoint_url": kvs.url, **section}
    svc = await make_service(gateways={"amazon_connect": cfg}, limits=limits or {})
    (gw,) = svc.gateways
    svc.gw = gw
    svc.api = f"http://127.0.0.1:{gw.bound_port}"
    return svc


async def request(method, url, body=None, token=TOKEN, data=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


def pcm(x: np.ndarray) -> bytes:
    return float_to_pcm16(x).astype("<i2").tobytes()


def fragments(customer: np.ndarray, agent: np.ndarray, contact: str = CONTACT,
              seconds: float = 2.0) -> list[bytes]:
    """The two parties' audio cut into fragments of ``seconds``, as Connect streams them."""
    step = int(seconds * 8000)
    return [mkv_fragment(k, contact, pcm(customer[i:i + step]), pcm(agent[i:i + step]))
            for k, i in enumerate(range(0, len(customer), step))]


@pytest.mark.both_loops
async def test_a_contact_is_read_from_its_stream_and_scored(make_service, redis_client, kvs):
    customer = real_speech()
    agent = real_speech("synthetic_call.wav")[:len(customer)]
    agent = np.pad(agent, (0, len(customer) - len(agent)))
    frags = fragments(customer, agent)
    nxt = mkv_fragment(len(frags), "another-contact", pcm(customer[:8000]), pcm(agent[:8000]))
    kvs.streams[ARN] = Stream(frags + [nxt])  # Connect reuses the stream for the next contact
    svc = await service(make_service, kvs, score_agent=True)
    status, made = await request("POST", f"{svc.api}/contacts", {
        "contact_id": CONTACT, "stream_arn": ARN, "start_fragment_number": fragment_number(0),
        "ani": "+15551230001", "dnis": "+18005550100", "custom": {"queue": "fraud"}})
    assert status == 201, made
    assert made == {"call_id": CONTACT, "call_url": f"{svc.api}/contacts/{CONTACT}"}
    found = await summaries(redis_client, CONTACT, n=2)
    assert sorted(s["channel"] for s in found) == ["agent", "caller"]
    caller = next(s for s in found if s["channel"] == "caller")
    assert (caller["summary"]["end_reason"], caller["summary"]["detail"]) == (
        "stop", "contact_changed")
    assert caller["summary"]["duration_s"] == pytest.approx(len(customer) / 8000, abs=0.01)
    assert caller["metadata"] == {
        "provider": "amazon_connect", "provider_call_id": CONTACT, "provider_stream_id": ARN,
        "ani": "+15551230001", "dnis": "+18005550100", "custom": {"queue": "fraud"}}
    assert kvs.streams[ARN].requests == [{"StartSelectorType": "FRAGMENT_NUMBER",
                                          "AfterFragmentNumber": fragment_number(0)}]
    assert kvs.rejected == 0
    # each party scored exactly as its audio over the generic protocol
    for role, audio in (("caller", customer), ("agent", agent)):
        got = await window_scores(redis_client, CONTACT, channel=role)
        ref = await stream_samples(svc.url, audio, 8000, realtime=False)
        want = [w["score"]["spoof_probability"] for w in ref.of_type("window")]
        assert len(got) >= 2 and got == pytest.approx(want, abs=1e-6), role
    assert svc.gw.calls == {}


async def test_a_broken_answer_resumes_from_its_continuation_token(make_service, redis_client,
                                                                   kvs):
    customer = real_speech(seconds=12.0)
    kvs.streams[ARN] = Stream(fragments(customer, customer), break_after=2)
    svc = await service(make_service, kvs)
    await request("POST", f"{svc.api}/contacts", {"contact_id": CONTACT, "stream_arn": ARN})
    (s,) = await summaries(redis_client, CONTACT)
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("stop", "stream_ended")
    assert s["summary"]["duration_s"] == pytest.approx(12.0, abs=0.01)  # nothing lost or twice
    assert kvs.streams[ARN].requests == [
        {"StartSelectorType": "NOW"},
        {"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": "token-2"}]


async def test_delete_and_media_timeout_end_the_contact(make_service, redis_client, kvs):
    audio = real_speech(seconds=4.0)
    kvs.streams[ARN] = Stream(fragments(audio, audio), hang=True)
    other = ARN.replace("1700000000000", "1700000000001")
    kvs.streams[other] = Stream(fragments(audio, audio, contact="c-2"), hang=True)
    svc = await service(make_service, kvs, media_timeout_s=0.5)
    _, made = await request("POST", f"{svc.api}/contacts",
                            {"contact_id": CONTACT, "stream_arn": ARN})
    await request("POST", f"{svc.api}/contacts", {"contact_id": "c-2", "stream_arn": other})
    status, ended = await request("DELETE", made["call_url"])
    assert status == 200 and ended["ended"] == "stop"
    (s,) = await summaries(redis_client, "c-2")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("timeout", "idle_timeout")
    assert s["summary"]["duration_s"] == pytest.approx(4.0, abs=0.01)


async def test_stream_failures_end_the_call_with_an_error(make_service, redis_client, kvs):
    audio = real_speech(seconds=2.0)
    wide = mkv_fragment(0, CONTACT, pcm(audio), pcm(audio), rate=16000.0)
    kvs.streams[ARN] = Stream([wide])
    svc = await service(make_service, kvs)
    await request("POST", f"{svc.api}/contacts", {"contact_id": CONTACT, "stream_arn": ARN})
    missing = ARN.replace("1700000000000", "404")
    await request("POST", f"{svc.api}/contacts", {"contact_id": "c-404", "stream_arn": missing})
    (s,) = await summaries(redis_client, CONTACT)
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("error",
                                                                    "unsupported_format")
    (s,) = await summaries(redis_client, "c-404")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("error",
                                                                    "media_stream_failed")


async def test_wrong_aws_credentials_are_refused_by_the_stream(make_service, redis_client, kvs,
                                                               monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    kvs.streams[ARN] = Stream(fragments(real_speech(seconds=2.0), real_speech(seconds=2.0)))
    svc = await service(make_service, kvs)
    await request("POST", f"{svc.api}/contacts", {"contact_id": CONTACT, "stream_arn": ARN})
    (s,) = await summaries(redis_client, CONTACT)
    assert s["summary"]["detail"] == "media_stream_failed" and kvs.rejected == 1


async def test_control_api_errors_are_clear(make_service, kvs):
    svc = await service(make_service, kvs, allowed_stream_arns=[ARN.rpartition("/")[0]])
    contacts = f"{svc.api}/contacts"
    ok = {"contact_id": CONTACT, "stream_arn": ARN}
    assert (await request("POST", contacts, ok, token=None))[0] == 401
    status, err = await request("POST", contacts, {**ok, "stream_arn": "arn:aws:s3:::bucket"})
    assert status == 400 and "stream_arn" in err["message"]
    status, err = await request("POST", contacts, {**ok, "start_fragment_number": 12})
    assert status == 400 and "start_fragment_number" in err["message"]
    status, err = await request("POST", contacts, {**ok, "contact_id": "a b"})
    assert status == 400 and "contact_id" in err["message"]
    status, err = await request("POST", contacts, {**ok, "queue": "x"})
    assert status == 400 and "queue" in err["message"]
    other = "arn:aws:kinesisvideo:eu-west-1:999999999999:stream/x/1"
    status, err = await request("POST", contacts, {**ok, "stream_arn": other})
    assert status == 401 and "allowed_stream_arns" in err["message"]
    status, err = await request("POST", contacts, data=b"[1]")
    assert status == 400 and err["error"] == "bad_message"
    assert (await request("GET", f"{contacts}/nobody"))[0] == 404


async def test_configuration_is_checked_naming_the_key(make_service, kvs):
    with pytest.raises(ConfigError, match=r"gateways\.amazon_connect\.api_token"):
        await make_service(gateways={"amazon_connect": {"enabled": True, "port": 0,
                                                        "host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match=r"gateways\.amazon_connect\.endpoint_url"):
        await service(make_service, kvs, endpoint_url="kinesisvideo.example")


async def test_a_draining_service_ends_the_contacts(make_service, redis_client, kvs):
    audio = real_speech(seconds=4.0)
    kvs.streams[ARN] = Stream(fragments(audio, audio), hang=True)
    svc = await service(make_service, kvs)
    await request("POST", f"{svc.api}/contacts", {"contact_id": CONTACT, "stream_arn": ARN})
    for _ in range(50):
        _, state = await request("GET", f"{svc.api}/contacts/{CONTACT}")
        if state["audio_s"] >= 4.0:
            break
        await asyncio.sleep(0.1)
    await svc.drain()
    (s,) = await summaries(redis_client, CONTACT)
    assert s["summary"]["end_reason"] == "shutdown"


async def test_control_requests_are_counted_by_status(make_service, kvs):
    svc = await service(make_service, kvs)
    await request("GET", f"{svc.api}/contacts/nobody")
    await request("POST", f"{svc.api}/contacts", {"contact_id": CONTACT}, token=None)
    reg = svc.ctx.metrics.registry
    assert reg.get_sample_value("nes2net_amazon_connect_requests_total", {"status": "404"}) == 1
    assert reg.get_sample_value("nes2net_amazon_connect_requests_total", {"status": "401"}) == 1


async def test_the_kvs_client_holds_more_than_a_hundred_streams_open(kvs):
    """Every call keeps its GetMedia answer open: the client has no connection pool limit
    (aiohttp's default of 100 stalled the 101st call until its connect timeout)."""
    from contextlib import AsyncExitStack

    from nes2net_gateways.kvs import KvsClient

    arns = [ARN.replace("1700000000000", str(k)) for k in range(120)]
    audio = real_speech(seconds=1.0)
    for arn in arns:
        kvs.streams[arn] = Stream(fragments(audio, audio), hang=True)
    client = KvsClient(kvs.url)
    try:
        async with AsyncExitStack() as stack, asyncio.timeout(20):
            answers = [await stack.enter_async_context(client.get_media(
                kvs.url, arn, {"StartSelectorType": "NOW"})) for arn in arns]
            firsts = await asyncio.gather(*(a.content.read(64) for a in answers))
        assert all(firsts) and len(firsts) == 120
    finally:
        await kvs.stop()  # ends the hanging answers
        await client.close()
