"""The command-line helpers against a running service: `stream` and `watch`."""

import asyncio
import subprocess
import sys

import soundfile as sf
from helpers import tone_bursts


async def test_stream_and_watch_commands(make_service, redis_server, tmp_path):
    svc = await make_service()
    path = tmp_path / "call.wav"
    sf.write(path, tone_bursts(6.0, 8000), 8000, subtype="PCM_16")
    watch = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nes2net_stream", "watch", "--redis-url", redis_server.url,
        "--count", "2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await asyncio.sleep(1.5)
    stream = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nes2net_stream", "stream", str(path), "--url", svc.url,
        "--fast", "--call-id", "cli-call", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(stream.communicate(), 60)
    assert stream.returncode == 0, err.decode()
    text = out.decode()
    assert "window" in text and "SUMMARY cli-call" in text
    windows = [line for line in text.splitlines() if line.startswith("window")]
    assert windows[0].endswith("state=pending")  # no state before two windows
    assert "state=pending" not in windows[-1]
    wout, werr = await asyncio.wait_for(watch.communicate(), 60)
    assert watch.returncode == 0, werr.decode()
    lines = wout.decode().strip().splitlines()
    assert lines[0].startswith("STATE  cli-call [caller] (new) -> ")
    assert lines[1].startswith("SUMMARY cli-call")


def test_serve_refuses_invalid_config_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[engine]\nmax_batch_size = 0\n")
    proc = subprocess.run([sys.executable, "-m", "nes2net_stream", "serve", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "engine.max_batch_size" in proc.stderr
