"""No secret reaches the logs: the real `nes2net-stream serve` process with bearer tokens (from
the environment and a tokens file) and a password-protected Redis, through start-up, accepted
and refused calls, dashboard API requests, a Redis authentication failure and shutdown."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from helpers import tone_bursts
from servers import RedisServer
from websockets.exceptions import InvalidStatus

from nes2net_stream.client import stream_samples

ENV_TOKEN = "env-token-5c1d8e2f7a9b4c3d"
FILE_TOKEN = "file-token-0a6b2e9d4f8c1b7e"
WRONG_TOKEN = "wrong-token-3e7f1a9c5d2b8e4f"
REDIS_PASSWORD = "redis-pw-9d4e1f7a3c8b2e6d"
ROTATED_PASSWORD = "rotated-pw-2b8c6e1d9f4a7c3e"
SECRETS = (ENV_TOKEN, FILE_TOKEN, WRONG_TOKEN, REDIS_PASSWORD, ROTATED_PASSWORD)


class ServeProcess:
    """`python -m nes2net_stream serve`, its JSON log lines collected from stdout and stderr."""

    def __init__(self, config: Path, env: dict[str, str], logdir: Path):
        self.out = logdir / "stdout.log"
        self.err = logdir / "stderr.log"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nes2net_stream", "serve", "--config", str(config),
                 "--log-level", "debug", "--log-format", "json"],
                stdout=out, stderr=err, env=env)

    def text(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def events(self) -> list[dict]:
        lines = self.text().splitlines()
        return [json.loads(ln) for ln in lines if ln.startswith("{")]

    async def wait_for(self, event: str, within_s: float = 60.0) -> dict:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e.get("event") == event]
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited ({self.proc.returncode}):\n{self.text()}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {event!r} log line:\n{self.text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def http_get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture()
def protected_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    server.client().config_set("requirepass", REDIS_PASSWORD)
    yield server
    server.stop()


def admin(server: RedisServer, password: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=password,
                       decode_responses=True, socket_timeout=5)


async def test_tokens_and_redis_password_never_appear_in_logs(small_bundle, protected_redis,
                                                              tmp_path):
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# ingress tokens\n{FILE_TOKEN}\n")
    config = tmp_path / "config.toml"
    config.write_text(f"""
[server]
port = 0
drain_timeout_s = 5.0
[http]
port = 0
[redis]
url = "redis://:{REDIS_PASSWORD}@127.0.0.1:{protected_redis.port}/0"
socket_timeout_s = 1.0
[model]
path = "{small_bundle}"
device = "cpu"
[auth]
mode = "required"
tokens_file = "{tokens_file}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NES2NET_")}
    env["NES2NET_AUTH__TOKENS"] = json.dumps([ENV_TOKEN])
    serve = ServeProcess(config, env, tmp_path)
    try:
        listening = await serve.wait_for("service listening")
        http_port = (await serve.wait_for("http listening"))["port"]
        assert listening["auth_required"] is True
        url = f"ws://127.0.0.1:{listening['port']}/v1/stream"
        audio = tone_bursts(3.0, 8000)
        # accepted: header token (environment) and query token (file)
        ok = await stream_samples(url, audio, 8000, call_id="authed", realtime=False,
                                  token=ENV_TOKEN)
        ok2 = await stream_samples(f"{url}?token={FILE_TOKEN}", audio, 8000,
                                   call_id="authed-query", realtime=False)
        assert ok.summary is not None and ok2.summary is not None
        # refused before the upgrade: wrong header token, wrong query token
        for kwargs in ({"token": WRONG_TOKEN}, {}):
            target = url if kwargs else f"{url}?token={WRONG_TOKEN}"
            with pytest.raises(InvalidStatus) as err:
                await stream_samples(target, audio, 8000, realtime=False, **kwargs)
            assert err.value.response.status_code == 401
        # the HTTP listener (dashboard API) takes the same tokens
        calls = f"http://127.0.0.1:{http_port}/v1/calls"
        assert await asyncio.to_thread(http_get, calls,
                                       {"Authorization": f"Bearer {ENV_TOKEN}"}) == 200
        assert await asyncio.to_thread(http_get, f"{calls}?token={WRONG_TOKEN}") == 401
        # Redis rotates its password: writes fail (cause auth), then resume when it is back
        old = admin(protected_redis, REDIS_PASSWORD)
        old.client_kill_filter(_type="normal", skipme=True)  # the service must log in again
        old.config_set("requirepass", ROTATED_PASSWORD)
        rotated = admin(protected_redis, ROTATED_PASSWORD)
        await stream_samples(url, audio, 8000, call_id="during-rotation", realtime=False,
                             token=ENV_TOKEN)
        failed = await serve.wait_for("redis still failing")  # the cause changed ...
        assert failed["cause"] == "auth", failed                 # ... to the old password
        rotated.config_set("requirepass", REDIS_PASSWORD)
        await serve.wait_for("redis writes resumed")
        summaries = {json.loads(f["event"])["call_id"]
                     for _, f in old.xrange("nes2net:alerts") if f["type"] == "summary"}
        assert summaries == {"authed", "authed-query", "during-rotation"}
        rotated.close()
        old.close()
    finally:
        code = serve.stop()
    assert code == 0
    text = serve.text()
    events = serve.events()
    assert len(events) == len(text.splitlines())  # every line is a JSON log line
    seen = {e["event"] for e in events}
    assert {"service listening", "call started", "call ended", "unauthorized connection refused",
            "redis write failed; buffering and retrying", "stopped"} <= seen
    for secret in SECRETS:
        assert secret not in text, f"a secret was logged: {secret[:6]}..."
