"""Score calibrations per ingress ([scoring] calibrations) and how they are made and checked."""

import asyncio
import json
import math

import pytest
from fuzzing import FUZZ, json_values
from helpers import tone_bursts
from hypothesis import example, given
from hypothesis import strategies as st

from nes2net_stream.cli import main
from nes2net_stream.client import stream_samples
from nes2net_stream.errors import BundleError, ConfigError
from nes2net_stream.models.detector import Calibration
from nes2net_stream.service.calibrations import (
    check_ingress_names,
    load_calibrations,
    pick_calibration,
)


def write(path, **fields):
    path.write_text(json.dumps(fields))
    return path


def test_a_calibration_file_is_read_and_checked(tmp_path):
    good = write(tmp_path / "c.json", scale=0.8, offset=-0.1, fitted=True, spoof_prior=0.2)
    cal = Calibration.read(good)
    assert (cal.scale, cal.offset, cal.spoof_prior) == (0.8, -0.1, 0.2)
    # probability at the calibration's prior: sigmoid(llr + logit(prior))
    assert cal.probability(1.0) == pytest.approx(1 / (1 + math.exp(-(1.0 + math.log(0.25)))))
    assert cal.probability(-1e6) < 1e-300 and cal.probability(1e6) == 1.0  # no overflow
    with pytest.raises(BundleError, match="cannot read"):
        Calibration.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BundleError, match="not JSON"):
        Calibration.read(tmp_path / "bad.json")
    with pytest.raises(BundleError, match="unknown key"):
        Calibration.read(write(tmp_path / "k.json", scale=1, offset=0, fitted=True, bias=1))
    with pytest.raises(BundleError, match="not fitted"):
        Calibration.read(write(tmp_path / "u.json", scale=1, offset=0))


def test_configured_calibrations_fail_naming_the_key(tmp_path):
    good = write(tmp_path / "c.json", scale=1.0, offset=0.0, fitted=True)
    cals = load_calibrations({"webrtc": str(good)})
    assert set(cals) == {"webrtc"}
    with pytest.raises(ConfigError, match=r"scoring\.calibrations\.twilio: .*cannot read"):
        load_calibrations({"twilio": str(tmp_path / "nope.json")})
    check_ingress_names(cals, ["twilio"])
    with pytest.raises(ConfigError, match=r"scoring\.calibrations\.twillio: no ingress"):
        check_ingress_names({"twillio": cals["webrtc"]}, ["twilio", "genesys"])


async def test_calls_of_a_calibrated_ingress_map_raw_scores_through_it(make_service, tmp_path):
    # a deliberately extreme calibration: every window of a generic call is spoof evidence
    cal = write(tmp_path / "c.json", scale=0.5, offset=4.0, fitted=True, spoof_prior=0.5)
    svc = await make_service(scoring={"calibrations": {"generic": str(cal)}})
    got = await stream_samples(svc.url, tone_bursts(8.0, 8000), 8000, call_id="cal-1",
                               realtime=False)
    windows = got.of_type("window")
    assert len(windows) >= 3
    for ev in windows:
        s = ev["score"]
        assert s["calibration"] == "generic"
        assert s["llr"] == pytest.approx(0.5 * s["raw"] + 4.0, abs=2e-5)
        assert s["spoof_probability"] == pytest.approx(1 / (1 + math.exp(-s["llr"])), abs=2e-5)
    assert got.summary["summary"]["final_state"] == "spoof"
    # the state counter by state and ingress (what a per-ingress alert rule watches)
    registry = svc.ctx.metrics.registry
    entered = {state: registry.get_sample_value(
        "nes2net_state_changes_total", {"state": state, "gateway": "generic"})
        for state in ("suspicious", "spoof")}
    states = [e["state"] for e in got.of_type("state")]
    assert entered["spoof"] == states.count("spoof") == 1
    assert (entered["suspicious"] or 0) == states.count("suspicious")


async def test_calls_of_other_ingresses_keep_the_models_calibration(make_service, tmp_path):
    cal = write(tmp_path / "c.json", scale=0.5, offset=4.0, fitted=True)
    svc = await make_service(scoring={"calibrations": {"webrtc": str(cal)}})
    got = await stream_samples(svc.url, tone_bursts(6.0, 8000), 8000, call_id="cal-2",
                               realtime=False)
    model = svc.ctx.engine.detector.calibration
    for ev in got.of_type("window"):
        assert "calibration" not in ev["score"]
        assert ev["score"]["llr"] == pytest.approx(
            model.scale * ev["score"]["raw"] + model.offset, abs=2e-5)


def test_a_calls_metadata_can_pick_its_calibration():
    cals = {"g729": Calibration(scale=1.0, offset=2.0, fitted=True),
            "generic": Calibration(scale=1.0, offset=-1.0, fitted=True)}
    pick = pick_calibration
    assert pick(cals, "custom.codec", "twilio", {"custom": {"codec": "g729"}})[0] == "g729"
    assert pick(cals, "custom.codec", "generic", {"custom": {"codec": "opus"}})[0] == "generic"
    assert pick(cals, "custom.codec", "twilio", {"custom": "g729"}) is None  # not a table
    assert pick(cals, "custom.codec", "twilio", {"custom": {"codec": ["g729"]}}) is None
    assert pick(cals, "", "generic", {"custom": {"codec": "g729"}})[0] == "generic"
    # names that are no ingress are values calls may carry once a key is set
    check_ingress_names({"g729": cals["g729"]}, ["twilio"], by_metadata=True)


async def test_a_generic_call_picks_its_calibration_from_metadata(make_service, tmp_path):
    cal = write(tmp_path / "c.json", scale=1.0, offset=-6.0, fitted=True)
    svc = await make_service(scoring={"calibrations": {"g729": str(cal)},
                                      "calibration_key": "trunk.codec"})
    x = tone_bursts(6.0, 8000)
    tagged, plain = await asyncio.gather(
        stream_samples(svc.url, x, 8000, call_id="cal-m1", realtime=False,
                       metadata={"trunk": {"codec": "g729"}}),
        stream_samples(svc.url, x, 8000, call_id="cal-m2", realtime=False,
                       metadata={"trunk": {"codec": "pcmu"}}))
    for ev in tagged.of_type("window"):
        assert ev["score"]["calibration"] == "g729"
        assert ev["score"]["llr"] == pytest.approx(ev["score"]["raw"] - 6.0, abs=2e-5)
    assert tagged.summary["summary"]["final_state"] == "bona_fide"
    assert all("calibration" not in ev["score"] for ev in plain.of_type("window"))


async def test_a_calibration_for_an_unknown_ingress_stops_the_start(make_service, tmp_path):
    cal = write(tmp_path / "c.json", scale=1.0, offset=0.0, fitted=True)
    with pytest.raises(ConfigError, match=r"scoring\.calibrations\.twillio"):
        await make_service(scoring={"calibrations": {"twillio": str(cal)}})


def test_eval_writes_a_calibration_fitted_through_a_channel(tmp_path, toy_corpus, capsys):
    out = tmp_path / "cal" / "alaw.json"
    code = main(["eval", "--model", "builtin:demo", "--database", str(toy_corpus),
                 "--channel", "alaw", "--calibrate-on", "dev", "--calibration-out", str(out),
                 "--bootstrap", "0", "--out", str(tmp_path / "ev")])
    assert code == 0, capsys.readouterr().err
    cal = Calibration.read(out)
    assert cal.fitted and cal.details["source"].endswith("/dev (4s) through alaw")
    code = main(["eval", "--model", "builtin:demo", "--database", str(toy_corpus),
                 "--calibration-out", str(out)])
    assert code == 2 and "--calibration-out needs --calibrate-on" in capsys.readouterr().err


@FUZZ
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       st.sampled_from(["custom.codec", "codec", "a.b.c", "custom..codec", "."]))
@example({"custom": {"codec": "g729"}}, "custom.codec")
@example({"custom": {"codec": {"g729": 1}}}, "custom.codec")  # unhashable value
def test_picking_a_calibration_never_fails_on_any_metadata(metadata, key):
    """Metadata comes from the network: any JSON there picks a configured calibration or none."""
    cals = {"g729": Calibration(scale=1.0, offset=2.0, fitted=True)}
    picked = pick_calibration(cals, key, "twilio", metadata)
    assert picked is None or (picked[0] == "g729" and picked[1] is cals["g729"])
