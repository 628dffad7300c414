"""The soak benchmark's measurement code, and a short real soak against the live service."""

from helpers import tone_bursts

from nes2net_stream.bench.soak import parse_metrics, run_soak, summarise

EXPOSITION = """# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.5e+08
process_open_fds 42.0
nes2net_event_loop_tasks 7.0
nes2net_active_calls 3.0
nes2net_redis_buffered_events 0.0
nes2net_windows_dropped_total{reason="queue_full"} 5.0
"""


def test_parse_metrics_reads_the_sampled_series_only():
    assert parse_metrics(EXPOSITION) == {"rss_bytes": 1.5e8, "open_fds": 42.0,
                                         "event_loop_tasks": 7.0, "active_calls": 3.0,
                                         "redis_buffered_events": 0.0}


def _samples(rss_end: float, fds_end: float) -> list[dict[str, float]]:
    out = [{"t_s": 0.0, "rss_bytes": 100e6, "open_fds": 20, "event_loop_tasks": 5}]
    for i in range(1, 11):
        out.append({"t_s": 60.0 * i, "rss_bytes": 200e6 + (rss_end - 200e6) * i / 10,
                    "open_fds": 120, "event_loop_tasks": 400})
    out.append({"t_s": 700.0, "rss_bytes": rss_end, "open_fds": fds_end,
                "event_loop_tasks": 6})
    return out


def test_summarise_judges_flat_and_leaking_runs():
    stats, slope, flat = summarise(_samples(201e6, 21), warmup_s=60)
    assert flat is True and abs(slope) < 1e7
    assert stats["idle_before_after"]["open_fds"] == [20, 21]
    _, slope, flat = summarise(_samples(400e6, 21), warmup_s=60)  # memory keeps growing
    assert flat is False and slope > 1e8
    _, _, flat = summarise(_samples(201e6, 90), warmup_s=60)  # descriptors not given back
    assert flat is False


async def test_short_soak_against_the_service(make_service):
    svc = await make_service()
    http = f"http://127.0.0.1:{svc.port}"
    audio = tone_bursts(4.0, 8000, seed=3)
    res = await run_soak(svc.url, http, audio, 8000, calls=3, duration_s=6.0, call_s=2.0,
                         sample_s=1.0, warmup_s=0.0)
    assert res.calls_failed == 0 and res.errors == []
    assert res.calls_completed >= 6  # each lane ran its calls back to back
    assert len(res.samples) >= 5
    assert res.samples[0]["active_calls"] == 0 and res.samples[-1]["active_calls"] == 0
    assert max(s["active_calls"] for s in res.samples) >= 1
    assert res.samples[0]["rss_bytes"] > 10e6 and res.samples[0]["open_fds"] > 3
    assert res.flat is not None
