"""The command-line helpers against a running service: `stream` and `watch`."""

import asyncio
import subprocess
import sys

import pytest
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


async def test_stream_sends_timed_metadata_updates(make_service, tmp_path):
    import json

    svc = await make_service()
    path = tmp_path / "call.wav"
    sf.write(path, tone_bursts(6.0, 8000), 8000, subtype="PCM_16")
    stream = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nes2net_stream", "stream", str(path), "--url", svc.url, "--fast",
        "--json", "--metadata", '{"ani": "+15551234567"}',
        "--update", '3:{"account_id": "A-17", "ani": null}',
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(stream.communicate(), 60)
    assert stream.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    (summary,) = [e for e in events if e["type"] == "summary"]
    assert summary["metadata"] == {"account_id": "A-17"}


def test_stream_refuses_malformed_metadata_and_updates(tmp_path):
    from click.testing import CliRunner

    from nes2net_stream.cli import cli

    path = tmp_path / "call.wav"
    sf.write(path, tone_bursts(1.0, 8000), 8000, subtype="PCM_16")
    for args, message in ((["--metadata", "[1]"], "must be a JSON object"),
                          (["--metadata", "{oops"], "not JSON"),
                          (["--update", "soon:{}"], "is not SECONDS:JSON"),
                          (["--update", "-1:{}"], "is not SECONDS:JSON"),
                          (["--update", '2:"x"'], "must be a JSON object"),
                          (["--channels", "caller,caller"], "two distinct roles"),
                          (["--channels", "a,b,c"], "two distinct roles"),
                          (["--channel-end", "3:agent"], "not a role of --channels"),
                          (["--channels", "caller,agent", "--channel-end", "x:agent"],
                           "is not SECONDS:ROLE")):
        out = CliRunner().invoke(cli, ["stream", str(path), *args])
        assert out.exit_code == 2 and message in out.output, (args, out.output)


async def test_stream_keeps_a_stereo_recordings_parties(make_service, tmp_path):
    """--channels streams each channel as its party; --channel-end ends one early."""
    import json

    import numpy as np

    svc = await make_service()
    path = tmp_path / "stereo.wav"
    x = np.stack([tone_bursts(6.0, 16000, seed=1), tone_bursts(6.0, 16000, seed=2)], axis=1)
    sf.write(path, x, 16000, subtype="PCM_16")
    stream = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nes2net_stream", "stream", str(path), "--url", svc.url, "--fast",
        "--json", "--channels", "caller,agent", "--channel-end", "2.5:agent",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(stream.communicate(), 60)
    assert stream.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    summaries = {e["channel"]: e["summary"] for e in events if e["type"] == "summary"}
    assert summaries["agent"]["end_reason"] == "stop"
    assert summaries["agent"]["duration_s"] == pytest.approx(2.5, abs=0.03)
    assert summaries["caller"]["duration_s"] == 6.0
    assert {e["channel"] for e in events if e["type"] == "window"} == {"caller", "agent"}
    # a mono file is refused for two roles, with the file's channel count named
    mono = tmp_path / "mono.wav"
    sf.write(mono, tone_bursts(2.0, 8000), 8000, subtype="PCM_16")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nes2net_stream", "stream", str(mono), "--url", svc.url,
        "--channels", "caller,agent", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and "1 channel(s), 2 expected" in err.decode()
