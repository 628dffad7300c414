"""SIPREC over TLS with SDES-SRTP media: keys in the SDP, encrypted RTP, mutual TLS."""

import asyncio
import base64
import os
import ssl

import pytest
from gwsupport import summaries, window_scores
from nes2net_gateways.sip_sdp import Crypto
from nes2net_gateways.srtp import SrtpSender
from pki import make_pki
from siprec_client import (
    RtpSender,
    SiprecClient,
    new_dialog,
    real_speech,
    rtp_packets,
    sdp_offer,
)

from nes2net_stream.client import encode_samples, stream_samples
from nes2net_stream.errors import ConfigError

pytest.importorskip("pylibsrtp")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("sip-pki"), clients=("sbc",))


def client_context(pki, *, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    if cert:
        ctx.load_cert_chain(pki["sbc.cert"], pki["sbc.key"])
    return ctx


async def tls_service(make_service, pki, **section):
    cfg = {"enabled": True, "transports": ["tls"], "tls_port": 0, "rtp_port_min": 0,
           "tls_cert": str(pki["cert"]), "tls_key": str(pki["key"]), **section}
    svc = await make_service(gateways={"siprec": cfg})
    (svc.gw,) = svc.gateways
    return svc


def key_line(suite: str, tag: int = 1) -> tuple[str, Crypto]:
    """An ``a=crypto`` value with a fresh key of ``suite``, and its parsed form."""
    size = {"AEAD_AES_128_GCM": 28}.get(suite, 30)
    params = "inline:" + base64.b64encode(os.urandom(size)).decode()
    return f"{tag} {suite} {params}", Crypto(tag, suite, params)


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32",
                                   "AEAD_AES_128_GCM"])
async def test_tls_signalling_and_srtp_media(make_service, redis_client, pki, suite):
    svc = await tls_service(make_service, pki, srtp="require", tls_client_ca=str(pki["ca"]))
    line, crypto = key_line(suite)
    d = new_dialog()
    audio = encode_samples(real_speech(seconds=8.0), "mulaw")
    packets = rtp_packets(audio)
    sender = SrtpSender(crypto)
    secret = [sender.protect(p) for p in packets]
    tampered = bytearray(secret[5])
    tampered[-3] ^= 0x40  # fails authentication: dropped, not fed
    async with SiprecClient(svc.gw.tls_bound_port, "tls", client_context(pki)) as src, \
            RtpSender() as sbc:
        resp = await src.invite(d, sdp=sdp_offer(proto="RTP/SAVP", crypto=[
            "9 F8_128_HMAC_SHA1_80 inline:" + "A" * 40, line]))
        assert resp.status == 200, resp.get("Warning")
        assert ";transport=tls" in resp.get("Contact")
        answered = d.answer.media[0].crypto
        assert [(c.tag, c.suite) for c in answered] == [(1, suite)]
        assert answered[0].key_params != crypto.key_params  # a key of the server's own
        await sbc.send(d.ports[0], secret[:5] + [bytes(tampered)] + secret[5:])
        await asyncio.sleep(0.3)
        assert (await src.bye(d)).status == 200
    (s,) = await summaries(redis_client, d.call_id)
    assert s["summary"]["duration_s"] == pytest.approx(8.0, abs=0.03)
    got = await window_scores(redis_client, d.call_id)
    ref = await stream_samples(svc.url, real_speech(seconds=8.0), 8000, encoding="mulaw",
                               realtime=False)
    assert got == pytest.approx([w["score"]["spoof_probability"]
                                 for w in ref.of_type("window")], abs=1e-6)
    reg = svc.ctx.metrics.registry
    assert reg.get_sample_value("nes2net_siprec_rtp_packets_total", {"result": "invalid"}) == 1


async def test_mutual_tls_refuses_a_client_without_a_certificate(make_service, redis_client,
                                                                 pki):
    svc = await tls_service(make_service, pki, tls_client_ca=str(pki["ca"]))
    with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)):
        async with SiprecClient(svc.gw.tls_bound_port, "tls",
                                client_context(pki, cert=False)) as src:
            d = new_dialog()
            await src.invite(d)
    assert not svc.gw.calls


async def test_srtp_policies(make_service, redis_client, pki):
    svc = await tls_service(make_service, pki, srtp="require")
    async with SiprecClient(svc.gw.tls_bound_port, "tls", client_context(pki)) as src:
        plain = await src.invite(new_dialog())  # plain RTP where SRTP is required
        assert plain.status == 488 and "SRTP" in plain.get("Warning")
        line, _ = key_line("AES_CM_128_HMAC_SHA1_80")
        mki = line + "|2^20|1:4"  # a master key identifier: not supported
        resp = await src.invite(new_dialog(), sdp=sdp_offer(proto="RTP/SAVP", crypto=[mki]))
        assert resp.status == 488


async def test_tls_config_errors(make_service, pki, tmp_path):
    with pytest.raises(ConfigError, match="gateways.siprec.tls_cert"):
        await make_service(gateways={"siprec": {"enabled": True, "transports": ["tls"]}})
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="gateways.siprec.tls_cert"):
        await make_service(gateways={"siprec": {"enabled": True, "transports": ["tls"],
                                                "tls_cert": str(bad), "tls_key": str(bad)}})
    with pytest.raises(ConfigError, match="gateways.siprec.tls_client_ca"):
        await tls_service(make_service, pki, tls_client_ca=str(bad))
    # mutual TLS as the only transport counts as authentication beyond loopback
    svc = await tls_service(make_service, pki, host="0.0.0.0", tls_client_ca=str(pki["ca"]))
    assert svc.gw.tls_bound_port and svc.gw.bound_port == svc.gw.tls_bound_port
