"""A small authenticated HTTP/JSON control API for gateways whose calls are registered first.

Platforms that stream media without saying which call it belongs to (Asterisk External Media
over RTP) or that keep the media where the service must fetch it (Amazon Connect's Kinesis
Video streams) tell a gateway about each call with an HTTP request. :class:`ControlApi` serves
those requests for a gateway: rate limit per client address, ``Authorization: Bearer`` token,
bounded bodies, and every error as ``{"error": code, "message": text}`` with the HTTP status
of the generic protocol's close code (4409 -> 409).

With several ingest processes (which share the port through SO_REUSEPORT) each one also
listens on ``port + 1 + its index``; :attr:`ControlApi.call_port` is the port whose URLs reach
this process, for the per-call resources it creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import quote

from aiohttp import web
from pydantic import Field

from nes2net_gateways._auth import (
    bearer_token,
    require_secret,
    secret_equal,
    server_tls_context,
)
from nes2net_gateways._common import metrics_registry
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import Gateway, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd
from nes2net_stream.service.ratelimit import KeyedBuckets

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlApiConfig(GatewayConfig):
    """Settings of a gateway with a control API (beside the common ``host``, ``port``, ...).

    Attributes:
        api_token: the bearer token of every request; required beyond loopback (``auth``).
        tls_cert / tls_key: PEM certificate chain and key: serve HTTPS instead of HTTP.
        max_requests_per_s: requests per client address (twice that in a burst).
    """

    api_token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    max_requests_per_s: float = Field(50.0, gt=0)
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "frame_too_large"}


class ControlApi:
    """The control API of one gateway (see the module docstring).

    Args:
        gateway: the gateway (its :class:`ControlApiConfig` and ``limits``, ``reuse_port``,
            ``worker_index``).
        counter: a Prometheus counter labelled ``status`` for the answers.
    """

    def __init__(self, gateway: Gateway, counter: Any):
        cfg: ControlApiConfig = gateway.config  # type: ignore[assignment]
        self.gw = gateway
        self.cfg = cfg
        self.token = cfg.api_token
        self.counter = counter
        self.ssl: ssl.SSLContext | None = None
        self.prefix = gateway.config.path.rstrip("/")
        self.bound_port: int | None = None
        self.call_port: int | None = None
        rate = cfg.max_requests_per_s
        self._limit = KeyedBuckets(rate, max(1.0, 2 * rate))
        self._app = web.Application(client_max_size=gateway.limits.max_text_bytes,
                                    middlewares=[self._guard])
        self._runner: web.AppRunner | None = None

    def check(self) -> None:
        """Fail fast (ConfigError naming the key): a token where required, TLS files."""
        name, cfg = self.gw.name, self.cfg
        if cfg.auth != "off":
            require_secret(self.gw, "api_token", cfg.api_token)
        if bool(cfg.tls_cert) != bool(cfg.tls_key):
            raise ConfigError(f"gateways.{name}.tls_cert: set both tls_cert and tls_key (PEM)")
        if cfg.tls_cert:
            self.ssl = server_tls_context(f"gateways.{name}", cfg.tls_cert, cfg.tls_key)

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method`` on ``prefix + path`` (aiohttp path syntax)."""
        self._app.router.add_route(method, self.prefix + path, handler)

    def url(self, request: web.Request, path: str) -> str:
        """An absolute URL of ``prefix + path`` (already encoded) on :attr:`call_port`."""
        return str(request.url.with_port(self.call_port)
                   .with_path(self.prefix + path, encoded=True).with_query(None))

    async def start(self) -> None:
        """Listen on the gateway's ``host:port`` (and the process's own port, see above)."""
        gw, cfg = self.gw, self.gw.config
        if gw.worker_index is not None and not cfg.port:
            raise ConfigError(f"gateways.{gw.name}.port: must be set (not 0) with several "
                              "ingest workers, which also listen on port + 1 + their index")
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, cfg.host, cfg.port, ssl_context=self.ssl,
                          reuse_port=gw.reuse_port or None).start()
        self.bound_port = self.call_port = self._runner.addresses[-1][1]
        if gw.worker_index is not None:
            own = cfg.port + 1 + gw.worker_index
            await web.TCPSite(self._runner, cfg.host, own, ssl_context=self.ssl).start()
            self.call_port = own

    async def close(self) -> None:
        """Stop serving (never raises)."""
        if self._runner is not None:
            try:
                await self._runner.cleanup()
            except Exception as exc:  # closing must not fail the service's shutdown
                self.gw.log.warning("control API did not close cleanly", error=repr(exc))

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Rate limit, authenticate and turn errors into JSON answers."""
        try:
            if not self._limit.take(request.remote or ""):
                raise ProtocolError("rate_limited", "too many control requests from this "
                                    "address")
            if self.token and self.gw.config.auth != "off" and \
                    not secret_equal(bearer_token(request.headers), self.token):
                raise ProtocolError("unauthorized", "missing or invalid bearer token")
            response = await handler(request)
        except ProtocolError as err:
            self.gw.ctx.metrics.protocol_errors.labels(code=err.code).inc()
            response = error_response(err.code, err.message, http_status(err))
        except web.HTTPException as exc:  # unknown path or method, body over the limit
            response = error_response(HTTP_CODES.get(exc.status, "bad_message"), exc.reason,
                                      exc.status)
        except Exception as exc:  # never let one request break the service
            self.gw.log.exception("gateway failure", error=repr(exc))
            response = error_response("internal_error", "internal error", 500)
        self.counter.labels(status=str(response.status)).inc()
        return response


def http_status(err: ProtocolError) -> int:
    """HTTP status of a protocol error: its 44xx close code less 4000, else 503 or 500."""
    code = err.close_code
    if 4400 <= code < 4500:
        return code - 4000
    return 503 if err.code == "shutting_down" else 500


def error_response(code: str, message: str, status: int) -> web.Response:
    """The JSON answer of an error."""
    return web.json_response({"error": code, "message": message}, status=status)


def local_address(request: web.Request) -> str:
    """The address of this host that ``request`` reached."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]) if sockname else "127.0.0.1"


class RegisteredCallsGateway(Gateway):
    """A ``custom`` gateway whose calls are registered through a :class:`ControlApi`.

    Subclasses set :attr:`resource` (the collection's path segment), call
    :meth:`setup_api` in ``__init__`` and route their ``POST``; this class serves ``GET`` and
    ``DELETE`` of ``/<resource>/<call id>``, refuses registrations while draining and ends
    the calls on close. A call object has ``call_id``, ``finish(end)``, ``wait()`` and
    ``state()``, and calls :meth:`forget` when it is over.
    """

    resource: ClassVar[str] = "calls"
    #: how long ``DELETE`` waits for the call's summary
    delete_wait_s: ClassVar[float] = 5.0

    def setup_api(self) -> ControlApi:
        """Create the control API with the ``GET``/``DELETE`` routes of one call.

        Its answers are counted in ``nes2net_<name>_requests_total{status}``.
        """
        from prometheus_client import Counter

        self.calls: dict[str, Any] = {}
        self.accepting = True
        counter = Counter(f"nes2net_{self.name}_requests_total",
                          "Control API requests, by HTTP status", ["status"],
                          registry=metrics_registry(self.ctx))
        self.api = ControlApi(self, counter)
        self.api.route("GET", f"/{self.resource}/{{call_id:.+}}", self._get)
        self.api.route("DELETE", f"/{self.resource}/{{call_id:.+}}", self._delete)
        return self.api

    def call_url(self, request: web.Request, call_id: str) -> str:
        """The URL of a call's resource, on the port of this process."""
        return self.api.url(request, f"/{self.resource}/{quote(call_id, safe='')}")

    def check_accepting(self) -> None:
        """ProtocolError ``shutting_down`` while the service drains."""
        if not self.accepting or self.ctx.draining:
            raise ProtocolError("shutting_down", "the service is draining; retry elsewhere")

    async def start_serving(self) -> None:
        """Serve the control API on ``host:port``."""
        await self.api.start()
        self.bound_port = self.api.bound_port

    async def stop_serving(self) -> None:
        """Refuse new registrations (503); the drain ends the active calls."""
        self.accepting = False

    async def close(self) -> None:
        """End the calls (their summaries published), then stop the control API."""
        calls = list(self.calls.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                for call in calls:
                    call.finish(CallEnd("shutdown"))
                    await call.wait()
        await self.api.close()

    def forget(self, call: Any) -> None:
        """Drop a finished call."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    def _call(self, request: web.Request) -> Any:
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            raise web.HTTPNotFound(reason="no such call in this process")
        return call

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self._call(request).state())

    async def _delete(self, request: web.Request) -> web.Response:
        call = self._call(request)
        call.finish(CallEnd("stop", "deleted"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.delete_wait_s):
                await call.wait()
        return web.json_response(call.state())
