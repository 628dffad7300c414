"""The try-it page and the dashboard in headless Chromium (Debian's package), over CDP.

Chromium's fake media devices feed a bundled WAV file as the microphone. The tests take the
screenshots of docs/images; they write them there only with ``NES2NET_UPDATE_DOCS_IMAGES=1``
(``make docs-images``), elsewhere into a temporary folder, so a test run changes no tracked
file.
"""

import asyncio
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from cdp import Browser, find_chromium

from nes2net_stream.audio.io import load_audio
from nes2net_stream.client import stream_samples

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "nes2net_stream" / "assets" / "samples"
IMAGES = (REPO / "docs" / "images" if os.environ.get("NES2NET_UPDATE_DOCS_IMAGES") == "1"
          else Path(tempfile.mkdtemp(prefix="nes2net-screenshots-")))
TOKEN = "browser-test-token-0123456789"
CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get "
                       "install chromium chromium-driver; `make test` installs it)"),
    pytest.mark.timeout(120),
]


@pytest.fixture()
async def browser(tmp_path):
    b = Browser(CHROMIUM, tmp_path / "profile", fake_audio=SAMPLES / "synthetic_call.wav")
    await b.start()
    await b.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1280, "height": 860, "deviceScaleFactor": 1, "mobile": False})
    yield b
    await b.close()


def events(redis_client, stream="nes2net:alerts"):
    return [json.loads(f["event"]) for _, f in redis_client.xrange(stream)]


async def test_tryit_page_streams_the_microphone_over_webrtc(make_service, browser,
                                                           redis_client):
    aioice = pytest.importorskip("aioice.ice", reason="the try-it page needs aiortc")
    if not aioice.get_host_addresses(use_ipv4=True, use_ipv6=False):
        pytest.skip("aiortc gathers no ICE candidate on loopback and this host has no other "
                    "IPv4 address")
    svc = await make_service(auth={"mode": "required", "tokens": [TOKEN]},
                             windows={"window_s": 2.0, "hop_s": 0.5})
    await browser.goto(f"http://127.0.0.1:{svc.http.port}/tryit?token={TOKEN}")
    await browser.wait_for("document.querySelectorAll('#sample option').length == 2")
    await browser.eval("document.getElementById('start-mic').click()")
    await browser.wait_for("window.tryit.windows >= 3", timeout_s=30)
    assert await browser.eval("window.tryit.connection") == "connected"
    # a file played into the same connection keeps the same call going
    await browser.eval("document.getElementById('play-sample').click()")
    await browser.wait_for("window.tryit.windows >= 6", timeout_s=20)
    assert len(svc.http.webrtc.peers) == 1
    score, running = await browser.eval(
        "[document.getElementById('score').textContent, window.tryit.running]")
    assert re.fullmatch(r"\d{1,3}%", score), score
    assert abs(int(score[:-1]) - 100 * running) <= 0.51
    state = await browser.eval("document.getElementById('state').dataset.state")
    assert state in ("bona_fide", "suspicious", "spoof")
    size = await browser.screenshot(IMAGES / "tryit.png")
    assert 10_000 < size < 200_000
    call_id = await browser.eval("window.tryit.callId")
    await browser.eval("document.getElementById('hangup').click()")
    summary = await browser.wait_for("window.tryit.summary", timeout_s=15)
    assert summary["end_reason"] == "stop" and summary["windows_scored"] >= 6
    deadline = time.monotonic() + 10
    while not [e for e in events(redis_client) if e["type"] == "summary"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    doc = next(e for e in events(redis_client) if e["type"] == "summary")
    assert doc["call_id"] == call_id and call_id.startswith("tryit-")
    assert doc["source"]["kind"] == "webrtc" and doc["metadata"]["page"] == "tryit"
    assert doc["summary"]["windows_scored"] == summary["windows_scored"]


async def test_dashboard_shows_streamed_calls_and_alerts(make_service, browser, redis_client):
    svc = await make_service(auth={"mode": "required", "tokens": [TOKEN]},
                             windows={"window_s": 2.0, "hop_s": 0.5},
                             alerts={"suspicious_threshold": 0.3, "spoof_threshold": 0.46})
    await browser.goto(f"http://127.0.0.1:{svc.http.port}/dashboard?token={TOKEN}")
    await browser.wait_for("document.getElementById('feed').dataset.state === 'live'")
    synthetic = load_audio(SAMPLES / "synthetic_call.wav", sample_rate=8000).samples[:80_000]
    human = load_audio(SAMPLES / "human_call.wav", sample_rate=8000).samples[:80_000]
    calls = [asyncio.create_task(stream_samples(
        svc.url, x, 8000, call_id=cid, encoding="mulaw", token=TOKEN, speed=2.0,
        metadata={"ani": ani})) for cid, x, ani in (("CA-synthetic-01", synthetic, "+15550100"),
                                                     ("CA-human-02", human, "+15550142"))]
    row = "document.querySelector('#calls tr[data-call=\"CA-synthetic-01\"]')"
    await browser.wait_for(f"{row} && window.dashboard.calls.get('CA-synthetic-01')"
                           ".points.length >= 6", timeout_s=30)
    await browser.wait_for("document.querySelector("
                           "'.alert-item[data-call=\"CA-synthetic-01\"]')")
    await browser.eval(f"{row}.click()")
    await browser.wait_for("document.getElementById('detail-id').textContent "
                           "=== 'CA-synthetic-01'")
    await asyncio.sleep(0.4)
    size = await browser.screenshot(IMAGES / "dashboard.png")
    assert 10_000 < size < 200_000
    results = await asyncio.gather(*calls)
    assert all(r.summary is not None for r in results)
    summary_item = ".alert-item.summary[data-call=\"CA-synthetic-01\"]"
    await browser.wait_for(f"document.querySelector('{summary_item}')", timeout_s=15)
    final = results[0].summary["summary"]["final_state"]
    assert await browser.eval(f"document.querySelector('{summary_item}').dataset.state") == final
    assert await browser.eval(f"{row}.classList.contains('ended')")
    # the feed reconnects and resumes after its last id: a call made meanwhile appears once
    await browser.eval("window.dashboard.reconnect()")
    third = await stream_samples(svc.url, human[:40_000], 8000, call_id="CA-after-03",
                                 token=TOKEN, realtime=False)
    assert third.summary is not None
    await browser.wait_for("document.querySelector("
                           "'.alert-item.summary[data-call=\"CA-after-03\"]')", timeout_s=15)
    await asyncio.sleep(0.5)
    shown = await browser.eval("[...document.querySelectorAll('.alert-item')]"
                               ".map(e => e.dataset.event)")
    stored = [e["event_id"] for e in events(redis_client)]
    assert len(shown) == len(set(shown))      # no alert twice
    assert sorted(shown) == sorted(stored)    # none missed
    assert await browser.eval("window.dashboard.duplicates") == 0
    assert await browser.eval("window.dashboard.connects") == 2
