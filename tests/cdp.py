"""Headless Chromium driven over the Chrome DevTools Protocol (no Selenium, no downloads)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> str | None:
    """Debian's chromium package, or one on PATH."""
    for path in CHROMIUM_CANDIDATES:
        if Path(path).is_file():
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CDPError(RuntimeError):
    """A DevTools command failed or a page script threw."""


class Browser:
    """One headless Chromium process with one page, driven over CDP."""

    def __init__(self, exe: str, profile: Path, fake_audio: Path | None = None,
                 size: tuple[int, int] = (1280, 860)):
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--disable-features=WebRtcHideLocalIpsWithMdns,Translate",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--window-size={size[0]},{size[1]}", "--hide-scrollbars",
                f"--user-data-dir={profile}", "--remote-debugging-port=0"]
        if fake_audio is not None:
            args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
        self.profile = profile
        self.proc = subprocess.Popen([*args, "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.ws: Any = None
        self._id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    def _devtools_port(self, timeout_s: float = 20.0) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise CDPError(f"chromium exited with {self.proc.returncode}: {err[-2000:]}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            time.sleep(0.05)
        raise CDPError("chromium did not open its DevTools port")

    async def start(self) -> Browser:
        port = await asyncio.to_thread(self._devtools_port)
        targets = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{port}/json/list")
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self._waiting.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description")))
                                             for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                self.console.append("exception: " + str(details.get("exception", {})
                                                        .get("description", details)))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout_s: float = 30.0) -> dict[str, Any]:
        self._id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._id] = fut
        await self.ws.send(json.dumps({"id": self._id, "method": method,
                                       "params": params or {}}))
        msg = await asyncio.wait_for(fut, timeout_s)
        if "error" in msg:
            raise CDPError(f"{method}: {msg['error']}")
        return msg["result"]

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'")

    async def eval(self, expression: str) -> Any:
        """Evaluate a page expression (promises are awaited) and return its JSON value."""
        res = await self.send("Runtime.evaluate", {"expression": expression,
                                                   "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in res:
            raise CDPError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        """Poll a page expression until it is truthy; returns its value (true for a node)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.eval(f"(v => v instanceof Node ? true : v)({expression})")
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out waiting for {expression!r}; console: "
                               f"{self.console[-10:]}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> int:
        """Save a PNG of the viewport; returns its size in bytes."""
        res = await self.send("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(res["data"])
        await asyncio.to_thread(_write, path, data)
        return len(data)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())
