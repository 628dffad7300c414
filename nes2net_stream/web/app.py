"""The HTTP application (aiohttp) started next to the WebSocket listener on ``[http]``.

Pages: ``/tryit`` (microphone or a sample file to WebRTC, live score) and ``/dashboard`` (live
calls and alerts). API: WebRTC signalling under ``[webrtc] path`` (``/offer``, ``/config``,
``/peers/<id>``), the server-sent event feed ``/v1/events`` and ``/v1/calls``. Every page and
API call needs the service's bearer token when ``[auth]`` requires one (``Authorization:
Bearer`` or ``?token=``); the static scripts and the bundled sample files do not.

:class:`~nes2net_stream.service.server.Service` calls :func:`start_http` and later
:meth:`HttpApp.stop_accepting` (the drain begins) and :meth:`HttpApp.close` (end of drain).
"""

from __future__ import annotations

import ssl
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from aiohttp import web

from nes2net_stream.errors import ConfigError
from nes2net_stream.logs import get_logger
from nes2net_stream.service.auth import TokenAuth, is_loopback
from nes2net_stream.web.feeds import EventFeeds, active_calls
from nes2net_stream.web.signalling import SignallingError, parse_offer
from nes2net_stream.web.webrtc_ingest import WebRTCIngest

log = get_logger("nes2net.http")
STATIC = Path(__file__).parent / "static"
SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
                ".svg": "image/svg+xml"}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; "
                               "img-src 'self' data:; style-src 'self'; script-src 'self'",
    "Referrer-Policy": "no-referrer",  # the page URL may carry ?token=
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
SERVICE_KEY = web.AppKey("service", Any)
AUTH_KEY = web.AppKey("auth", TokenAuth)


def _error(status: int, code: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


def _authorized(request: web.Request) -> bool:
    auth: TokenAuth = request.app[AUTH_KEY]
    return auth.check_request(str(request.rel_url), request.headers)


@web.middleware
async def _auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    public = request.path.startswith(("/static/", "/samples/")) or request.path == "/livez"
    if not public and not _authorized(request):
        request.app[SERVICE_KEY].ctx.metrics.calls_rejected.labels(reason="unauthorized").inc()
        return _error(401, "unauthorized", "missing or invalid bearer token (send "
                      "'Authorization: Bearer <token>' or add ?token=<token> to the URL)")
    return await handler(request)


def _file(path: Path, headers: dict[str, str] | None = None) -> web.FileResponse:
    return web.FileResponse(path, headers={"Cache-Control": "no-cache",
                                           "X-Content-Type-Options": "nosniff",
                                           **(headers or {})})


class HttpApp:
    """The running HTTP application: pages, signalling and event feeds."""

    def __init__(self, service: Any):
        self.service = service
        settings = service.settings
        self.webrtc: WebRTCIngest | None = None
        self.webrtc_error = ""
        if settings.webrtc.enabled:
            if find_spec("aiortc") is None:
                self.webrtc_error = ("WebRTC needs aiortc: pip install 'nes2net-stream[webrtc]'")
                log.warning("webrtc disabled", reason=self.webrtc_error)
            else:
                self.webrtc = WebRTCIngest(service.ctx, settings.webrtc)
        self.feeds = EventFeeds(settings.redis.url, settings.redis.key_prefix, service.ctx)
        self.app = web.Application(client_max_size=settings.webrtc.max_offer_bytes,
                                   middlewares=[_auth_middleware])
        self.app[SERVICE_KEY] = service
        self.app[AUTH_KEY] = self._auth(service)
        self._routes(settings.webrtc.path)
        self.runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True,
                                    shutdown_timeout=5.0)
        self.site: web.TCPSite | None = None
        self.port = 0

    @staticmethod
    def _auth(service: Any) -> TokenAuth:
        """The service's tokens; required here too when only ``[http]`` leaves loopback."""
        auth: TokenAuth = service.ctx.auth
        if not auth.required and not is_loopback(service.settings.http.host):
            auth = TokenAuth.from_settings(service.settings.auth, service.settings.http.host)
        return auth

    def _routes(self, path: str) -> None:
        r = self.app.router
        r.add_get("/", self._index)
        r.add_get("/livez", self._livez)
        r.add_get("/tryit", self._page("tryit.html"))
        r.add_get("/dashboard", self._page("dashboard.html"))
        r.add_get("/static/{name}", self._static)
        r.add_get("/samples/{name}", self._sample)
        r.add_get("/v1/events", self.feeds.handle)
        r.add_get("/v1/calls", self._calls)
        r.add_get(f"{path}/config", self._webrtc_config)
        r.add_post(f"{path}/offer", self._offer)
        r.add_delete(f"{path}/peers/{{peer_id}}", self._hang_up)

    async def start(self) -> None:
        """Bind ``[http] host:port`` (TLS with the ``[server]`` certificate, if any)."""
        await self.runner.setup()
        h = self.service.settings.http
        self.site = web.TCPSite(self.runner, h.host, h.port, ssl_context=self._ssl())
        await self.site.start()
        self.port = int(self.runner.addresses[0][1])
        log.info("http listening", host=h.host, port=self.port,
                 webrtc=self.webrtc is not None, tls=self.site._ssl_context is not None)  # noqa: SLF001

    def _ssl(self) -> ssl.SSLContext | None:
        s = self.service.settings.server
        if not (s.tls_cert and s.tls_key):
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(s.tls_cert, s.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"server.tls_cert/tls_key: {exc}") from exc
        return ctx

    async def stop_accepting(self) -> None:
        """The drain begins: no new connection, offer or feed; feeds end (browsers retry)."""
        if self.site is not None:
            await self.site.stop()
        if self.webrtc is not None:
            self.webrtc.stop_accepting()
        self.feeds.stopping.set()

    async def close(self) -> None:
        """End of the drain: close peer connections, feeds and the listener."""
        if self.webrtc is not None:
            await self.webrtc.close()
        await self.feeds.close()
        await self.runner.cleanup()

    # pages and files
    async def _index(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard" + (f"?{request.query_string}"
                                            if request.query_string else ""))

    async def _livez(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def _page(self, name: str) -> Any:
        async def page(_request: web.Request) -> web.FileResponse:
            return _file(STATIC / name, PAGE_HEADERS)

        return page

    async def _static(self, request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES \
                or not path.is_file():
            raise web.HTTPNotFound(text=f"no such file: {name}\n")
        return _file(path, {"Content-Type": STATIC_TYPES[path.suffix]})

    async def _sample(self, request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        path = SAMPLES / name
        if "/" in name or path.suffix != ".wav" or not path.is_file():
            raise web.HTTPNotFound(text=f"no such sample: {name}\n")
        return _file(path, {"Content-Type": "audio/wav"})

    # API
    async def _calls(self, _request: web.Request) -> web.Response:
        return web.json_response({"calls": active_calls(self.service.ctx)})

    async def _webrtc_config(self, _request: web.Request) -> web.Response:
        path = self.service.settings.webrtc.path
        return web.json_response({
            "enabled": self.webrtc is not None, "error": self.webrtc_error or None,
            "offer_url": f"{path}/offer", "ice_servers": (self.webrtc.ice_servers()
                                                          if self.webrtc else []),
            "samples": sorted(p.name for p in SAMPLES.glob("*.wav"))})

    async def _offer(self, request: web.Request) -> web.Response:
        if self.webrtc is None:
            return _error(503, "webrtc_unavailable", self.webrtc_error or "[webrtc] is disabled")
        limit = self.service.settings.webrtc.max_offer_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, "request_too_large", f"the request body exceeds {limit} bytes")
        if request.content_type != "application/json":
            return _error(415, "unsupported_media_type", "send the offer as application/json")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "request_too_large", f"the request body exceeds {limit} bytes")
        try:
            offer = parse_offer(body, max_metadata_bytes=self.service.ctx.limits
                                .max_metadata_bytes)
            answer = await self.webrtc.offer(offer, request.remote)
        except SignallingError as err:
            log.warning("webrtc offer refused", code=err.code, detail=err.message,
                        remote=request.remote)
            return web.json_response(err.to_json(), status=err.status)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    async def _hang_up(self, request: web.Request) -> web.Response:
        if self.webrtc is None or not await self.webrtc.hang_up(request.match_info["peer_id"]):
            return _error(404, "no_such_peer", "no WebRTC peer with this id")
        return web.json_response({"hung_up": request.match_info["peer_id"]})


async def start_http(service: Any) -> HttpApp:
    """Build and start the HTTP application of ``service`` (its ``http`` attribute)."""
    app = HttpApp(service)
    await app.start()
    return app
