"""The bundled demo model: real scores on real audio, through the CLI and the live service."""

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nes2net_stream.bundle import load_model
from nes2net_stream.cli import cli
from nes2net_stream.client import stream_file
from nes2net_stream.demo import sample_path

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def demo():
    return load_model("builtin:demo")


def test_demo_bundle_is_small_calibrated_and_documented(demo):
    bundle = Path(__file__).resolve().parents[1] / "nes2net_stream" / "assets" / "demo-model"
    size = sum(p.stat().st_size for p in bundle.iterdir())
    assert size <= 10 * 1024 * 1024
    assert demo.calibration.fitted
    assert (bundle / "MODEL_CARD.md").read_text().startswith("# Model card")


def test_score_separates_human_and_synthetic_clip_of_the_same_text():
    runner = CliRunner()
    out = runner.invoke(cli, ["score", str(FIXTURES / "human_short.wav"),
                              str(FIXTURES / "synthetic_short.wav"), "--json"])
    assert out.exit_code == 0, out.output
    human, synthetic = (json.loads(line) for line in out.output.strip().splitlines())
    for r in (human, synthetic):
        assert {"file", "spoof_probability", "llr", "windows"} <= set(r)
        assert all({"start_s", "end_s", "spoof_probability", "llr"} <= set(w)
                   for w in r["windows"])
    assert synthetic["spoof_probability"] > 0.8 > 0.2 > human["spoof_probability"]
    assert synthetic["llr"] - human["llr"] > 3.0


async def test_sample_calls_end_in_spoof_and_bona_fide(make_service):
    svc = await make_service(model={"path": "builtin:demo"})
    human, synthetic = await asyncio.gather(
        stream_file(svc.url, sample_path("human_call.wav"), call_id="human", encoding="mulaw",
                    realtime=True, speed=4.0),
        stream_file(svc.url, sample_path("synthetic_call.wav"), call_id="synthetic",
                    encoding="mulaw", realtime=True, speed=4.0))
    assert human.summary["summary"]["final_state"] == "bona_fide"
    # one state for the whole call: no state before two windows, then bona fide throughout
    assert [e["state"] for e in human.of_type("state")] == ["bona_fide"]
    assert human.of_type("window")[0]["state"] is None
    assert synthetic.summary["summary"]["final_state"] == "spoof"
    assert any(e["type"] == "state" and e["state"] == "spoof" for e in synthetic.events)
