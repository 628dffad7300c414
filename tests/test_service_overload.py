"""Under overload every call keeps being scored, at a longer effective hop."""

import asyncio

from helpers import tone_bursts

from nes2net_stream.client import stream_samples


async def test_overload_lengthens_the_hop_instead_of_dropping_calls(make_service):
    svc = await make_service()
    # the engine's own load estimate is unit-tested in test_engine.py; here the engine reports
    # a sustained overload (stride 3) so the sessions' reaction can be checked deterministically
    svc.ctx.engine.stride = lambda: 3
    x = tone_bursts(12.0, 8000)
    results = await asyncio.gather(*[
        stream_samples(svc.url, x, 8000, call_id=f"busy-{i}", realtime=False)
        for i in range(6)])
    summaries = [r.summary["summary"] for r in results]
    assert all(s["windows_scored"] >= 2 for s in summaries)      # nobody starved
    assert all(s["windows_skipped_for_load"] > 0 for s in summaries)
    assert all(s["windows_dropped"] == 0 for s in summaries)
    hops = {e["timing"]["effective_hop_s"] for r in results for e in r.of_type("window")
            if not e["window"]["final"]}
    assert 3.0 in hops and max(hops) <= 3.0
