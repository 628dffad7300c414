import json
import tarfile

import pytest
import torch
from helpers import tiny_hf_config
from safetensors.torch import save_file

from nes2net_stream import load_model, save_model
from nes2net_stream.bundle import FORMAT_VERSION, archive_bundle
from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import BackendConfig, SpectralConfig, SSLConfig
from nes2net_stream.models.detector import Calibration, Detector


def small_detector(**kw) -> Detector:
    torch.manual_seed(0)
    return Detector(SpectralConfig(n_features=32), BackendConfig(input_dim=32, outer_ratio=4,
                    inner_ratio=2, se_ratio=2), model_id="test-model", **kw).eval()


@pytest.fixture()
def bundle(tmp_path):
    return save_model(small_detector(calibration=Calibration(scale=0.5, offset=-1.0, fitted=True)),
                      tmp_path / "bundle")


def test_round_trip_gives_identical_scores(bundle):
    det = small_detector()
    x = torch.randn(2, 16000) * 0.1
    loaded = load_model(bundle)
    assert loaded.model_id == "test-model"
    assert torch.equal(det(x), loaded(x))
    assert loaded.calibration.fitted and loaded.calibration.scale == 0.5
    s = loaded.score(x)
    assert torch.allclose(s.llr, 0.5 * s.raw - 1.0)


def test_ssl_bundle_round_trip(tmp_path):
    torch.manual_seed(1)
    det = Detector(SSLConfig(family="wavlm", aggregation="sea", hf_config=tiny_hf_config("wavlm")),
                   BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2)).eval()
    path = save_model(det, tmp_path / "ssl")
    x = torch.randn(1, 8000) * 0.1
    assert torch.allclose(load_model(path)(x), det(x), atol=1e-6)


def test_archive_round_trip(bundle, tmp_path):
    archive = archive_bundle(bundle, tmp_path / "model.tar.gz")
    x = torch.randn(1, 16000) * 0.1
    assert torch.equal(load_model(archive)(x), load_model(bundle)(x))


def test_uncalibrated_bundle_has_empty_calibration(tmp_path):
    path = save_model(small_detector(), tmp_path / "b")
    assert json.loads((path / "calibration.json").read_text()) == {}
    assert not load_model(path).calibration.fitted


def _edit_config(bundle, **changes):
    cfg = json.loads((bundle / "config.json").read_text())
    cfg.update(changes)
    (bundle / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("mutate,match", [
    (lambda b: (b / "config.json").unlink(), "no config.json"),
    (lambda b: (b / "config.json").write_text("{not json"), "corrupt JSON"),
    (lambda b: _edit_config(b, format="other"), "not a nes2net-stream-bundle"),
    (lambda b: _edit_config(b, format_version=FORMAT_VERSION + 1), "newer than"),
    (lambda b: _edit_config(b, format_version="1"), "invalid format_version"),
    (lambda b: (b / "model.safetensors").write_bytes(b"garbage"), "checksum mismatch"),
    (lambda b: (b / "model.safetensors").unlink(), "missing file model.safetensors"),
    (lambda b: (b / "calibration.json").write_text("[1"), "corrupt JSON"),
    (lambda b: (b / "calibration.json").write_text('{"scale": "x"}'), "calibration.scale"),
    (lambda b: _edit_config(b, backend={**json.loads((b / "config.json").read_text())["backend"],
                                        "pooling": "max"}), "backend.pooling"),
    (lambda b: _edit_config(b, frontend={"type": "mystery"}), "frontend.type"),
])
def test_corrupt_bundles_give_clear_errors(bundle, mutate, match):
    mutate(bundle)
    with pytest.raises(BundleError, match=match):
        load_model(bundle)


def test_mismatched_weights_are_listed(bundle):
    import hashlib

    state = {k: v for k, v in small_detector().state_dict().items() if "fc." not in k}
    state["extra.weight"] = torch.zeros(3)
    state["backend.bn.weight"] = torch.zeros(7)
    save_file(state, str(bundle / "model.safetensors"))
    digest = hashlib.sha256((bundle / "model.safetensors").read_bytes()).hexdigest()
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["sha256"]["model.safetensors"] = digest
    (bundle / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError) as err:
        load_model(bundle)
    msg = str(err.value)
    assert "2 missing: backend.fc.bias, backend.fc.weight" in msg
    assert "1 unexpected: extra.weight" in msg
    assert "backend.bn.weight: (7,) != (32,)" in msg


def test_missing_and_unsafe_paths(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(BundleError, match="unknown built-in model"):
        load_model("builtin:nothing")
    bad = tmp_path / "evil.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        src = tmp_path / "x.txt"
        src.write_text("x")
        tf.add(src, arcname="../../escape.txt")
    with pytest.raises(BundleError, match="unsafe path"):
        load_model(bad)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BundleError):
        load_model(junk)


def test_save_refuses_to_overwrite(bundle):
    with pytest.raises(BundleError, match="not empty"):
        save_model(small_detector(), bundle)
    save_model(small_detector(), bundle, overwrite=True)
