"""The generic protocol's ``opus`` encoding: one Opus packet per binary message, real service."""

import contextlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import tone_bursts

from nes2net_stream.audio import av_codecs
from nes2net_stream.cli import cli
from nes2net_stream.client import start_message, stream_samples
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import Source
from nes2net_stream.service.protocol import parse_start

pytest.importorskip("av")


def decoded(packets: list[bytes], rate: int) -> np.ndarray:
    """What the service decodes from ``packets``: float samples at ``rate``."""
    dec = av_codecs.PacketDecoder("libopus", rate)
    pcm = b"".join(dec.decode(p) for p in packets)
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_opus_call_scored_as_its_decoded_audio(make_service, rate):
    svc = await make_service()
    x = tone_bursts(8.0, rate, seed=3)
    res = await stream_samples(svc.url, x, rate, encoding="opus", realtime=False)
    assert res.close_code == 1000 and not res.of_type("error")
    (summary,) = res.of_type("summary")
    packets = av_codecs.encode_packets("libopus", rate, x, bit_rate=32000)
    audio = decoded(packets, rate)
    assert summary["summary"]["duration_s"] == pytest.approx(len(audio) / rate, abs=0.002)
    ref = await stream_samples(svc.url, audio, rate, realtime=False)
    got = [w["score"]["spoof_probability"] for w in res.of_type("window")]
    want = [w["score"]["spoof_probability"] for w in ref.of_type("window")]
    assert len(got) >= 2 and got == pytest.approx(want, abs=1e-4)


async def test_bad_opus_input_is_refused(make_service):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    svc = await make_service()
    with pytest.raises(ProtocolError, match="mono"):
        parse_start(start_message("s", "opus", 16000, 2), source=Source("websocket", "t"))
    for packet in (b"", b"\xff" * 3):  # empty; a code-3 packet with an impossible frame count
        async with connect(svc.url) as ws:
            await ws.send(json.dumps(start_message("bad-opus", "opus", 16000)))
            await ws.recv()  # started
            await ws.send(packet)
            events = []
            with contextlib.suppress(ConnectionClosed):
                async for m in ws:
                    events.append(json.loads(m))
        errors = [e for e in events if e["type"] == "error"]
        assert errors and errors[0]["code"] == "bad_audio_frame"
        assert ws.close_code == 4400


def test_stream_command_refuses_opus_for_two_parties(tmp_path):
    import soundfile as sf

    wav = tmp_path / "two.wav"
    sf.write(wav, np.zeros((8000, 2), np.float32), 8000)
    out = CliRunner().invoke(cli, ["stream", str(wav), "--encoding", "opus",
                                        "--channels", "caller,agent"])
    assert out.exit_code == 2 and "mono" in out.output
