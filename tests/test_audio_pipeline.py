import numpy as np
import pytest
from helpers import tone_bursts

from nes2net_stream.audio.pipeline import ChannelPipeline
from nes2net_stream.audio.vad import SpeechDetector, VADConfig, speech_stream
from nes2net_stream.audio.windows import SpeechWindower, WindowConfig, pad_by_repetition
from nes2net_stream.errors import ConfigError


def run(x, rate, chunk, vad=None, win=None):
    pipe = ChannelPipeline(rate, vad or VADConfig(), win or WindowConfig())
    out = []
    for i in range(0, len(x), chunk):
        out += pipe.push(x[i:i + chunk])
    out += pipe.finish()
    return out, pipe


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_windows_do_not_depend_on_chunking(rate):
    x = tone_bursts(9.0, rate)
    a, _ = run(x, rate, rate // 50)       # 20 ms packets
    b, _ = run(x, rate, 3 * rate + 17)    # odd-sized big chunks
    c, _ = run(x, rate, len(x))           # whole file at once
    assert len(a) == len(b) == len(c) > 0
    for u, v, w in zip(a, b, c, strict=True):
        assert np.array_equal(u.samples, v.samples) and np.array_equal(u.samples, w.samples)
        assert (u.start_s, u.end_s) == (w.start_s, w.end_s)


def test_vad_drops_silence_and_counts_speech():
    rate = 16000
    speech = tone_bursts(3.0, rate)
    silence = np.zeros(2 * rate, dtype=np.float32)
    x = np.concatenate([silence, speech, silence, speech])
    windows, pipe = run(x, rate, 320, win=WindowConfig(window_s=2.0, hop_s=1.0))
    assert pipe.duration_seconds == pytest.approx(10.0)
    assert 3.0 < pipe.speech_seconds < 6.5      # the pauses and silences are dropped
    assert windows, "speech must produce windows"
    assert windows[0].start_s >= 1.9           # nothing scored before the speech starts
    for w in windows:
        assert w.samples.shape == (2 * rate,)
        assert w.end_s > w.start_s


def test_speech_stream_is_what_live_windows_are_cut_from():
    rate = 16000
    silence = np.zeros(rate, dtype=np.float32)
    x = np.concatenate([silence, tone_bursts(3.0, rate, seed=1), silence,
                        tone_bursts(4.0, rate, seed=2), silence[:1234]])
    win = WindowConfig(window_s=2.0, hop_s=0.5)
    windows, pipe = run(x, rate, 320, win=win)
    stream = speech_stream(x, VADConfig())
    assert stream.shape[0] == round(pipe.speech_seconds * rate)
    assert stream.shape[0] < x.shape[0] - rate   # the silences are gone
    for w in windows:
        if not w.padded:
            assert np.array_equal(w.samples, stream[w.stream_end - 2 * rate:w.stream_end])


def test_silence_only_gives_no_window():
    windows, pipe = run(np.zeros(5 * 16000, np.float32), 16000, 1600)
    assert windows == [] and pipe.speech_seconds == 0


def test_hop_and_final_window():
    win = WindowConfig(window_s=2.0, hop_s=0.5, min_new_speech_s=0.2)
    w = SpeechWindower(win, 16000)
    frame = np.ones(480, np.float32)
    got = [w.push(frame, True, i * 0.03) for i in range(110)]  # 3.3 s of speech
    emitted = [g for g in got if g is not None]
    # first window after 2 s of speech, then one per 0.5 s of new speech
    assert len(emitted) == 3
    assert emitted[0].speech_s == 2.0 and emitted[0].index == 0
    last = w.finish()
    assert last is not None and last.final  # 0.27 s left over (>= 0.2 s)
    assert last.speech_total_s == pytest.approx(3.3)


def test_short_call_gets_one_padded_window():
    w = SpeechWindower(WindowConfig(window_s=4.0, min_speech_s=1.0), 16000)
    rng = np.random.default_rng(0)
    for i in range(50):  # 1.5 s
        w.push(rng.standard_normal(480).astype(np.float32), True, i * 0.03)
    last = w.finish()
    assert last is not None and last.padded
    assert last.samples.shape == (64000,) and last.speech_s == pytest.approx(1.5)
    too_short = SpeechWindower(WindowConfig(min_speech_s=1.0), 16000)
    too_short.push(np.ones(480, np.float32), True, 0.0)
    assert too_short.finish() is None


def test_pad_by_repetition_matches_official_rule():
    x = np.arange(5, dtype=np.float32)
    assert pad_by_repetition(x, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert pad_by_repetition(x, 3).tolist() == [0, 1, 2]


def test_vad_smoothing_hangover_and_onset():
    det = SpeechDetector(VADConfig(frame_ms=30, hangover_ms=90, onset_frames=2), 16000)
    raw = [True, False, True, True, True] + [False] * 5 + [True]
    out = [det.smooth(r) for r in raw]
    # a lone speech frame does not start speech; 2 in a row do; 90 ms = 3 frames of hangover
    assert out == [False, False, False, True, True, True, True, True, False, False, False]


def test_webrtcvad_separates_tone_bursts_from_silence():
    det = SpeechDetector(VADConfig(aggressiveness=2), 16000)
    speech = tone_bursts(1.0, 16000)[:480 * 10]
    pcm = np.clip(speech * 32767, -32768, 32767).astype(np.int16)
    assert any(det.is_speech(pcm[i * 480:(i + 1) * 480]) for i in range(10))
    quiet = SpeechDetector(VADConfig(aggressiveness=2), 16000)
    assert not any(quiet.is_speech(np.zeros(480, np.int16)) for _ in range(10))


@pytest.mark.parametrize("bad", [dict(window_s=0.1), dict(hop_s=5.0), dict(min_speech_s=0.0)])
def test_invalid_window_config(bad):
    with pytest.raises(ConfigError, match="windows."):
        WindowConfig(**bad)


def test_invalid_vad_config():
    with pytest.raises(ConfigError, match="vad.aggressiveness"):
        VADConfig(aggressiveness=4)
