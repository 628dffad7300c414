"""`benchmarks/summarize_gpu_run.py` on a real earlier GPU run and on fresh smoke outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "summarize_gpu_run.py"


def summarize(folder: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_recorded_h200_run_gives_its_figures_and_verdicts():
    text = summarize(ROOT / "benchmarks" / "results" / "h200-2026-11-26")
    assert "Machine: NVIDIA H200" in text
    assert "| 256 | 1,118.5 | 1,706.5 |" in text  # uncached, cached at batch 256
    assert "Engine target (3,000 windows/s): not met, best 1,706.5 windows/s." in text
    assert "End-to-end target (2,500 calls" in text and "not met (p99 2160.0 ms" in text
    assert "| 2,500 | 608.7 |" in text and "| no |" in text


@pytest.mark.timeout(300)
def test_smoke_outputs_of_every_step_are_summarised_with_the_pending_decisions(tmp_path):
    for script, name in (("feature_cache_bench.py", "feature_cache.json"),
                         ("gpu_engine_bench.py", "engine.json"),
                         ("backend_bench.py", "backend.json")):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke",
                               "--out", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=280, cwd=ROOT, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
    # GPU-only fields (graph timings, a 2,500-call level) as the GPU run writes them
    backend = json.loads((tmp_path / "backend.json").read_text())
    for row in backend["rows"]:
        row.update(graph_ms=2.0, compiled_graph_ms=1.0)
    (tmp_path / "backend.json").write_text(json.dumps(backend))
    level = {"calls": 2500, "windows_per_s": 2480.0, "latency_p50_ms": 300.0,
             "latency_p99_ms": 800.0, "dropped_windows": 0, "windows_skipped_for_load": 0,
             "client_lag_p99_ms": 40.0, "cpu_ms_per_call_second": 3.1, "sustained": True}
    (tmp_path / "e2e_workers.json").write_text(json.dumps({
        "e2e": {"levels": [level]}, "gpu_utilization_pct": {"mean": 80.0},
        "host_cpu_busy_pct": {"mean": 70.0, "p90": 85.0, "cores": 16}}))
    (tmp_path / "steps.txt").write_text("cuda_tests: exit 0 after 50s (limit 80s)\n")
    text = summarize(tmp_path)
    assert "`cached_backend_graph_bf16_weights_gemm_conv_compiled`" in text
    assert "`cuda_graph_bucket_bf16_weights_gemm_conv_fft_pos`" in text
    assert "positional_conv_fft" in text and "compiled_graph_ms" in text
    assert ("End-to-end target (2,500 calls, p99 < 1,000 ms, no window dropped or skipped): "
            "met") in text
    assert "host CPU busy 70.0 % on average, p90 85.0 % of 16 cores" in text
    assert "`[engine] pos_conv`: FFT" in text
    assert ("`[engine] compile_backend`: graph-replayed back-end 2.00x faster compiled: "
            "turn it on") in text
    assert "Steps: cuda_tests: exit 0" in text
    assert "Not in this run" not in text


def test_the_profile_becomes_a_table_of_the_top_kernels(tmp_path):
    top = [{"name": "void gemm<bf16>|tile", "ms_per_batch": 40.5, "calls_per_batch": 96.0,
            "share": 0.45}, {"name": "layer_norm_kernel", "ms_per_batch": 5.25,
                             "calls_per_batch": 48.0, "share": 0.0583}]
    ops = [{"name": "aten::native_layer_norm", "input_shapes": "[[256, 199, 1024], [1024]]",
            "ms_per_batch": 7.5, "calls_per_batch": 48.0}]
    (tmp_path / "profile.json").write_text(json.dumps(
        {"batch_size": 256, "time_kind": "device self time", "self_ms_per_batch": 90.0,
         "top": top, "top_operators": ops, "host_launch_ms": 31.2, "batch_ms": 84.5,
         "staged_samples_per_window": 16_400,
         "pipelined": {"batches": 3, "device_busy_ms_per_batch": 80.5,
                       "device_span_ms_per_batch": 84.0, "device_idle_share": 0.0417}}))
    text = summarize(tmp_path)
    assert ("Pipelined as the engine runs them (3 batches, device activity only traced): device "
            "busy 80.5 of 84.0 ms per batch, idle 4.2 %.") in text
    assert ("queued after 31.2 ms of host time, logits back after 84.5 ms; 16400 samples "
            "staged per window") in text
    assert "| aten::native_layer_norm | [[256, 199, 1024], [1024]] | 7.5 | 48.0 |" in text
    assert "batch 256, device self time 90.0 ms per batch" in text
    assert "| void gemm<bf16>\\|tile | 40.5 | 96.0 | 45.0 % |" in text
    assert "| layer_norm_kernel | 5.25 | 48.0 | 5.8 % |" in text


def test_the_whole_engine_decides_the_compiled_back_end_where_measured():
    text = summarize(ROOT / "benchmarks" / "results" / "h200-2026-11-26-run2")
    assert ("`[engine] compile_backend`: the whole engine 0.981x with the compiled back-end: "
            "leave it off.") in text
    assert '`[engine] encoder_layers`: fused 46.74 ms' in text and 'keep "fused"' in text


def test_a_run_cut_short_says_what_is_missing(tmp_path):
    (tmp_path / "gpu.txt").write_text("name, memory.total [MiB]\nNVIDIA H100, 81559 MiB\n")
    text = summarize(tmp_path)
    assert "Machine: NVIDIA H100, 81559 MiB" in text
    assert "Not in this run (cut short or not run): feature_cache.json, engine.json" in text


def test_rows_of_steps_cut_short_come_from_their_progress_logs(tmp_path):
    row = {"batch_size": 128, "uncached": {"windows_per_s": 1100.0},
           "cached_backend_graph_bf16_weights_gemm_conv": {"windows_per_s": 2100.0}}
    first = {"batch_size": 128, "uncached": {"windows_per_s": 1100.0}}
    (tmp_path / "feature_cache.log").write_text(  # printed again as each column finished
        "warming up\n" + json.dumps(first) + "\n" + json.dumps(row) + "\n")
    stage = {"batch_size": 128, "positional_conv_ms": 3.0, "positional_conv_fft_ms": 1.0,
             "transformer_layers_ms": 34.0, "transformer_layers_fused_ms": 36.0}
    (tmp_path / "engine.log").write_text(json.dumps({"conv_encoder": {"batch_size": 128}})
                                         + "\n" + json.dumps({"stages": stage}) + "\nTraceback")
    text = summarize(tmp_path)
    assert "| 128 | 1,100.0 | 2,100.0 |" in text
    assert "Cut short, rows taken from the progress logs: feature_cache, engine" in text
    assert 'FFT 1.00 ms vs direct 3.00 ms on average: keep "fft"' in text
    assert ("`[engine] encoder_layers`: fused 36.00 ms vs transformers' 34.00 ms on average: "
            'set the default to "native"') in text
    assert "Engine target (3,000 windows/s): not met, best 2,100.0 windows/s." in text


def test_compiled_norm_kernels_are_decided_by_the_engine_then_the_back_end_beside_them(
        tmp_path):
    row = {"batch_size": 256, "uncached": {"windows_per_s": 1150.0},
           "engine_pipelined": {"windows_per_s": 2800.0},
           "engine_pipelined_compiled_norms": {"windows_per_s": 3000.0},
           "engine_pipelined_compiled": {"windows_per_s": 2900.0},
           "engine_pipelined_compiled_all": {"windows_per_s": 3030.0}}
    (tmp_path / "feature_cache.json").write_text(json.dumps({"rows": [row]}))
    text = summarize(tmp_path)
    assert ("`[engine] compile_norms`: the whole engine 1.071x with the compiled norm kernels: "
            "turn it on (CUDA only).") in text
    # beside compiled norms, the back-end's gain is 3030 / 3000: not enough to turn it on
    assert ("`[engine] compile_backend`: the whole engine 1.010x with the compiled back-end "
            "(beside the compiled norm kernels): leave it off.") in text
    assert "Engine target (3,000 windows/s): met, best 3,030.0 windows/s." in text


def test_without_the_engine_columns_the_stages_report_what_the_norm_kernels_save(tmp_path):
    stage = {"batch_size": 256, "conv_gemm_hop_ms": 11.5, "conv_gemm_hop_compiled_norms_ms": 9.5,
             "transformer_layers_fused_ms": 61.8,
             "transformer_layers_fused_compiled_norms_ms": 56.8}
    (tmp_path / "engine.json").write_text(json.dumps({"stages": [stage]}))
    text = summarize(tmp_path)
    assert ("`[engine] compile_norms`: transformer layers and conv hop 7.00 ms faster per batch "
            "with the compiled norm kernels on average") in text


def test_the_padded_conv_encoder_is_judged_against_the_gathered_one(tmp_path):
    stage = {"batch_size": 256, "conv_gemm_hop_ms": 9.8, "conv_gemm_hop_gathered_ms": 11.5}
    (tmp_path / "engine.json").write_text(json.dumps({"stages": [stage]}))
    text = summarize(tmp_path)
    assert ("GEMM conv encoder on the hop: padded 9.80 ms vs gathered 11.50 ms on average: "
            "keep the padded form.") in text


def test_a_column_that_failed_is_reported_and_the_others_still_decide(tmp_path):
    row = {"batch_size": 256, "uncached": {"windows_per_s": 1150.0},
           "engine_pipelined": {"windows_per_s": 2900.0},
           "engine_pipelined_compiled_norms": {
               "error": "ColumnFailed('the norm kernels failed to compile')"}}
    (tmp_path / "feature_cache.json").write_text(json.dumps({"rows": [row]}))
    text = summarize(tmp_path)
    assert ("Failed columns: engine_pipelined_compiled_norms at 256: ColumnFailed('the norm "
            "kernels failed to compile')") in text
    assert "| 256 | 1,150.0 | 2,900.0 | - |" in text
    assert "Engine target (3,000 windows/s): not met, best 2,900.0 windows/s." in text
    assert "`[engine] compile_norms`" not in text  # nothing measured to decide it


def test_norm_kernels_that_fell_back_in_the_stage_timings_are_not_judged_by_them(tmp_path):
    stage = {"batch_size": 256, "transformer_layers_fused_ms": 61.8,
             "transformer_layers_fused_compiled_norms_ms": 61.9, "norm_kernels_compiled": False}
    (tmp_path / "engine.json").write_text(json.dumps({"stages": [stage]}))
    assert ("`[engine] compile_norms`: the norm kernels failed to compile in the stage timings"
            in summarize(tmp_path))


def test_the_workers_host_time_says_whether_the_host_or_the_device_limits_the_engine(
        tmp_path):
    def run(host_ms: float) -> str:
        row = {"batch_size": 256, "uncached": {"windows_per_s": 1150.0},
               "engine_pipelined": {"windows_per_s": 2900.0, "batch_ms": 88.3,
                                    "host_ms_per_batch": host_ms},
               "engine_pipelined_one_stream": {"windows_per_s": 2871.3}}
        (tmp_path / "feature_cache.json").write_text(json.dumps({"rows": [row]}))
        return summarize(tmp_path)

    text = run(84.0)
    assert ("Scoring worker's host time per batch (staging, queuing, delivering): "
            "engine_pipelined at 256: 84.0 of 88.3 ms") in text
    assert ("`engine_pipelined`: the worker's host time is 95% of each batch (84.0 of 88.3 ms): "
            "the host limits it") in text
    assert "host time is 34% of each batch (30.0 of 88.3 ms): the device limits it" in run(30.0)
    assert ("Copy stream for staged batches: the whole engine 1.010x against copying in the "
            "compute stream: keep it.") in text


def test_the_staging_figures_are_tabled(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "staging_bench.py"),
                           "--batch", "8", "--repeats", "2", "--out",
                           str(tmp_path / "staging.json")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    text = summarize(tmp_path)
    assert "### Staging a batch of 8 (`staging_bench.py`)" in text
    assert "| whole_windows | 64,000 |" in text and "| cached_tails | 16,400 |" in text
