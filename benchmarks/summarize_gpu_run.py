"""Markdown tables and the pending decisions from the files of one ``gpu_run.sh`` run.

A lent GPU session is short; this turns ``$OUT`` (``gpu.txt``, ``steps.txt``,
``feature_cache.json``, ``engine.json``, ``backend.json``, ``e2e_workers.json``,
``ingest_channel.json``, ``profile.json``, ``staging.json``, whichever exist) into the tables for
docs/benchmarks.md and answers the questions the run was prepared for: are the targets met,
does the FFT positional convolution beat cuDNN, do the fused transformer layers pay, does the
compiled back-end pay, do whole-model graphs pay at every bucket. Missing files or rows (a
step cut short) are skipped and said so.

    python benchmarks/summarize_gpu_run.py path/to/out > summary.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ENGINE_TARGET = 3000.0  # windows/s
E2E_TARGET_CALLS = 2500
E2E_P99_MS = 1000.0


def load(folder: Path, name: str, log: str | None = None) -> dict[str, Any] | None:
    """A JSON result of the run; if a step was cut short before writing it, what its progress
    log ``log`` holds (the benchmarks print each finished row as a JSON line); else None."""
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        pass
    try:
        lines = (folder / log).read_text(errors="replace").splitlines() if log else []
    except OSError:
        return None
    partial: dict[str, Any] = {"rows": [], "stages": [], "partial": True}
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        if "offered_per_s" in item:
            partial["rows"].append(item)
        elif "batch_size" in item:  # a row may be printed again as its columns finish
            same = [r for r in partial["rows"] if r.get("batch_size") == item["batch_size"]]
            if same:
                same[0].update(item)
            else:
                partial["rows"].append(item)
        elif isinstance(item.get("stages"), dict):
            partial["stages"].append(item["stages"])
    return partial if partial["rows"] or partial["stages"] else None


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out + [""]


def wps(entry: Any) -> float | None:
    """Windows per second of one result cell."""
    return entry.get("windows_per_s") if isinstance(entry, dict) else None


def feature_cache_section(fc: dict[str, Any]) -> tuple[list[str], float | None]:
    """Streaming engine table (windows/s per configuration) and its best figure."""
    names: list[str] = []
    for row in fc["rows"]:
        names += [k for k, v in row.items() if isinstance(v, dict) and k not in names]
    rows = [[row["batch_size"]] + [wps(row.get(n)) for n in names] for row in fc["rows"]]
    lines = ["### Streaming engine (`feature_cache_bench.py`), windows/s", ""]
    lines += table(["batch"] + [f"`{n}`" for n in names], rows)
    warm = [(row["batch_size"], n, row[n]["warmup_s"]) for row in fc["rows"] for n in names
            if isinstance(row.get(n), dict) and "warmup_s" in row[n]]
    slow = [f"{n} at {b}: {w} s" for b, n, w in warm if w >= 5]
    if slow:
        lines += ["Warm-up (capture, compilation) of at least 5 s: " + "; ".join(slow), ""]
    host = [f"{n} at {row['batch_size']}: {row[n]['host_ms_per_batch']} of "
            f"{row[n]['batch_ms']} ms" for row in fc["rows"] for n in names
            if isinstance(row.get(n), dict) and row[n].get("host_ms_per_batch") is not None]
    if host:
        lines += ["Scoring worker's host time per batch (staging, queuing, delivering): "
                  + "; ".join(host), ""]
    failed = [f"{n} at {row['batch_size']}: {row[n]['error']}" for row in fc["rows"]
              for n in names if isinstance(row.get(n), dict) and "error" in row[n]]
    if failed:
        lines += ["Failed columns: " + "; ".join(failed), ""]
    best = max((v for r in rows for v in r[1:] if v is not None), default=None)
    return lines, best


def engine_sections(eng: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Engine modes and per-stage tables, and the figures the decisions need."""
    lines: list[str] = []
    found: dict[str, Any] = {}
    stages = eng.get("stages") or []
    if stages:
        keys = [k for k in stages[0] if k.endswith("_ms")]
        lines += ["### Per-stage timings (`gpu_engine_bench.py`), ms per batch", ""]
        lines += table(["stage"] + [f"batch {s['batch_size']}" for s in stages],
                       [[k.removesuffix("_ms")] + [s.get(k) for s in stages] for k in keys])
        found["stages"] = stages
    rows = eng.get("rows") or []
    if rows:
        modes: list[str] = []
        for row in rows:
            modes += [k for k, v in row.items() if isinstance(v, dict) and k not in modes]
        lines += ["### Engine modes (`gpu_engine_bench.py`), windows/s", ""]
        lines += table(["batch"] + [f"`{m}`" for m in modes],
                       [[r["batch_size"]] + [wps(r.get(m)) for m in modes] for r in rows])
        found["rows"] = rows
    return lines, found


def backend_section(be: dict[str, Any]) -> list[str]:
    """Back-end alone: eager, graph, compiled, compiled graph."""
    cols = ["eager_ms", "graph_ms", "compiled_ms", "compiled_graph_ms", "compile_s",
            "max_abs_diff"]
    lines = ["### Nes2Net-X back-end alone (`backend_bench.py`)", ""]
    return lines + table(["batch"] + cols, [[r["batch_size"]] + [r.get(c) for c in cols]
                                            for r in be["rows"]])


def e2e_section(e2e: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """End-to-end levels with GPU and host CPU use."""
    levels = (e2e.get("e2e") or {}).get("levels") or []
    cols = ["calls", "windows_per_s", "latency_p50_ms", "latency_p99_ms", "dropped_windows",
            "windows_skipped_for_load", "client_lag_p99_ms", "cpu_ms_per_call_second",
            "ingest_cpu_ms_per_call_second", "client_cpu_ms_per_call_second", "sustained"]
    lines = ["### End to end (`gpu_e2e.py`)", ""]
    lines += table(cols, [[lv.get(c) for c in cols] for lv in levels])
    gpu, cpu = e2e.get("gpu_utilization_pct"), e2e.get("host_cpu_busy_pct")
    if gpu or cpu:
        lines += [f"GPU busy {gpu['mean'] if gpu else '-'} % on average; host CPU busy "
                  f"{cpu['mean'] if cpu else '-'} % on average, p90 "
                  f"{cpu['p90'] if cpu else '-'} % of {cpu['cores'] if cpu else '-'} cores.", ""]
    if not levels:
        lines += ["No level finished: " + str(e2e.get("stderr_tail", ""))[-500:], ""]
    return lines, levels


def channel_section(ch: dict[str, Any]) -> list[str]:
    """Ingest channel rows."""
    cols = ["busy_threads", "busy_duty", "offered_per_s", "windows_per_s", "failed",
            "loop_lag_p99_ms", "shared_memory_slots"]
    lines = ["### Ingest channel (`ingest_channel_bench.py`)", ""]
    return lines + table(cols, [[r.get(c) for c in cols] for r in ch["rows"]])


def staging_section(st: dict[str, Any]) -> list[str]:
    """Host time of staging a batch: whole windows against the cached batches' tails."""
    spans = st.get("spans") or {}
    rows = [[name, v.get("samples_per_window"), v.get("host_ms_per_batch"),
             v.get("mb_to_device_per_batch")] for name, v in spans.items()]
    return ([f"### Staging a batch of {st.get('batch_size')} (`staging_bench.py`)", ""]
            + table(["span", "samples per window", "host ms per batch", "MB to the device"],
                    rows))


def profile_section(prof: dict[str, Any], top: int = 15) -> list[str]:
    """The operations and kernels with the most self time in one streaming batch."""
    head = (f"### Profile of one streaming batch (`profile_engine.py`, batch "
            f"{prof.get('batch_size')}, {prof.get('time_kind')} "
            f"{prof.get('self_ms_per_batch')} ms per batch)")
    rows = [[r["name"].replace("|", "\\|"), r["ms_per_batch"], r["calls_per_batch"],
             f"{100 * r['share']:.1f} %"] for r in (prof.get("top") or [])[:top]]
    lines = [head, ""]
    if prof.get("host_launch_ms") is not None:
        lines += [f"Untraced, each batch waited for: queued after {prof['host_launch_ms']} ms of "
                  f"host time, logits back after {prof.get('batch_ms')} ms; "
                  f"{prof.get('staged_samples_per_window')} samples staged per window.", ""]
    if pipe := prof.get("pipelined"):
        lines += [f"Pipelined as the engine runs them ({pipe['batches']} batches, device "
                  f"activity only traced): device busy {pipe['device_busy_ms_per_batch']} of "
                  f"{pipe['device_span_ms_per_batch']} ms per batch, idle "
                  f"{100 * pipe['device_idle_share']:.1f} %.", ""]
    lines += table(["operation / kernel", "ms per batch", "calls", "share"], rows)
    ops = [[r["name"], r["input_shapes"].replace("|", "\\|"), r["ms_per_batch"],
            r["calls_per_batch"]] for r in (prof.get("top_operators") or [])[:top]]
    if ops:
        lines += ["Operators by input shapes (device time of the kernels each launched):", ""]
        lines += table(["operator", "input shapes", "ms per batch", "calls"], ops)
    return lines


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def stage_pair(stages: list[dict[str, Any]], new: str,
               old: str) -> tuple[float, float] | None:
    """Mean milliseconds of two stages over the batch sizes that timed both (None: none)."""
    both = [s for s in stages if new in s and old in s]
    if not both:
        return None
    return sum(s[new] for s in both) / len(both), sum(s[old] for s in both) / len(both)


def engine_gain(streaming: list[dict[str, Any]] | None, column: str,
                base: str = "engine_pipelined") -> float | None:
    """Mean ratio of two whole-engine columns' windows/s over the batch sizes with both."""
    pairs = [(wps(r.get(column)), wps(r.get(base))) for r in streaming or []]
    return _mean([c / b for c, b in pairs if c and b])


def compile_norms_verdict(streaming: list[dict[str, Any]] | None,
                          stages: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """The ``[engine] compile_norms`` line (the whole engine decides, else the stages)."""
    gain = engine_gain(streaming, "engine_pipelined_compiled_norms")
    if gain is not None:
        on = gain > 1.02
        return (f"- `[engine] compile_norms`: the whole engine {gain:.3f}x with the compiled "
                f"norm kernels: {'turn it on (CUDA only)' if on else 'leave it off'}.", on)
    if any(s.get("norm_kernels_compiled") is False for s in stages):
        return ("- `[engine] compile_norms`: the norm kernels failed to compile in the stage "
                "timings (see engine.log): leave it off.", False)
    pairs = [(s["transformer_layers_fused_ms"] + s.get("conv_gemm_hop_ms", 0.0),
              s["transformer_layers_fused_compiled_norms_ms"]
              + s.get("conv_gemm_hop_compiled_norms_ms", s.get("conv_gemm_hop_ms", 0.0)))
             for s in stages if "transformer_layers_fused_compiled_norms_ms" in s]
    if not pairs:
        return None, False
    saved = _mean([a - b for a, b in pairs]) or 0.0
    return (f"- `[engine] compile_norms`: transformer layers and conv hop {saved:.2f} ms "
            "faster per batch with the compiled norm kernels on average (check the engine "
            "column `engine_pipelined_compiled_norms`).", False)


def host_bound_verdict(streaming: list[dict[str, Any]] | None,
                       column: str = "engine_pipelined") -> list[str]:
    """Whether the pipelined engine's scoring worker spent (nearly) every batch on the host."""
    cells = [r[column] for r in streaming or [] if isinstance(r.get(column), dict)
             and r[column].get("host_ms_per_batch") is not None and r[column].get("batch_ms")]
    if not cells:
        return []
    cell = max(cells, key=lambda c: c.get("windows_per_s") or 0)
    share = cell["host_ms_per_batch"] / cell["batch_ms"]
    advice = ("the host limits it: cut host work per batch before device kernels (compiled "
              "parts add host time)" if share >= 0.9 else
              "the device limits it: device kernels are what to cut")
    return [f"- `{column}`: the worker's host time is {share:.0%} of each batch "
            f"({cell['host_ms_per_batch']} of {cell['batch_ms']} ms): {advice}."]


def decisions(best_engine: float | None, found: dict[str, Any],
              backend: dict[str, Any] | None, levels: list[dict[str, Any]],
              streaming: list[dict[str, Any]] | None = None) -> list[str]:
    """What the run says about the targets and the defaults left open."""
    out = ["### Decisions", ""]
    if best_engine is not None:
        verdict = "met" if best_engine >= ENGINE_TARGET else "not met"
        out.append(f"- Engine target ({ENGINE_TARGET:,.0f} windows/s): {verdict}, best "
                   f"{best_engine:,.1f} windows/s.")
    top = next((lv for lv in levels if lv.get("calls") == E2E_TARGET_CALLS), None)
    if top is not None:
        ok = (top.get("sustained") and (top.get("latency_p99_ms") or 1e9) < E2E_P99_MS
              and not top.get("dropped_windows") and not top.get("windows_skipped_for_load"))
        out.append(f"- End-to-end target ({E2E_TARGET_CALLS:,} calls, p99 < "
                   f"{E2E_P99_MS:,.0f} ms, no window dropped or skipped): "
                   f"{'met' if ok else 'not met'} (p99 "
                   f"{top.get('latency_p99_ms')} ms, {top.get('windows_per_s')} windows/s, "
                   f"{top.get('windows_skipped_for_load')} skipped for load).")
    out += host_bound_verdict(streaming)
    if (stream_gain := engine_gain(streaming, "engine_pipelined",
                                   "engine_pipelined_one_stream")) is not None:
        advice = ("keep it" if stream_gain >= 0.98 else
                  "copy in the compute stream again (BatchRunner's copy_stream default)")
        out.append(f"- Copy stream for staged batches: the whole engine {stream_gain:.3f}x "
                   f"against copying in the compute stream: {advice}.")
    stages = found.get("stages") or []
    if pair := stage_pair(stages, "positional_conv_fft_ms", "positional_conv_ms"):
        fft, direct = pair
        advice = 'keep "fft"' if fft <= direct else 'set the default to "native"'
        out.append(f"- `[engine] pos_conv`: FFT {fft:.2f} ms vs direct {direct:.2f} ms on "
                   f"average: {advice}.")
    if pair := stage_pair(stages, "transformer_layers_fused_ms", "transformer_layers_ms"):
        fused, native = pair
        advice = 'keep "fused"' if fused <= native else 'set the default to "native"'
        out.append(f"- `[engine] encoder_layers`: fused {fused:.2f} ms vs transformers' "
                   f"{native:.2f} ms on average: {advice}.")
    if pair := stage_pair(stages, "conv_gemm_hop_ms", "conv_gemm_hop_gathered_ms"):
        padded, gathered = pair
        advice = ("keep the padded form" if padded <= gathered
                  else "choose the gathered form on CUDA (models/conv_gemm.py)")
        out.append(f"- GEMM conv encoder on the hop: padded {padded:.2f} ms vs gathered "
                   f"{gathered:.2f} ms on average: {advice}.")
    norms_line, norms_on = compile_norms_verdict(streaming, stages)
    out += [norms_line] if norms_line else []
    # the whole engine decides, where the run measured it (beside compiled norms if they win)
    engine_compiled = (engine_gain(streaming, "engine_pipelined_compiled_all",
                                   "engine_pipelined_compiled_norms") if norms_on else None)
    engine_compiled = engine_compiled or engine_gain(streaming, "engine_pipelined_compiled")
    if engine_compiled is not None:
        advice = "turn it on (CUDA only)" if engine_compiled > 1.02 else "leave it off"
        beside = " (beside the compiled norm kernels)" if norms_on else ""
        out.append(f"- `[engine] compile_backend`: the whole engine {engine_compiled:.3f}x with "
                   f"the compiled back-end{beside}: {advice}.")
    elif backend is not None:
        pairs = [(r["graph_ms"], r["compiled_graph_ms"]) for r in backend["rows"]
                 if r.get("graph_ms") and r.get("compiled_graph_ms")]
        if pairs:
            gain = _mean([g / c for g, c in pairs]) or 0.0
            out.append(f"- `[engine] compile_backend`: graph-replayed back-end {gain:.2f}x "
                       f"faster compiled: {'turn it on' if gain > 1.05 else 'leave it off'} "
                       "(check the streaming column `..._compiled` too).")
    rows = found.get("rows") or []
    big = [r for r in rows if r["batch_size"] >= 32]
    bucket = [wps(r.get("cuda_graph_bucket_bf16_weights_gemm_conv")) for r in big]
    whole = [wps(r.get("cuda_graph_all_buckets_bf16_weights_gemm_conv")) for r in big]
    if bucket and all(v is not None for v in bucket + whole):
        better = all(w > b for w, b in zip(whole, bucket, strict=True))  # type: ignore[operator]
        out.append("- `[engine] cuda_graph_max_batch`: whole-model graphs at every bucket are "
                   f"{'faster' if better else 'not faster'} than eager front-ends from "
                   f"batch 32 up: {'raise it' if better else 'keep 16'}.")
    return out + [""]


def summarize(folder: Path) -> str:
    """The whole Markdown summary of one run's output folder."""
    lines = [f"## GPU run ({folder.name})", ""]
    gpu = folder / "gpu.txt"
    machine = " ".join(gpu.read_text().split("\n")[1:2]).strip() if gpu.is_file() else ""
    if machine:
        lines += [f"Machine: {machine}", ""]
    steps = folder / "steps.txt"
    if steps.is_file():
        lines += ["Steps: " + "; ".join(s for s in steps.read_text().splitlines() if s), ""]
    best, found, levels = None, {}, []
    missing = []
    cut: list[str] = []
    if (fc := load(folder, "feature_cache.json", "feature_cache.log")) is not None:
        part, best = feature_cache_section(fc)
        lines += part
        cut += ["feature_cache"] if fc.get("partial") else []
    else:
        missing.append("feature_cache.json")
    if (eng := load(folder, "engine.json", "engine.log")) is not None:
        part, found = engine_sections(eng)
        lines += part
        best = max((v for v in (best, eng.get("best_windows_per_s")) if v is not None),
                   default=None)
        cut += ["engine"] if eng.get("partial") else []
    else:
        missing.append("engine.json")
    if (backend := load(folder, "backend.json", "backend.log")) is not None:
        lines += backend_section(backend)
        cut += ["backend"] if backend.get("partial") else []
    if (e2e := load(folder, "e2e_workers.json")) is not None:
        part, levels = e2e_section(e2e)
        lines += part
    else:
        missing.append("e2e_workers.json")
    if (ch := load(folder, "ingest_channel.json", "ingest_channel.log")) is not None:
        lines += channel_section(ch)
        cut += ["ingest_channel"] if ch.get("partial") else []
    if (prof := load(folder, "profile.json")) is not None:
        lines += profile_section(prof)
    if (st := load(folder, "staging.json")) is not None:
        lines += staging_section(st)
    if cut:
        lines += ["Cut short, rows taken from the progress logs: " + ", ".join(cut), ""]
    if missing:
        lines += ["Not in this run (cut short or not run): " + ", ".join(missing), ""]
    verdicts = decisions(best, found, backend, levels, fc.get("rows") if fc else None)
    lines += verdicts if len(verdicts) > 3 else verdicts[:2] + ["Nothing to decide from.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("folder", type=Path, help="the run's $OUT folder")
    a = ap.parse_args()
    if not a.folder.is_dir():
        ap.error(f"{a.folder} is not a folder")
    sys.stdout.write(summarize(a.folder) + "\n")


if __name__ == "__main__":
    main()
