"""Per-stream reuse of SSL convolutional features across overlapping windows: exactness."""

import asyncio

import numpy as np
import pytest
import torch
from helpers import tiny_hf_config, tone_bursts

from nes2net_stream.audio.windows import SpeechWindower, WindowConfig
from nes2net_stream.models.config import BackendConfig, SSLConfig
from nes2net_stream.models.detector import Detector
from nes2net_stream.service.engine import ScoringEngine
from nes2net_stream.service.feature_cache import ConvFeatureCache, device_index
from nes2net_stream.service.metrics import ServiceMetrics
from nes2net_stream.service.runner import BatchRunner

WINDOW = 16_000  # 1 s windows keep the tests fast; the geometry is that of XLS-R (320, 400)


def detector(family: str = "wav2vec2", *, layer_norm: bool = True, aggregation: str = "last",
             normalize: bool = False) -> Detector:
    torch.manual_seed(0)
    cfg = SSLConfig(family=family, aggregation=aggregation, normalize_waveform=normalize,
                    hf_config=tiny_hf_config(family, stable_layer_norm=layer_norm))
    return Detector(cfg, BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2,
                                       se_ratio=2)).eval()


def stream(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (tone_bursts(seconds, 16000, seed=seed)
            + 0.05 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def test_geometry_of_xlsr_and_where_caching_is_not_exact():
    g = detector().conv_geometry()
    assert (g.stride, g.receptive_field) == (320, 400)
    assert g.frames(64_000) == 199 and g.frames(16_000) == 49
    assert detector(layer_norm=False).conv_geometry() is None  # group norm spans the window
    assert detector(normalize=True).conv_geometry() is None  # per-window normalisation


def test_tail_frames_equal_the_full_windows_frames():
    """The claim behind the cache: the conv stack is local away from chunk edges."""
    det = detector()
    x = torch.from_numpy(stream(3.0))[None]
    with torch.no_grad():
        full = det.conv_features(x)  # (1, C, T)
        part = det.conv_features(x[:, 320 * 60:])  # starts on a frame boundary
    assert torch.allclose(full[:, :, 60:], part, atol=1e-5)


@pytest.mark.parametrize("family,aggregation", [("wav2vec2", "last"), ("wavlm", "sea"),
                                                ("hubert", "weighted_sum")])
def test_cached_windows_score_like_full_windows(family, aggregation):
    det = detector(family, aggregation=aggregation)
    cache = ConvFeatureCache(det, WINDOW)
    assert cache.enabled
    x = stream(4.0, seed=1)
    shift = 320 * 15  # a hop that is a multiple of the stride
    ends = list(range(WINDOW, x.size + 1, shift))
    with torch.no_grad():
        for end in ends:
            w = torch.from_numpy(x[end - WINDOW:end])[None]
            cached = det.forward_from_conv(cache.features(w, ["s"], [end]))
            assert torch.allclose(cached, det(w), atol=1e-4), end
    assert cache.misses == 1 and cache.hits == len(ends) - 1


def test_unaligned_or_gapped_windows_fall_back_to_full_encoding():
    det = detector()
    cache = ConvFeatureCache(det, WINDOW)
    x = stream(3.0, seed=2)
    with torch.no_grad():
        for end in (WINDOW, WINDOW + 4000, WINDOW + 4000 + 20_000, WINDOW + 24_320):
            w = torch.from_numpy(x[end - WINDOW:end])[None]
            out = det.forward_from_conv(cache.features(w, ["s"], [end]))
            assert torch.allclose(out, det(w), atol=1e-4)
    # 4000 is not a multiple of 320, 20,000 is more than a window: only the last one reused
    assert (cache.hits, cache.misses) == (1, 3)


def test_a_batch_mixing_streams_new_and_repeated_keys():
    det = detector()
    cache = ConvFeatureCache(det, WINDOW, max_entries=2)
    xs = {k: stream(3.0, seed=i) for i, k in enumerate("abc")}
    runner = BatchRunner(det, window_samples=WINDOW, max_batch_size=8, feature_cache=True)
    assert runner.cache is not None
    rounds = [[("a", WINDOW), ("b", WINDOW)],
              [("a", WINDOW + 3200), ("b", WINDOW + 3200), ("c", WINDOW),
               ("a", WINDOW + 6400)],  # "a" twice: the second cannot use the first yet
              [("a", WINDOW + 9600), (None, WINDOW), ("c", WINDOW + 3200)]]
    for batch in rounds:
        keys = [k for k, _ in batch]
        ends = [e for _, e in batch]
        rows = np.stack([xs[k or "b"][e - WINDOW:e] for k, e in batch])
        got = runner.run(rows, keys, ends)
        with torch.no_grad():
            want = det(torch.from_numpy(rows))
        assert torch.allclose(got, want, atol=1e-4)
    # round 2: a, b hit; c and the second a miss. round 3: a hits (stored last), c hits
    assert (runner.cache.hits, runner.cache.misses) == (4, 5)
    runner.cache.forget("a")
    assert len(runner.cache) <= 2 and "a" not in runner.cache
    del cache


async def test_engine_with_cache_matches_engine_without_on_real_windows():
    det = detector()
    # 30 ms VAD frames: hops are whole frames, 0.3 s = 10 frames = 15 conv strides
    windower = SpeechWindower(WindowConfig(window_s=1.0, hop_s=0.3, min_speech_s=0.5))
    x = stream(4.0, seed=3)
    windows = []
    for i in range(0, x.size - 480, 480):  # 30 ms VAD frames, all speech
        w = windower.push(x[i:i + 480], True, i / 16000)
        if w is not None:
            windows.append(w)
    assert len(windows) >= 8 and all(not w.padded for w in windows)
    metrics = ServiceMetrics()
    cached = ScoringEngine(det, max_batch_size=4, max_delay_ms=1, window_samples=WINDOW,
                           metrics=metrics)
    plain = ScoringEngine(det, max_batch_size=4, max_delay_ms=1, window_samples=WINDOW,
                          feature_cache=False)
    for eng in (cached, plain):
        eng.start()
    try:
        got = []
        for w in windows:  # one at a time, as a live call's windows arrive
            got.append(await asyncio.wait_for(
                cached.submit(w.samples, key="call-1", end=w.stream_end), 30))
        want = await asyncio.gather(*[plain.submit(w.samples) for w in windows])
    finally:
        cached.stop()
        plain.stop()
    for g, w in zip(got, want, strict=True):
        assert g.llr == pytest.approx(w.llr, abs=1e-3)
    stats = cached.feature_cache_stats
    assert stats["hits"] == len(windows) - 1 and stats["misses"] == 1
    text = metrics.render().decode()
    assert f'nes2net_feature_cache_windows_total{{result="hit"}} {len(windows) - 1}.0' in text
    # the worker's host time (staging, queuing, delivering) is counted (on the CPU the model
    # itself runs inside the launch, so that is most of the worker's time)
    host = next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("nes2net_engine_host_seconds_total "))
    assert host == pytest.approx(cached.host_seconds) and host > 0
    assert plain.feature_cache_stats == {"hits": 0, "misses": 0, "entries": 0}


def test_slots_are_reused_bounded_and_survive_more_streams_than_entries():
    det = detector()
    cache = ConvFeatureCache(det, WINDOW, max_entries=3)
    xs = {k: stream(2.0, seed=i) for i, k in enumerate("abcde")}

    def run(pairs):
        keys = [k for k, _ in pairs]
        ends = [e for _, e in pairs]
        rows = torch.from_numpy(np.stack([xs[k][e - WINDOW:e] for k, e in pairs]))
        with torch.no_grad():
            got = det.forward_from_conv(cache.features(rows, keys, ends))
            assert torch.allclose(got, det(rows), atol=1e-4)

    # five streams in one batch, three slots: the last three stay, each in its own slot
    run([(k, WINDOW) for k in "abcde"])
    assert len(cache) == 3 and cache.capacity == 3 and set("cde") == {k for k in "abcde"
                                                                         if k in cache}
    hits = cache.hits
    run([(k, WINDOW + 3200) for k in "cde"])  # all three reuse their own frames
    assert cache.hits == hits + 3
    cache.forget("d")
    assert "d" not in cache and len(cache) == 2
    run([("a", WINDOW), ("e", WINDOW + 6400)])  # "a" takes d's freed slot, e hits
    assert "a" in cache and "c" in cache and cache.capacity == 3
    run([("a", WINDOW + 320), ("c", WINDOW + 6400)])
    assert cache.hits == hits + 6


def test_cache_with_weights_cast_to_bfloat16():
    """The cache under ``dtype_mode = "weights"``: bf16 frames, scores close to fp32."""
    x = stream(2.0, seed=4)
    runner = BatchRunner(detector(aggregation="sea"), window_samples=WINDOW, max_batch_size=4,
                         feature_cache=True, dtype=torch.bfloat16, cast_weights=True)
    ref = detector(aggregation="sea")
    for end in (WINDOW, WINDOW + 4800, WINDOW + 9600):
        rows = x[None, end - WINDOW:end]
        got = runner.run(rows, ["s"], [end])
        with torch.no_grad():
            want = ref(torch.from_numpy(rows))
        assert got.dtype == torch.float32
        assert torch.allclose(got, want, atol=0.1), (got - want).abs().max()
    assert runner.cache is not None and runner.cache.hits == 2
    assert runner.cache._slots is not None and runner.cache._slots.dtype == torch.bfloat16


def test_device_index_on_the_cpu():
    idx = device_index([3, 1, 2], torch.device("cpu"))
    assert idx.dtype == torch.int64 and idx.tolist() == [3, 1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cache_queues_its_work_without_waiting_for_the_device():
    """No host synchronisation in a cached batch (PyTorch's sync debug mode raises on one)."""
    det = detector().cuda()
    cache = ConvFeatureCache(det, WINDOW)
    xs = torch.from_numpy(np.stack([stream(2.0, seed=i) for i in range(3)])).cuda()
    keys = ["a", "b", "c"]
    with torch.inference_mode():
        cache.features(xs[:, :WINDOW], keys, [WINDOW] * 3)  # fills (and allocates slots)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            ends = [WINDOW + 3200, WINDOW + 3200, WINDOW + 6400]  # two tail groups
            got = cache.features(torch.stack([xs[i, e - WINDOW:e] for i, e in enumerate(ends)]),
                                 keys, ends)
            mixed = cache.features(torch.stack([xs[0, 6400:6400 + WINDOW], xs[1, :WINDOW]]),
                                   ["a", "new"], [WINDOW + 6400, WINDOW])  # tail + full rows
        finally:
            torch.cuda.set_sync_debug_mode("default")
        want = det.conv_features(torch.stack([xs[i, e - WINDOW:e] for i, e in enumerate(ends)]))
    assert torch.allclose(got, want, atol=1e-4) and mixed.shape[0] == 2


def test_steady_state_batches_stage_only_the_tails_the_encoder_reads():
    """Every row reusing its previous window: only the tails travel, scores unchanged."""
    det = detector()
    runner = BatchRunner(det, window_samples=WINDOW, max_batch_size=8, feature_cache=True)
    cache = runner.cache
    assert cache is not None
    xs = [stream(3.0, seed=i) for i in range(3)]
    keys = ["a", "b", "c"]
    hop = 3200  # 10 frames
    for k, expect_tail in ((0, False), (1, True), (2, True)):
        end = WINDOW + k * hop
        rows = np.stack([x[end - WINDOW:end] for x in xs])
        got = runner.run(list(rows), keys, [end] * 3)
        with torch.no_grad():
            want = det(torch.from_numpy(rows))
        assert torch.allclose(got, want, atol=1e-4), k
        start, stop = runner.staged_span
        if expect_tail:  # the first of the 10 new frames starts 39 frames in
            assert (start, stop) == ((49 - 10) * 320, 48 * 320 + 400)
        else:
            assert (start, stop) == (0, WINDOW)
    # rows advancing by different hops: the tail of the furthest (20 new frames) for all
    ends = [WINDOW + 3 * hop, WINDOW + 4 * hop, WINDOW + 3 * hop]
    rows = np.stack([x[e - WINDOW:e] for x, e in zip(xs, ends, strict=True)])
    got = runner.run(list(rows), keys, ends)
    with torch.no_grad():
        assert torch.allclose(got, det(torch.from_numpy(rows)), atol=1e-4)
    assert runner.staged_span == ((49 - 20) * 320, 48 * 320 + 400)
    # one row without a reusable window (a new stream): whole windows again
    ends = [WINDOW + 5 * hop, WINDOW + 5 * hop, WINDOW]
    rows = np.stack([x[e - WINDOW:e] for x, e in zip(xs, ends, strict=True)])
    got = runner.run(list(rows), ["a", "b", "new"], ends)
    with torch.no_grad():
        assert torch.allclose(got, det(torch.from_numpy(rows)), atol=1e-4)
    assert runner.staged_span == (0, WINDOW)
    assert cache.tail_span(cache.plan(["a", "d"], [WINDOW + 4 * hop, WINDOW])) is None
    # tails of every width share the whole windows' staging buffers (one per parity)
    staging = [buf for (kind, _), buf in runner._pinned.items() if kind == 0]
    assert len(staging) == 2 and all(buf.numel() == 8 * WINDOW for buf in staging)


def test_a_tail_without_a_reusable_previous_window_is_refused():
    det = detector()
    cache = ConvFeatureCache(det, WINDOW)
    with pytest.raises(ValueError, match="needs all its samples"):
        cache.features(torch.zeros(1, 4000), ["new"], [WINDOW], offset=12_000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runner_copies_on_its_own_stream_and_scores_like_the_model():
    """Staged batches copied on the copy stream (tails in the steady state) match eager."""
    det = detector().cuda()
    runner = BatchRunner(det, window_samples=WINDOW, max_batch_size=8, feature_cache=True,
                         use_buckets=False, cuda_graphs=False)
    assert runner._copy_stream is not None
    xs = [stream(3.0, seed=i) for i in range(4)]
    keys = ["a", "b", "c", "d"]
    pending = None  # pipelined like the engine: the next batch queued before the last's result
    for k in range(5):
        end = WINDOW + k * 3200
        rows = np.stack([x[end - WINDOW:end] for x in xs])
        launched = runner.launch(list(rows), keys, [end] * 4)
        with torch.inference_mode():
            want = det(torch.from_numpy(rows).cuda()).float().cpu()
        if pending is not None:
            assert torch.allclose(pending[0].result(), pending[1], atol=1e-3), k
        pending = (launched, want)
    assert torch.allclose(pending[0].result(), pending[1], atol=1e-3)
    assert runner.staged_span[0] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_steady_state_cuda_batch_is_queued_without_waiting_for_the_device():
    """The whole launch of a cached batch (staging, copy stream, encoder, fused layers, FFT
    positional convolution, graph-replayed back-end, logits copy) never synchronises: the
    pipelined engine can queue a batch while the previous one runs."""
    det = detector().cuda()
    runner = BatchRunner(det, window_samples=WINDOW, max_batch_size=64, feature_cache=True,
                         dtype=torch.bfloat16, cast_weights=True)
    runner.warmup()
    xs = [stream(4.0, seed=i) for i in range(40)]  # above the whole-model graph buckets
    keys = [f"s{i}" for i in range(40)]

    def launch(k: int):
        end = WINDOW + k * 3200
        return runner.launch([x[end - WINDOW:end] for x in xs], keys, [end] * 40)

    for k in range(3):  # cache filled, back-end graph captured, FFT plans made
        launch(k).result()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        launched = launch(3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert runner.staged_span[0] > 0
    assert torch.isfinite(launched.result()).all()
