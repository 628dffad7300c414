"""The GPU benchmark scripts run (``--smoke``: tiny geometry on the CPU) and print their JSON."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--smoke", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.timeout(300)
def test_feature_cache_ablation_smoke():
    out = run_script("feature_cache_bench.py", "--engine-columns",
                     "engine_pipelined,engine_sequential,engine_pipelined_native_layers,"
                     "engine_pipelined_compiled_norms")
    assert out["benchmark"] == "feature_cache" and out["rows"]
    for row in out["rows"]:
        for name in ("uncached", "cached", "cached_backend_graph",
                     "cached_backend_graph_bf16_weights",
                     "cached_backend_graph_bf16_weights_gemm_conv",
                     "uncached_backend_graph_bf16_weights_gemm_conv",
                     "cached_backend_graph_bf16_weights_gemm_conv_compiled",
                     "cached_backend_graph_bf16_weights_gemm_conv_fft_pos_fused_layers",
                     "cached_backend_graph_bf16_weights_gemm_conv_fft_pos_fused_layers"
                     "_compiled_norms"):
            assert row[name]["windows_per_s"] > 0
            assert row[name]["max_abs_logit_diff_vs_uncached"] < 1e-3  # fp32 on the CPU
        assert row["engine_pipelined"]["windows_per_s"] > 0
        assert row["engine_sequential"]["windows_per_s"] > 0
        assert row["engine_pipelined_native_layers"]["windows_per_s"] > 0
        assert row["engine_pipelined_compiled_norms"]["windows_per_s"] > 0
    assert out["best_windows_per_s"] > 0


@pytest.mark.timeout(300)
def test_engine_bench_smoke():
    out = run_script("gpu_engine_bench.py")
    assert [r["batch_size"] for r in out["rows"]] == [1, 2, 3]
    for row in out["rows"]:
        assert row["cuda_graph_bucket_bf16_weights"]["max_abs_logit_diff_vs_eager"] < 1e-3
        fused = row["cuda_graph_bucket_bf16_weights_gemm_conv_fft_pos_fused_layers"]
        assert fused["max_abs_logit_diff_vs_eager"] < 1e-3
    for entry in out["conv_encoder"]:
        assert entry["max_abs_diff"] <= 1e-4 * max(1.0, entry["max_abs_native"])
    for stage in ("conv_gemm_hop_ms", "conv_gemm_hop_gathered_ms", "positional_conv_ms",
                  "positional_conv_fft_ms",
                  "transformer_layers_ms", "transformer_layers_fused_ms", "backend_eager_ms",
                  "conv_gemm_hop_compiled_norms_ms", "transformer_layers_fused_compiled_norms_ms"):
        assert all(s[stage] > 0 for s in out["stages"])
    for s in out["stages"]:
        scale = max(1.0, s["positional_conv_max_abs"])
        assert s["positional_conv_fft_max_abs_diff"] <= 1e-4 * scale
        assert s["transformer_layers_fused_max_abs_diff"] <= 1e-4 * max(
            1.0, s["transformer_layers_max_abs"])
        assert s["transformer_layers_fused_compiled_norms_max_abs_diff"] <= 1e-4 * max(
            1.0, s["transformer_layers_max_abs"])
        assert s["conv_gemm_hop_compiled_norms_max_abs_diff"] <= 1e-4


@pytest.mark.timeout(300)
def test_profile_smoke_lists_where_a_streaming_batch_spends_its_time():
    out = run_script("profile_engine.py")
    assert out["benchmark"] == "profile_engine" and out["time_kind"] == "CPU self time"
    top = out["top"]
    assert 0 < len(top) <= 15 and out["self_ms_per_batch"] > 0
    times = [r["ms_per_batch"] for r in top]
    assert times == sorted(times, reverse=True) and 0 < sum(r["share"] for r in top) <= 1.0001
    assert any("layer_norm" in r["name"] for r in top)  # the model's operations, by name
    # untraced timings of the same batches; no device to trace pipelined on the CPU
    assert 0 < out["host_launch_ms"] <= out["batch_ms"] and out["pipelined"] is None
    assert 0 < out["staged_samples_per_window"] < 16_000  # the cached tails, not whole windows


def test_device_busy_time_is_the_union_of_kernel_intervals():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from profile_engine import busy_time
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # overlapping (copy stream beside a kernel), nested, touching and separate intervals
    busy, span = busy_time([(10, 20), (0, 5), (15, 30), (16, 18), (30, 32), (40, 45)])
    assert (busy, span) == (5 + 22 + 5, 45)
    assert busy_time([]) == (0.0, 0.0)


@pytest.mark.timeout(300)
def test_e2e_bench_measures_latency_from_the_actual_send(tmp_path):
    """`bench e2e` against a real service and redis-server: three short calls."""
    out = tmp_path / "e2e.json"
    proc = subprocess.run([sys.executable, "-m", "nes2net_stream", "bench", "e2e", "--calls", "3",
                           "--duration-s", "6", "--out", str(out)],
                          capture_output=True, text=True, timeout=280, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    level = json.loads(out.read_text())["levels"][0]
    assert level["summaries"] == 3 and level["windows"] > 0 and level["dropped_windows"] == 0
    assert 0 < level["latency_p50_ms"] <= level["latency_p99_ms"] <= level["latency_max_ms"]
    # the load generator keeps real time at this load, so both latency definitions agree
    assert 0 <= level["client_lag_p99_ms"] < 500
    assert abs(level["latency_from_schedule_p99_ms"] - level["latency_p99_ms"]) < 500
    # CPU per call-second: the service (one process: no separate ingest workers), the clients
    assert level["cpu_ms_per_call_second"] > 0 and level["client_cpu_ms_per_call_second"] > 0
    assert level["ingest_cpu_ms_per_call_second"] is None
    report = json.loads(out.read_text())
    assert report["service_exit_code"] == 0  # drained and exited cleanly
    assert report["client_event_loop"] == "uvloop"  # the load generators' loop, as the service's


@pytest.mark.timeout(300)
def test_e2e_bench_speaks_twilio_media_streams(tmp_path):
    """`bench e2e --protocol twilio`: the Twilio gateway ingests, summaries come from Redis."""
    out = tmp_path / "e2e.json"
    proc = subprocess.run([sys.executable, "-m", "nes2net_stream", "bench", "e2e", "--calls", "2",
                           "--duration-s", "6", "--frame-ms", "20", "--protocol", "twilio",
                           "--speech-only", "--client-loop", "asyncio", "--out", str(out)],
                          capture_output=True, text=True,
                          timeout=280, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    level = report["levels"][0]
    assert report["protocol"] == "twilio" and level["errors"] == []
    assert report["speech_only"] is True and report["client_event_loop"] == "asyncio"
    # continuous speech: windows ending at 4, 5 and 6 s of each 6 s call (at least)
    assert level["summaries"] == 2 and level["windows"] >= 6 and level["dropped_windows"] == 0
    assert 0 < level["latency_p50_ms"] <= level["latency_p99_ms"]


@pytest.mark.timeout(300)
def test_ingest_channel_bench_smoke():
    out = run_script("ingest_channel_bench.py")
    assert [(r["busy_threads"], r["busy_duty"]) for r in out["rows"]] == [
        (0, None), (1, 1.0), (1, 0.3)]
    for row in out["rows"]:
        assert row["windows_per_s"] > 0 and row["failed"] == 0
        assert row["loop_lag_p99_ms"] >= 0 and row["worker_cpu_us_per_window"] > 0


@pytest.mark.timeout(300)
def test_backend_bench_smoke():
    out = run_script("backend_bench.py")
    assert [r["batch_size"] for r in out["rows"]] == [1, 4]
    for row in out["rows"]:
        assert row["eager_ms"] > 0 and row["compiled_ms"] > 0 and row["compile_s"] >= 0
        assert row["max_abs_diff"] < 1e-4  # float32 on the CPU: inductor's fusions only


@pytest.mark.timeout(300)
def test_gpu_e2e_smoke_runs_the_service_with_ingest_workers():
    """`gpu_e2e.py --smoke`: a tiny XLS-R-geometry bundle, two ingest workers, a real
    redis-server; reports the level and the host's CPU use."""
    out = run_script("gpu_e2e.py")
    assert out["exit_code"] == 0 and out["ingest_workers"] == 2
    level = out["e2e"]["levels"][0]
    assert level["calls"] == 4 and level["summaries"] == 4 and level["windows"] > 0
    assert level["dropped_windows"] == 0
    # the ingest workers' share of the service's CPU is reported on its own
    assert 0 < level["ingest_cpu_ms_per_call_second"] < level["cpu_ms_per_call_second"]
    cpu = out["host_cpu_busy_pct"]
    assert cpu["samples"] > 0 and 0 <= cpu["mean"] <= cpu["max"] <= 100


@pytest.mark.timeout(300)
def test_rtp_codec_bench_smoke():
    """Every codec's payloads decode to the audio's length, without errors, with a cost."""
    pytest.importorskip("av")
    out = run_script("rtp_codec_bench.py")
    assert [r["codec"] for r in out["rows"]] == ["PCMU", "L16", "G722", "OPUS", "G729", "AMR",
                                                 "AMR-WB", "GSM"]
    for row in out["rows"]:
        assert row["errors"] == 0 and row["audio_s"] == pytest.approx(2.0, abs=0.05)
        assert row["cpu_us_per_call_second"] > 0


@pytest.mark.timeout(300)
def test_ws_receive_bench_smoke():
    """Both receive forms run against real loopback connections and report CPU per message."""
    out = run_script("ws_receive_bench.py")
    assert [r["form"] for r in out["rows"]] == ["asyncio_timeout", "receiver"]
    for row in out["rows"]:
        assert row["server_cpu_s"] > 0 and row["cpu_us_per_message"] > 0


@pytest.mark.timeout(300)
def test_siprec_bench_smoke():
    """SIPREC sessions (SIP over UDP, RTP paced in real time) and generic calls against one
    service: every packet received, every call ended by its BYE, CPU per call-second of each."""
    out = run_script("siprec_bench.py")
    sip = out["siprec"]
    assert sip["rtp_received"] == sip["rtp_packets_sent"] == 2 * 5 * 250
    assert sip["calls_ended"] == {"stop": 5.0} and sip["windows_scored"] >= 5
    assert sip["cpu_ms_per_call_second"] > 0 and out["generic"]["cpu_ms_per_call_second"] > 0
    assert out["service_exit_code"] == 0


@pytest.mark.timeout(300)
def test_asterisk_rtp_bench_smoke():
    """External Media calls (control API, RTP paced in real time) and generic calls against
    one service: every packet received, every call ended by its DELETE."""
    out = run_script("asterisk_rtp_bench.py")
    ext = out["asterisk_rtp"]
    assert ext["rtp_received"] == ext["rtp_packets_sent"] == 5 * 250 and ext["deletes_ok"] == 5
    assert ext["calls_ended"] == {"stop": 5.0} and ext["windows_scored"] >= 5
    assert ext["cpu_ms_per_call_second"] > 0 and out["generic"]["cpu_ms_per_call_second"] > 0
    assert out["service_exit_code"] == 0


@pytest.mark.timeout(300)
def test_amazon_connect_bench_smoke():
    """Contacts read from the Kinesis Video stand-in in real time: every one registered,
    scored and ended when its stream moves on; every request's signature accepted."""
    out = run_script("amazon_connect_bench.py")
    ac = out["amazon_connect"]
    assert ac["registered"] == 5 and ac["calls_ended"] == {"stop": 5.0}
    assert ac["windows_scored"] >= 5 and ac["signature_rejections"] == 0
    assert ac["cpu_ms_per_contact_second"] > 0 and out["service_exit_code"] == 0
    assert "generic" not in out


@pytest.mark.timeout(300)
def test_voice_connector_bench_smoke():
    """Chime Voice Connector calls: two legs' streams each, one call per transaction."""
    out = run_script("amazon_connect_bench.py", "--voice-connector")
    vc = out["chime_voice_connector"]
    assert vc["registered"] == 5 and vc["calls_ended"] == {"stop": 5.0}
    assert vc["windows_scored"] >= 5 and vc["signature_rejections"] == 0
    assert vc["cpu_ms_per_contact_second"] > 0 and out["service_exit_code"] == 0


@pytest.mark.timeout(300)
def test_policy_bench_smoke():
    out = run_script("policy_bench.py")
    timings = out["us_per_window_at_call_length"]
    assert sorted(timings) == ["ema", "max", "mean", "median"]
    assert all(set(t) == {"10", "100"} and min(t.values()) > 0 for t in timings.values())


def test_speech_only_calls_keep_the_speech_and_cut_the_pauses():
    from nes2net_stream.audio.io import load_audio
    from nes2net_stream.audio.vad import SpeechDetector, VADConfig
    from nes2net_stream.bench.e2e import speech_only
    from nes2net_stream.demo import sample_path

    call = load_audio(sample_path("human_call.wav"), sample_rate=8000).samples
    speech = speech_only(call, 8000)
    assert 0.3 * len(call) < len(speech) < len(call)  # the sample's pauses are gone
    looped = np.tile(speech, 3)  # as the load generator loops it
    vad = SpeechDetector(VADConfig(), 8000)
    step = vad.frame_samples
    pcm = np.round(looped * 32767).astype(np.int16)
    flags = [vad.is_speech(pcm[i:i + step]) for i in range(0, len(pcm) - step + 1, step)]
    assert np.mean(flags[10:]) > 0.95  # the service's VAD hears speech nearly all the time
    with pytest.raises(ValueError, match="no speech"):
        speech_only(np.zeros(8000, dtype=np.float32), 8000)


@pytest.mark.timeout(300)
def test_conv_encoder_bench_smoke():
    out = run_script("conv_encoder_bench.py")
    assert [(r["dtype"], r["batch_size"]) for r in out["rows"]] == [("float32", 2),
                                                                     ("bfloat16", 2)]
    for row in out["rows"]:
        assert row["gathered_ms"] > 0 and row["padded_ms"] > 0
        tolerance = 1e-5 if row["dtype"] == "float32" else 0.05  # bf16: one more rounding
        assert row["max_abs_diff"] <= tolerance * max(1.0, row["max_abs"])


def test_alert_journal_bench_smoke():
    out = run_script("alert_journal_bench.py")
    assert out["benchmark"] == "alert_journal"
    assert [r["fsync_interval_s"] for r in out["rows"]] == [1.0, 0.0]
    assert all(r["alerts_per_s"] > 0 for r in out["rows"])
    assert out["replay"]["alerts"] == 300


@pytest.mark.timeout(400)
@pytest.mark.parametrize("stage", ["norms", "all"])
def test_gpu_run_stage_rehearses_on_the_cpu(stage, tmp_path):
    """The prepared GPU command runs every step (``SMOKE=1``) and packs a summary with verdicts.

    The device machine is lent for minutes at a time; a broken step found there costs the run.
    """
    import os
    import shutil
    import tarfile

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "BUDGET_S": "380",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh"), stage], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=390)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["run.tgz", "summary.md"]
    with tarfile.open(out / "run.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
        steps = tar.extractfile("./steps.txt").read().decode().splitlines()
    skipped = "skipped cuda_tests: smoke run"
    assert steps and all(" exit 0 " in s or s == skipped for s in steps), steps
    ran = {s.split(":")[0] for s in steps if " exit 0 " in s}
    assert {f"{name}.json" for name in ran - {"e2e"}} <= names
    assert "e2e" in ran and "e2e_workers.json" in names
    summary = (out / "summary.md").read_text()
    assert "Engine target (3,000 windows/s)" in summary


@pytest.mark.timeout(300)
def test_acs_bench_smoke():
    """Unmixed Call Automation streams with signed tokens (keys from a loopback JWKS) and
    generic calls against one service: every stream accepted, scored and ended."""
    out = run_script("acs_bench.py")
    acs = out["acs"]
    assert acs["streams_failed"] == 0 and acs["messages_sent"] == 5 * 2 * 250
    assert acs["calls_ended"] == {"stop": 5.0} and acs["windows_scored"] >= 5
    assert acs["cpu_ms_per_call_second"] > 0 and out["generic"]["cpu_ms_per_call_second"] > 0
    assert out["service_exit_code"] == 0


@pytest.mark.timeout(300)
def test_webex_cc_bench_smoke():
    """Media forking gRPC streams (caller and agent, signed tokens) and generic calls against
    one service: every stream accepted, answered "ok", scored and ended."""
    out = run_script("webex_cc_bench.py")
    webex = out["webex_cc"]
    assert webex["streams_failed"] == 0 and webex["messages_sent"] == 5 * 2 * 250
    assert webex["calls_ended"] == {"stop": 5.0} and webex["windows_scored"] >= 5
    assert webex["cpu_ms_per_call_second"] > 0 and out["service_exit_code"] == 0
