"""Under overload every call keeps being scored, at a longer effective hop."""

import asyncio

from helpers import tone_bursts

from nes2net_stream.client import stream_samples


async def test_overload_lengthens_the_hop_instead_of_dropping_calls(make_service):
    # a tiny latency target makes the engine consider itself overloaded almost at once
    svc = await make_service(engine={"latency_target_ms": 0.001, "max_hop_factor": 3,
                                     "max_batch_size": 2, "max_delay_ms": 0})
    x = tone_bursts(12.0, 8000)
    results = await asyncio.gather(*[
        stream_samples(svc.url, x, 8000, call_id=f"busy-{i}", realtime=False)
        for i in range(12)])
    summaries = [r.summary["summary"] for r in results]
    assert all(s["windows_scored"] >= 1 for s in summaries)      # nobody starved
    assert sum(s["windows_skipped_for_load"] for s in summaries) > 0
    hops = [e["timing"]["effective_hop_s"] for r in results for e in r.of_type("window")]
    assert max(hops) > 1.0 and max(hops) <= 3.0
    assert all(s["windows_dropped"] == 0 for s in summaries)
