"""A window scored while streaming gets the same score as `nes2net-stream score` on the same
audio: both use the same per-channel pipeline and model."""

import json

import pytest
import soundfile as sf
from click.testing import CliRunner
from helpers import tone_bursts

from nes2net_stream.cli import cli
from nes2net_stream.client import stream_file


@pytest.mark.parametrize("rate,encoding", [(16000, "pcm_s16le"), (8000, "pcm_s16le"),
                                           (8000, "mulaw")])
async def test_streamed_windows_match_file_scoring(make_service, small_bundle, tmp_path, rate,
                                                   encoding):
    from nes2net_stream.audio import g711
    from nes2net_stream.audio.io import float_to_pcm16

    x = tone_bursts(9.0, rate, seed=7)
    if encoding == "mulaw":  # the file holds exactly what the phone line carries
        x = g711.mulaw_decode(g711.mulaw_encode(float_to_pcm16(x))) / 32768.0
    path = tmp_path / "call.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    svc = await make_service()
    streamed = await stream_file(svc.url, path, sample_rate=rate, encoding=encoding,
                                 realtime=False)
    out = CliRunner().invoke(cli, ["score", str(path), "--model", str(small_bundle), "--json"])
    assert out.exit_code == 0, out.output
    scored = json.loads(out.output.strip().splitlines()[-1])
    live = streamed.of_type("window")
    assert len(live) == len(scored["windows"]) >= 4
    for ev, win in zip(live, scored["windows"], strict=True):
        assert ev["window"]["start_s"] == pytest.approx(win["start_s"], abs=1e-3)
        assert ev["window"]["end_s"] == pytest.approx(win["end_s"], abs=1e-3)
        assert ev["score"]["spoof_probability"] == pytest.approx(win["spoof_probability"],
                                                                 abs=1e-4)
        assert ev["score"]["llr"] == pytest.approx(win["llr"], abs=1e-3)
    running = streamed.summary["running"]["llr"]
    assert running == pytest.approx(scored["llr"], abs=1e-3)
