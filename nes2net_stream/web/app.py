"""The HTTP application (aiohttp) started next to the WebSocket listener.

Placeholder contract used by :class:`nes2net_stream.service.server.Service`:
``start_http(service)`` returns an object with ``async stop_accepting()`` (called when a drain
starts) and ``async close()`` (called at the end of the drain).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class HttpApp:
    """A running aiohttp site bound to ``[http] host:port``."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite):
        self.runner = runner
        self.site = site

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        server = self.site._server  # noqa: SLF001 - aiohttp exposes no public accessor
        return server.sockets[0].getsockname()[1] if server else 0

    async def stop_accepting(self) -> None:
        """Stop taking new HTTP connections."""
        await self.site.stop()

    async def close(self) -> None:
        """Release everything."""
        await self.runner.cleanup()


async def start_http(service: Any) -> HttpApp:
    """Build and start the HTTP application for ``service``."""
    app = web.Application(client_max_size=64 * 1024)

    async def livez(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get("/livez", livez)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    h = service.settings.http
    site = web.TCPSite(runner, h.host, h.port)
    await site.start()
    return HttpApp(runner, site)
