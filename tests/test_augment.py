"""RawBoost and TelephoneAugment on real speech: effect, bounds, reproducibility, config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nes2net_stream.audio.codecs import CODECS, available_codecs
from nes2net_stream.audio.io import load_audio
from nes2net_stream.data.augment import (
    AugmentConfig,
    TelephoneAugment,
    coloured_noise,
    packet_loss,
)
from nes2net_stream.data.rawboost import (
    RawBoostParams,
    isd_additive_noise,
    lnl_convolutive_noise,
    rawboost,
    ssi_additive_noise,
)
from nes2net_stream.errors import AudioError, ConfigError, DependencyError

FS = 16000
SPEECH_FILES = [
    Path("/usr/share/pocketsphinx/test/data/librivox/"
         "sense_and_sensibility_01_austen_64kb-0880.wav"),
    Path("/usr/share/codec2/wav/hts1a.wav"),
]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    for path in SPEECH_FILES:
        if path.exists():
            x = load_audio(path, sample_rate=FS).samples[: 2 * FS]
            return (0.5 * x / np.max(np.abs(x))).astype(np.float32)  # peak 0.5
    pytest.skip("no speech recording found (install pocketsphinx-testdata)")


def _band_energy(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / FS)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum() / spectrum.sum())


# ----------------------------------------------------------------------------- RawBoost

@pytest.mark.parametrize("algo", range(1, 9))
def test_rawboost_algo_changes_signal_bounded_and_reproducible(algo: int, speech) -> None:
    y = rawboost(speech, FS, algo, np.random.default_rng(7))
    assert y.dtype == np.float32 and y.shape == speech.shape
    assert np.all(np.isfinite(y)) and float(np.max(np.abs(y))) <= 1.0
    assert float(np.max(np.abs(y - speech))) > 1e-3
    np.testing.assert_array_equal(y, rawboost(speech, FS, algo, np.random.default_rng(7)))
    assert not np.array_equal(y, rawboost(speech, FS, algo, np.random.default_rng(8)))


def test_rawboost_algo_0_is_identity(speech) -> None:
    np.testing.assert_array_equal(rawboost(speech, FS, 0, np.random.default_rng(0)), speech)


@pytest.mark.parametrize("seed", range(5))
def test_ssi_snr_within_configured_range(seed: int, speech) -> None:
    params = RawBoostParams(min_snr_db=15.0, max_snr_db=25.0)
    x = speech.astype(np.float64)
    noise = ssi_additive_noise(x, FS, np.random.default_rng(seed), params) - x
    snr = 20 * np.log10(np.linalg.norm(x) / np.linalg.norm(noise))
    assert 15.0 - 1e-6 <= snr <= 25.0 + 1e-6


def test_ssi_fixed_snr_is_exact(speech) -> None:
    params = RawBoostParams(min_snr_db=20.0, max_snr_db=20.0)
    x = speech.astype(np.float64)
    noise = ssi_additive_noise(x, FS, np.random.default_rng(1), params) - x
    assert 20 * np.log10(np.linalg.norm(x) / np.linalg.norm(noise)) == pytest.approx(20.0)


def test_isd_touches_at_most_p_percent(speech) -> None:
    params = RawBoostParams(max_impulse_percent=4.0)
    x = speech.astype(np.float64)
    for seed in range(5):
        changed = np.count_nonzero(isd_additive_noise(x, np.random.default_rng(seed), params) != x)
        assert 0 < changed <= 0.04 * len(x)


def test_lnl_linear_order_is_a_filter(speech) -> None:
    # With N=1 the distortion is one notch filter at 0 dB peak gain: zero mean, no more energy.
    params = RawBoostParams(n_orders=1)
    x = speech.astype(np.float64)
    y = lnl_convolutive_noise(x, FS, np.random.default_rng(3), params)
    assert abs(float(np.mean(y))) < 1e-12
    assert np.sum(y**2) <= np.sum((x - x.mean()) ** 2) * 1.0001
    assert np.corrcoef(x, y)[0, 1] > 0.5


def test_rawboost_errors(speech) -> None:
    with pytest.raises(ConfigError, match="algo must be one of"):
        rawboost(speech, FS, 9, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="rawboost.min_snr_db"):
        RawBoostParams(min_snr_db=30.0, max_snr_db=10.0)
    with pytest.raises(ConfigError, match="unknown rawboost key"):
        RawBoostParams.from_dict({"snr": 3})
    with pytest.raises(AudioError):
        rawboost(np.array([np.nan, 0.0]), FS, 1, np.random.default_rng(0))


# ----------------------------------------------------------------------------- TelephoneAugment

def _only(**kwargs) -> TelephoneAugment:
    base = AugmentConfig.off().to_dict()
    base.update(kwargs)
    return TelephoneAugment(AugmentConfig.from_dict(base))


def test_default_augment_is_reproducible_bounded_and_same_length(speech) -> None:
    aug = TelephoneAugment()
    loud = np.clip(speech * 4.0, -1.0, 1.0)
    seen: set[str] = set()
    for seed in range(6):
        y, steps = aug.apply(loud, np.random.default_rng(seed))
        assert y.dtype == np.float32 and y.shape == loud.shape
        assert np.all(np.isfinite(y)) and float(np.max(np.abs(y))) <= 1.0
        np.testing.assert_array_equal(y, aug(loud, np.random.default_rng(seed)))
        seen.update(steps)
    assert len(seen) >= 4  # the default mix runs several different steps


def test_off_is_identity(speech) -> None:
    y, steps = TelephoneAugment(AugmentConfig.off()).apply(speech, np.random.default_rng(0))
    assert steps == []
    np.testing.assert_array_equal(y, speech)


def test_rawboost_step(speech) -> None:
    y, steps = _only(rawboost_prob=1.0, rawboost_algo=3).apply(speech, np.random.default_rng(0))
    assert steps == ["rawboost3"] and float(np.max(np.abs(y - speech))) > 1e-3


def test_gain_step_is_exact(speech) -> None:
    y, steps = _only(gain_prob=1.0, gain_db=[6.0, 6.0]).apply(speech, np.random.default_rng(0))
    assert steps == ["gain"]
    np.testing.assert_allclose(y, np.clip(speech * 10 ** (6 / 20), -1, 1), atol=1e-6)


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_noise_step_snr_and_colour(color: str, speech) -> None:
    aug = _only(noise_prob=1.0, noise_snr_db=[18.0, 22.0], noise_colors=[color])
    y, steps = aug.apply(speech, np.random.default_rng(0))
    assert steps == [f"noise_{color}"]
    noise = y.astype(np.float64) - speech
    snr = 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise**2))
    assert 18.0 - 0.01 <= snr <= 22.0 + 0.01
    high = _band_energy(noise, 2000, 8000)  # white: 3/4 of the power; pink and brown far less
    assert {"white": high > 0.7, "pink": 0.02 < high < 0.4, "brown": high < 0.02}[color], high


def test_clipping_step(speech) -> None:
    y, steps = _only(clipping_prob=1.0, clip_fraction=[0.5, 0.5]).apply(
        speech, np.random.default_rng(0))
    assert steps == ["clipping"]
    assert float(np.max(np.abs(y))) == pytest.approx(0.25, abs=1e-6)  # half of the 0.5 peak


def test_bandlimit_step(speech) -> None:
    y, steps = _only(bandlimit_prob=1.0).apply(speech, np.random.default_rng(0))
    assert steps == ["bandlimit"]
    assert _band_energy(y, 4500, 8000) < 0.05 * _band_energy(speech, 4500, 8000)
    assert _band_energy(y, 0, 60) < 0.05 * _band_energy(speech, 0, 60)


def test_narrowband_step(speech) -> None:
    y, steps = _only(narrowband_prob=1.0).apply(speech, np.random.default_rng(0))
    assert steps == ["narrowband"] and y.shape == speech.shape
    assert _band_energy(y, 4100, 8000) < 1e-4 < 0.01 < _band_energy(speech, 4100, 8000)


def test_codec_step_draws_configured_codecs_and_bitrates(speech) -> None:
    aug = _only(codec_prob=1.0, codecs={"g726": 1.0, "mulaw": 0.0},
                codec_bitrates={"g726": [16000]})
    assert aug.codecs == ["g726"]
    y, steps = aug.apply(speech, np.random.default_rng(0))
    assert steps == ["codec_g726_16000"] and float(np.max(np.abs(y - speech))) > 1e-3


def test_packet_loss_step_repeats_packets(speech) -> None:
    y, steps = _only(packet_loss_prob=1.0, packet_loss_rate=0.2, packet_ms=[20.0, 20.0]).apply(
        speech, np.random.default_rng(0))
    assert steps == ["packet_loss"]
    packets = y.reshape(-1, 320)  # 2 s at 20 ms per packet
    changed = [i for i in range(len(packets)) if not np.array_equal(packets[i],
                                                                    speech.reshape(-1, 320)[i])]
    assert 0 < len(changed) < len(packets) // 2
    for i in changed:  # each lost packet repeats the one before it, faded in a run of losses
        ratio = packets[i] / np.where(packets[i - 1] == 0, 1, packets[i - 1])
        assert np.allclose(ratio[packets[i - 1] != 0], ratio[packets[i - 1] != 0][0], atol=1e-4)


def test_packet_loss_always_drops_one_packet() -> None:
    x = np.arange(100, dtype=np.float64)
    y = packet_loss(x, 10, 0.0, np.random.default_rng(0))
    assert np.count_nonzero(y != x) > 0 and y[:10].tolist() == x[:10].tolist()


def test_coloured_noise_is_zero_mean() -> None:
    for color in ("white", "pink", "brown"):
        n = coloured_noise(16000, color, np.random.default_rng(0))
        assert n.shape == (16000,) and abs(float(n.mean())) < 0.05 * float(n.std())


def test_config_round_trip_through_json() -> None:
    config = AugmentConfig(codec_prob=0.7, codecs={"gsm": 2.0, "opus": 1.0},
                           codec_bitrates={"opus": (8000, 12000)},
                           rawboost=RawBoostParams(min_snr_db=5.0))
    data = json.loads(json.dumps(config.to_dict()))
    assert AugmentConfig.from_dict(data) == config
    assert data["rawboost"]["min_snr_db"] == 5.0 and data["codec_bitrates"] == {"opus": [8000,
                                                                                         12000]}


@pytest.mark.parametrize("data,key", [
    ({"codec_prob": 1.5}, "augment.codec_prob"),
    ({"gain_db": [6, -6]}, "augment.gain_db"),
    ({"gain_db": "loud"}, "augment.gain_db"),
    ({"noise_prob": "often"}, "augment.noise_prob"),
    ({"rawboost_algo": 12}, "augment.rawboost_algo"),
    ({"codecs": {"silk": 1.0}}, "unknown codec 'silk'"),
    ({"codecs": {"gsm": -1.0}}, "augment.codecs.gsm"),
    ({"codec_bitrates": {"g726": [8000]}}, "augment.codec_bitrates.g726"),
    ({"noise_colors": ["purple"]}, "augment.noise_colors"),
    ({"lowpass_hz": [3000, 9000]}, "augment.highpass_hz and augment.lowpass_hz"),
    ({"rawboost": {"n_bands": 0}}, "rawboost.n_bands"),
    ({"packet_ms": [0, 20]}, "augment.packet_ms"),
    ({"clip_fraction": [0.5, 1.5]}, "augment.clip_fraction"),
    ({"probability": 0.5}, "unknown augment key"),
])
def test_bad_config_names_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        AugmentConfig.from_dict(data)


def test_unavailable_codecs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sox, no ffmpeg
    config = AugmentConfig(codecs={"mulaw": 1.0, "gsm": 1.0, "opus": 1.0})
    assert TelephoneAugment(config).codecs == ["mulaw"]
    with pytest.raises(DependencyError, match=r"\['gsm', 'opus'\]"):
        TelephoneAugment(AugmentConfig(codecs=config.codecs, skip_unavailable_codecs=False))
    with pytest.raises(DependencyError, match="none of the augmentation codecs"):
        TelephoneAugment(AugmentConfig(codecs={"opus": 1.0}))


def test_default_codec_mix_runs_here() -> None:
    assert set(AugmentConfig().codecs) <= set(CODECS)
    assert set(TelephoneAugment().codecs) == set(AugmentConfig().codecs) & set(available_codecs())


def test_bad_input_is_an_audio_error() -> None:
    aug = TelephoneAugment(AugmentConfig.off())
    with pytest.raises(AudioError):
        aug(np.zeros((2, 10), np.float32), np.random.default_rng(0))
    with pytest.raises(AudioError):
        aug(np.array([np.inf, 0.0], np.float32), np.random.default_rng(0))
