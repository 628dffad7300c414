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


async def test_a_stereo_recording_scores_each_party_as_streaming_does(make_service,
                                                                      small_bundle, tmp_path):
    """``score --channel each`` and ``stream --channels caller,agent`` (the same stereo file)
    give each party the same windows; a party who never spoke gets no score, not an error."""
    import numpy as np

    x = np.stack([tone_bursts(9.0, 8000, seed=1), tone_bursts(9.0, 8000, seed=2)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, x, 8000, subtype="PCM_16")
    svc = await make_service()
    streamed = await stream_file(svc.url, path, sample_rate=8000, realtime=False,
                                 channel_roles=["caller", "agent"])
    out = CliRunner().invoke(cli, ["score", str(path), "--model", str(small_bundle), "--json",
                                   "--channel", "each"])
    assert out.exit_code == 0, out.output
    scored = [json.loads(line) for line in out.output.strip().splitlines()[-2:]]
    assert [s["channel"] for s in scored] == [0, 1]
    for role, file_score in zip(("caller", "agent"), scored, strict=True):
        live = [e for e in streamed.of_type("window") if e["channel"] == role]
        assert len(live) == len(file_score["windows"]) >= 4, role
        for ev, win in zip(live, file_score["windows"], strict=True):
            assert ev["score"]["spoof_probability"] == pytest.approx(
                win["spoof_probability"], abs=1e-4)
    quiet = tmp_path / "one-party.wav"
    sf.write(quiet, np.stack([x[:, 0], np.zeros(len(x))], axis=1), 8000, subtype="PCM_16")
    out = CliRunner().invoke(cli, ["score", str(quiet), "--model", str(small_bundle),
                                   "--channel", "each"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()[-2:]
    assert lines[0].startswith(f"{quiet}[0]\tspoof_probability=")
    assert lines[1].startswith(f"{quiet}[1]\tno score")
