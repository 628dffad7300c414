"""Local processes for demos and benchmarks: a throw-away redis-server and the service."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from nes2net_stream.errors import DependencyError
from nes2net_stream.service.tempdirs import owned_tempdir, release


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedis:
    """A redis-server on a free loopback port with its data in a temporary folder."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise DependencyError("redis-server is not installed (Debian: apt-get install "
                                  "redis-server), and REDIS_URL is not set")
        self.port = free_port()
        self.dir = owned_tempdir("nes2net-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._wait()

    def _wait(self) -> None:
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            time.sleep(0.05)
        self.stop()
        raise DependencyError("redis-server did not start")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        release(self.dir)


class ServiceProcess:
    """``nes2net-stream serve`` as a child process on a free port."""

    def __init__(self, redis_url: str, *, model: str = "builtin:demo", log_path: Path | None,
                 extra_env: dict[str, str] | None = None, args: list[str] | None = None):
        self.port = free_port()
        env = {**os.environ, "NES2NET_LOGGING__FORMAT": "json", **(extra_env or {})}
        self.log_path = log_path
        out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nes2net_stream", "serve", "--port", str(self.port),
             "--host", "127.0.0.1", "--redis-url", redis_url, "--model", model, *(args or [])],
            stdout=out, stderr=subprocess.STDOUT, env=env)
        self.url = f"ws://127.0.0.1:{self.port}/v1/stream"
        self.http = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until ``/readyz`` answers 200 (or the process dies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with code {self.proc.returncode}; "
                                   f"see {self.log_path}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.http + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError("the service did not become ready in time")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the service and its worker processes (Linux /proc)."""
        return _cpu_seconds([self.proc.pid, *_children(self.proc.pid)])

    def worker_cpu_seconds(self) -> float:
        """CPU time of the service's child processes alone (its ingest workers, if any)."""
        return _cpu_seconds(_children(self.proc.pid))


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone (or not Linux)
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    kids = [int(k) for k in found]
    return kids + [g for k in kids for g in _children(k)]
