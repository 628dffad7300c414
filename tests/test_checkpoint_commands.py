"""Converted official checkpoints through the command line: convert, score, eval, train, serve."""

import asyncio
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import tone_bursts
from official_reference import Geometry, official_state, pad_repeat, reference_logits

from nes2net_stream.bundle import load_model
from nes2net_stream.cli import main

SVDD = Geometry(conv_bias=False, wavlm=True, dilation=1, n_logits=1, aggregation="sea")
XLSR = Geometry(conv_bias=True, wavlm=False, dilation=2, n_logits=2)
PREFIX = {"wavlm-large-nes2net-x": "ssl_model.model.model.", "xlsr300m-nes2net-x":
          "ssl_model.model."}
GEOMETRY = {"wavlm-large-nes2net-x": SVDD, "xlsr300m-nes2net-x": XLSR}


def run(capsys, *args) -> str:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Official-format tiny checkpoints on disk and their converted bundles."""
    root = tmp_path_factory.mktemp("official")
    made = {}
    for arch, g in GEOMETRY.items():
        state = official_state(g, PREFIX[arch], seed=7, pretraining_extras=arch.startswith("x"))
        ckpt = root / f"{arch}.pth"
        torch.save(state, ckpt)
        geometry = root / f"{arch}-ssl.json"
        geometry.write_text(json.dumps(g.hf_overrides()))
        bundle = root / f"{arch}-bundle"
        code = main(["convert-checkpoint", str(ckpt), "--arch", arch, "--out", str(bundle),
                     "--ssl-config", str(geometry), "--outer-ratio", "4", "--inner-ratio", "4",
                     "--json"])
        assert code == 0
        made[arch] = (state, ckpt, bundle)
    return made


def test_convert_writes_an_uncalibrated_bundle_with_provenance(converted, capsys, tmp_path):
    state, ckpt, bundle = converted["xlsr300m-nes2net-x"]
    config = json.loads((bundle / "config.json").read_text())
    source = config["metadata"]["source"]
    assert source["arch"] == "xlsr300m-nes2net-x" and source["file"] == ckpt.name
    assert len(source["sha256"]) == 64 and source["ignored_tensors"] == 8
    assert config["frontend"]["last_hidden_state"] == "layer_output"
    assert json.loads((bundle / "calibration.json").read_text()) == {}
    assert "no licence file" in (bundle / "MODEL_CARD.md").read_text()
    assert not load_model(bundle).calibration.fitted
    info = json.loads(run(capsys, "model", "info", bundle))
    assert info["frontend"]["hf_config"]["hidden_size"] == 64
    assert info["parameters"]["backend"] == sum(
        v.numel() for k, v in state.items()
        if k.startswith("Nested_Res2Net_TDNN.") and "running_" not in k
        and "num_batches" not in k)
    # the human-readable report, and a refusal to overwrite without --overwrite
    out = run(capsys, "convert-checkpoint", ckpt, "--arch", "xlsr300m-nes2net-x", "--out",
              tmp_path / "b", "--ssl-config", bundle.parent / "xlsr300m-nes2net-x-ssl.json",
              "--outer-ratio", 4, "--inner-ratio", 4, "--model-id", "mine")
    assert "8 ignored (pre-training only)" in out and "model id mine" in out
    assert main(["convert-checkpoint", str(ckpt), "--arch", "xlsr300m-nes2net-x", "--out",
                 str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_convert_reports_a_wrong_architecture(converted, capsys, tmp_path):
    _, ckpt, _ = converted["wavlm-large-nes2net-x"]
    code = main(["convert-checkpoint", str(ckpt), "--arch", "wavlm-large-nes2net-x",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "mis-shaped" in err and "outer_ratio=4" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("arch", list(GEOMETRY))
def test_score_all_modes_on_a_converted_bundle(converted, capsys, tmp_path, arch):
    state, _, bundle = converted[arch]
    path = tmp_path / "call.wav"
    sf.write(path, tone_bursts(5.0, 16000, seed=2), 16000, subtype="FLOAT")
    x = torch.from_numpy(sf.read(path, dtype="float32")[0])
    g = GEOMETRY[arch]
    for mode in ("windows", "4s", "full"):
        line = run(capsys, "score", path, "--model", bundle, "--mode", mode, "--json")
        result = json.loads(line)
        assert result["calibrated"] is False and result["llr"] is not None, mode
        if mode == "windows":
            assert len(result["windows"]) >= 1
            continue
        crop = json.loads((bundle / "config.json").read_text())["metadata"]["source"][
            "official_crop_samples"]  # each official repository's own fixed test length
        wave = pad_repeat(x, crop) if mode == "4s" else x
        with torch.no_grad():
            ref = reference_logits(state, wave[None], g, PREFIX[arch], s3prl=arch[0] == "w")
        assert result["windows"][0]["bona_fide_logit"] == pytest.approx(float(ref[0, -1]),
                                                                         abs=2e-4)


def test_eval_calibrates_a_converted_bundle(converted, capsys, tmp_path, toy_corpus):
    _, _, src = converted["wavlm-large-nes2net-x"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for f in src.iterdir():
        (bundle / f.name).write_bytes(f.read_bytes())
    out = run(capsys, "eval", "--model", bundle, "--database", toy_corpus, "--split", "eval",
              "--calibrate-on", "dev", "--save-calibration", "--out", tmp_path / "ev")
    assert "EER" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["calibrated"] is True and 0.0 <= metrics["metrics"]["eer"] <= 1.0
    assert metrics["metrics"]["n_bonafide"] == metrics["metrics"]["n_spoof"] == 12
    assert load_model(bundle).calibration.fitted


def test_train_fine_tunes_a_converted_bundle(converted, capsys, tmp_path, toy_corpus):
    _, _, bundle = converted["wavlm-large-nes2net-x"]
    out_bundle = tmp_path / "tuned"
    run(capsys, "train", "--database", toy_corpus, "--run-dir", tmp_path / "run",
        "--init-model", bundle, "--out", out_bundle, "--epochs", 1, "--batch-size", 4,
        "--max-batches", 2, "--segment-s", 1.0, "--limit-dev", 8, "--average-best", 1,
        "--no-augment", "--no-calibrate", "--device", "cpu", "--no-progress",
        "--frontend-lr", 1e-3)
    before, after = load_model(bundle), load_model(out_bundle)
    assert after.describe()["frontend"] == before.describe()["frontend"]
    assert after.metadata["source"] == before.metadata["source"]
    b, a = before.state_dict(), after.state_dict()
    assert not torch.equal(b["backend.fc.weight"], a["backend.fc.weight"])
    ssl = "frontend.model.encoder.layers.0.attention.k_proj.weight"
    assert not torch.equal(b[ssl], a[ssl])  # the SSL model is fine-tuned too


def test_service_context_scores_a_window_with_a_converted_bundle(converted):
    from nes2net_stream.config import load_settings
    from nes2net_stream.service.server import build_context

    state, _, bundle = converted["wavlm-large-nes2net-x"]
    settings = load_settings(None, environ={}, overrides={"model": {"path": str(bundle)}})
    ctx = build_context(settings)
    window = np.random.default_rng(4).standard_normal(64_000).astype(np.float32) * 0.1

    async def score_one():
        ctx.engine.start()
        try:
            return await asyncio.wait_for(ctx.engine.submit(window), 30)
        finally:
            ctx.engine.stop()

    result = asyncio.run(score_one())
    with torch.no_grad():
        ref = reference_logits(state, torch.from_numpy(window)[None], SVDD,
                               PREFIX["wavlm-large-nes2net-x"], s3prl=True)
    assert ctx.engine.model_id == "wavlm-large-nes2net-x-wavlm-large-nes2net-x"
    assert result.bona_fide_logit == pytest.approx(float(ref[0, 0]), abs=1e-4)
    assert result.raw == pytest.approx(-float(ref[0, 0]), abs=1e-4)


def test_geometry_file_errors_are_user_errors(converted, capsys, tmp_path):
    _, ckpt, _ = converted["xlsr300m-nes2net-x"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code = main(["convert-checkpoint", str(ckpt), "--arch", "xlsr300m-nes2net-x", "--out",
                 str(tmp_path / "o"), "--ssl-config", str(bad)])
    assert code == 2 and "expected a JSON object" in capsys.readouterr().err
