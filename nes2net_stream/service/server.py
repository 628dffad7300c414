"""The service process: model, engine, Redis publisher, WebSocket listener, health and metrics.

HTTP ``GET /livez``, ``/readyz`` and ``/metrics`` are answered on the same port as the
WebSocket ingest paths. SIGTERM/SIGINT start a graceful drain: ``/readyz`` fails, no new call is
accepted, active calls are ended with a summary (their queued windows are scored first), the
Redis buffer is flushed, then the process exits 0. The whole drain is bounded by ``[server]
drain_timeout_s`` (plus a few seconds to close sockets); what is not flushed by then is logged
as lost.

WebSocket keepalive pings go out every ``min(20 s, [limits] idle_timeout_s)``; a peer that does
not answer within the same time (a half-open connection, a client that stopped reading) is
disconnected. Open WebSocket connections are capped at ``[limits] max_calls`` plus
:data:`PENDING_CONNECTIONS` (connections that have not started a call yet); beyond that the
upgrade is refused with HTTP 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import inspect
import json
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import torch
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from nes2net_stream.bundle import load_model
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import Gateway, HandshakeRejected
from nes2net_stream.gateways.registry import load_gateways
from nes2net_stream.logs import get_logger
from nes2net_stream.service import event_loop
from nes2net_stream.service.auth import TokenAuth, is_loopback
from nes2net_stream.service.calibrations import check_ingress_names, load_calibrations
from nes2net_stream.service.context import ServiceContext
from nes2net_stream.service.engine import ScoringEngine
from nes2net_stream.service.events import CallEnd
from nes2net_stream.service.metrics import ServiceMetrics
from nes2net_stream.service.oslimits import check_open_files
from nes2net_stream.service.publisher import RedisConfig, RedisPublisher
from nes2net_stream.service.ws_generic import handle_generic
from nes2net_stream.settings import Settings

log = get_logger("nes2net.service")
Handler = Callable[[ServerConnection, ServiceContext], Awaitable[None]]
GENERIC_PATH = "/v1/stream"
MAX_WS_MESSAGE = 4 * 1024 * 1024  # hard cap; the configurable limits are checked per message
PENDING_CONNECTIONS = 256  # connections beyond max_calls (handshakes, calls not started yet)
MAX_PING_INTERVAL_S = 20.0


def _device_and_dtype(settings: Settings) -> tuple[str, torch.dtype | None]:
    device = settings.model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device={device!r} but CUDA is not available")
    dtype_name = settings.model.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    dtype = None if dtype_name == "float32" else getattr(torch, dtype_name)
    return device, dtype


def exposed_host(settings: Settings) -> str:
    """The listen address that decides whether authentication is required.

    That is the first of ``[server] host`` and ``[http] host`` (when enabled) that is not
    loopback.
    """
    hosts = [settings.server.host] + ([settings.http.host] if settings.http.enabled else [])
    return next((h for h in hosts if not is_loopback(h)), settings.server.host)


def build_engine(settings: Settings, metrics: ServiceMetrics) -> ScoringEngine:
    """Load the model bundle on its device and wrap it in the batching engine."""
    device, dtype = _device_and_dtype(settings)
    detector = load_model(settings.model.path, device=device)
    e = settings.engine
    threads = e.threads
    if not threads and not device.startswith("cuda"):
        # all cores but one: the event loop needs one, and oversubscribed intra-op threads
        # slowed CPU scoring several-fold in the 2-core benchmark
        threads = max(1, (os.cpu_count() or 2) - 1)
    return ScoringEngine(detector, max_batch_size=e.max_batch_size,
                         max_delay_ms=e.max_delay_ms, max_queue=e.max_queue,
                         drop_policy=e.drop_policy, dtype=dtype, threads=threads or None,
                         metrics=metrics,
                         window_samples=int(round(settings.windows.window_s * 16000)),
                         cuda_graphs=e.cuda_graphs, cuda_graph_max_batch=e.cuda_graph_max_batch,
                         cuda_graph_backend=e.cuda_graph_backend,
                         conv_encoder=e.conv_encoder, pos_conv=e.pos_conv,
                         encoder_layers=e.encoder_layers,
                         compile_backend=e.compile_backend,
                         compile_min_batch=e.compile_min_batch,
                         compile_norms=e.compile_norms,
                         cast_weights=settings.model.dtype_mode == "weights",
                         pipeline=None if e.pipeline else False,
                         latency_target_s=e.latency_target_ms / 1000.0,
                         max_stride=e.max_hop_factor, feature_cache=e.feature_cache,
                         feature_cache_entries=e.feature_cache_entries,
                         stall_timeout_s=e.stall_timeout_s)


def build_context(settings: Settings, metrics: ServiceMetrics | None = None, *,
                  engine: Any = None, spoof_prior: float | None = None,
                  worker_index: int = 0) -> ServiceContext:
    """Build the engine (unless given, e.g. a remote one), publisher and shared settings.

    ``worker_index``: this ingest process's index (multi-process mode), for its alert journal.
    """
    metrics = metrics or ServiceMetrics()
    auth = TokenAuth.from_settings(settings.auth, exposed_host(settings))
    if engine is None:
        engine = build_engine(settings, metrics)
        spoof_prior = engine.detector.calibration.spoof_prior
    r = settings.redis
    publisher = RedisPublisher(RedisConfig(
        url=r.url, key_prefix=r.key_prefix, alerts_maxlen=r.alerts_maxlen,
        scores_maxlen=r.scores_maxlen, call_ttl_s=r.call_ttl_s, alert_buffer=r.alert_buffer,
        score_buffer=r.score_buffer, alert_buffer_bytes=r.alert_buffer_bytes,
        score_buffer_bytes=r.score_buffer_bytes, socket_timeout_s=r.socket_timeout_s,
        alert_journal_dir=r.alert_journal_dir, alert_journal_fsync_s=r.alert_journal_fsync_s,
        alert_journal_segment_bytes=r.alert_journal_segment_bytes), metrics,
        worker=worker_index, workers=settings.server.workers)
    alerts = settings.alerts.to_config(settings.scoring, spoof_prior)
    calibrations = load_calibrations(settings.scoring.calibrations)
    return ServiceContext(engine=engine, publisher=publisher, metrics=metrics,
                          calibrations=calibrations,
                          calibration_key=settings.scoring.calibration_key,
                          vad=settings.vad.to_config(), windows=settings.windows.to_config(),
                          alerts=alerts, limits=settings.limits, auth=auth)


class Service:
    """One service process."""

    def __init__(self, settings: Settings, ctx: ServiceContext | None = None,
                 gateway_classes: dict[str, type[Gateway]] | None = None, *,
                 reuse_port: bool = False, worker_index: int | None = None):
        self.settings = settings
        self.reuse_port = reuse_port
        self.worker_index = worker_index
        self.ctx = ctx or build_context(settings)
        self.routes: dict[str, Handler] = {GENERIC_PATH: handle_generic}
        self.gateways = load_gateways(settings.gateways, self.ctx, settings.server.host,
                                      gateway_classes)
        check_ingress_names(self.ctx.calibrations, [gw.name for gw in self.gateways],
                            by_metadata=bool(self.ctx.calibration_key))
        self._ws_gateways: dict[str, Gateway] = {}
        for gw in self.gateways:
            if gw.transport == "websocket":
                self.add_route(gw.config.path, _gateway_handler(gw))
                self._ws_gateways[gw.config.path] = gw
        self.server: Server | None = None
        self.http: Any = None  # the HTTP app (dashboard, try-it page, WebRTC signalling)
        self._tcp_servers: list[asyncio.Server] = []
        self._custom_gateways: list[Gateway] = []
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self.pending_connections = PENDING_CONNECTIONS

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def add_route(self, path: str, handler: Handler) -> None:
        """Serve ``handler`` for WebSocket connections on ``path`` (gateway plugins)."""
        if path in self.routes:
            raise ConfigError(f"two ingest handlers for path {path!r}")
        self.routes[path] = handler

    async def _process_request(self, conn: ServerConnection, request: Request
                               ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path in ("/livez", "/healthz"):
            return _text(conn, HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            return await self._readyz(conn)
        if path == "/metrics":
            self.ctx.metrics.queue_depth.set(self.ctx.engine.queue_depth)
            self.ctx.metrics.event_loop_tasks.set(len(asyncio.all_tasks()))
            resp = _text(conn, HTTPStatus.OK, self.ctx.metrics.render().decode())
            resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return resp
        if path not in self.routes:
            return _text(conn, HTTPStatus.NOT_FOUND, f"no such path: {path}\n")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return _text(conn, HTTPStatus.UPGRADE_REQUIRED, "WebSocket upgrade required\n")
        if self.ctx.draining:
            return _text(conn, HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        open_now = len(self.server.connections) if self.server is not None else 0
        if open_now >= self.ctx.limits.max_calls + self.pending_connections:
            self.ctx.metrics.calls_rejected.labels(reason="connections").inc()
            log.warning("connection refused: too many open connections", open=open_now,
                        remote=_remote(conn))
            return _text(conn, HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        gateway = self._ws_gateways.get(path)
        if gateway is not None:
            try:
                checked = gateway.check_handshake(request, _remote(conn))
                if inspect.isawaitable(checked):  # e.g. a JWT whose keys may need fetching
                    await checked
            except HandshakeRejected as rej:
                # 5xx: the gateway cannot check credentials now (e.g. no signing keys yet)
                why = "unavailable" if rej.status >= 500 else "unauthorized"
                self.ctx.metrics.calls_rejected.labels(reason=why).inc()
                gateway.log.warning("handshake refused", status=rej.status, reason=rej.reason,
                                    remote=_remote(conn))
                return _text(conn, HTTPStatus(rej.status), rej.reason + "\n")
            return None
        if path == GENERIC_PATH and not self.ctx.auth.check_request(request.path,
                                                                    request.headers):
            self.ctx.metrics.calls_rejected.labels(reason="unauthorized").inc()
            log.warning("unauthorized connection refused", path=path,
                        remote=str(conn.remote_address))
            return _text(conn, HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token\n")
        return None

    async def _readyz(self, conn: ServerConnection) -> Response:
        engine = self.ctx.engine
        checks = {"model_loaded": engine.running and not getattr(engine, "stalled", False),
                  "redis": await self.ctx.publisher.ping(),
                  "not_draining": not self.ctx.draining}
        ok = all(checks.values())
        self.ctx.metrics.ready.set(1 if ok else 0)
        resp = _text(conn, HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                     json.dumps({"ready": ok, "checks": checks}) + "\n")
        resp.headers["Content-Type"] = "application/json"
        return resp

    def _select_subprotocol(self, conn: ServerConnection, offered: list[str]) -> str | None:
        path = conn.request.path.split("?", 1)[0] if conn.request else ""
        gateway = self._ws_gateways.get(path)
        if gateway is None:
            return None
        return next((p for p in offered if p in gateway.subprotocols), None)

    async def _handler(self, conn: ServerConnection) -> None:
        path = conn.request.path.split("?", 1)[0] if conn.request else ""
        handler = self.routes.get(path)
        if handler is not None:
            await handler(conn, self.ctx)

    def _ssl(self) -> ssl.SSLContext | None:
        s = self.settings.server
        if not (s.tls_cert or s.tls_key):
            return None
        if not (s.tls_cert and s.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key must be set together")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(s.tls_cert, s.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"server.tls_cert/tls_key: {exc}") from exc
        return ctx

    async def start(self) -> None:
        """Start the engine, the publisher and the listener."""
        await asyncio.to_thread(self.ctx.engine.warmup)
        self.ctx.engine.start()
        await self.ctx.publisher.start()
        s = self.settings.server
        ping = min(MAX_PING_INTERVAL_S, self.settings.limits.idle_timeout_s)
        self.server = await serve(
            self._handler, s.host, s.port, process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=MAX_WS_MESSAGE, ssl=self._ssl(), ping_interval=ping, ping_timeout=ping,
            close_timeout=5, server_header="nes2net-stream", reuse_port=self.reuse_port,
            backlog=s.backlog,
            compression=None)  # audio does not deflate; compressing costs CPU on both ends
        for gw in self.gateways:
            if gw.transport == "tcp":
                srv = await asyncio.start_server(gw.serve_tcp, gw.config.host, gw.config.port,
                                                 limit=1 << 17, reuse_port=self.reuse_port,
                                                 backlog=s.backlog)
                gw.bound_port = srv.sockets[0].getsockname()[1]
                self._tcp_servers.append(srv)
                log.info("gateway listening", gateway=gw.name, host=gw.config.host,
                         port=gw.bound_port)
            elif gw.transport == "custom":
                gw.reuse_port = self.reuse_port
                gw.worker_index = self.worker_index if self.reuse_port else None
                gw.worker_count = self.settings.server.workers if self.reuse_port else 1
                await gw.start_serving()
                self._custom_gateways.append(gw)
                log.info("gateway listening", gateway=gw.name, host=gw.config.host,
                         port=gw.bound_port)
        for gw in self.gateways:  # e.g. fetch the keys that verify providers' tokens
            await gw.prepare()
        if self.settings.http.enabled and not self.worker_index:
            from nes2net_stream.web.app import start_http

            self.http = await start_http(self)
        log.info("service listening", host=s.host, port=self.port, worker=self.worker_index,
                 event_loop=event_loop.loop_name(),
                 model=self.ctx.engine.model_id,
                 device=str(self.ctx.engine.device), auth_required=self.ctx.auth.required,
                 paths=sorted(self.routes), calibrations=sorted(self.ctx.calibrations))

    async def drain(self) -> None:
        """Stop accepting calls, end active ones with summaries, flush Redis, stop.

        Everything is bounded by ``[server] drain_timeout_s``: calls still unfinished and
        events still buffered at the deadline are logged as lost.
        """
        if self.ctx.draining:
            return
        self.ctx.draining = True
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = self.settings.server.drain_timeout_s

        def left(floor: float = 0.0) -> float:
            return max(floor, began + deadline - loop.time())

        log.info("draining", active_calls=len(self.ctx.calls), deadline_s=deadline)
        if self.server is not None:
            self.server.close(close_connections=False)
        for srv in self._tcp_servers:
            srv.close()
        for gw in self._custom_gateways:
            await gw.stop_serving()
        if self.http is not None:
            await self.http.stop_accepting()
        sessions = list(self.ctx.calls.values())
        ends = [asyncio.ensure_future(self.ctx.end_call(s, CallEnd("shutdown")))
                for s in sessions]
        if ends:
            _done, late = await asyncio.wait(ends, timeout=left(0.01))
            if late:
                log.error("drain deadline reached before every call ended", unfinished=len(late))
        if self.server is not None:
            # handlers notice the drain within half a second and close their sockets after
            # sending the summary; close whatever is left
            await asyncio.sleep(min(1.0, left()))
            stragglers = [c.close(1001, "shutting down") for c in list(self.server.connections)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*stragglers, return_exceptions=True),
                                       left(1.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), left(1.0))
        for gw in self.gateways:  # custom gateways' sockets, any gateway's clients
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gw.close(), left(1.0))
        await asyncio.to_thread(self.ctx.engine.stop, drain=True, timeout=left(0.5))
        await self.ctx.publisher.stop(grace_s=left(0.5))
        if self.http is not None:
            await self.http.close()
        log.info("stopped", published=self.ctx.publisher.published,
                 unflushed=self.ctx.publisher.buffered, drain_s=round(loop.time() - began, 3))
        self._stopped.set()

    def request_stop(self) -> None:
        """Ask :meth:`run_forever` to drain and return (same as SIGTERM)."""
        self._stop_requested.set()

    async def run_forever(self) -> None:
        """Start, wait for SIGTERM/SIGINT (or :meth:`request_stop`), drain."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop_requested.set)
        await self._stop_requested.wait()
        await self.drain()


def _gateway_handler(gateway: Gateway) -> Handler:
    async def handle(conn: ServerConnection, _ctx: ServiceContext) -> None:
        await gateway.serve_websocket(conn)

    return handle


def _remote(conn: ServerConnection) -> str | None:
    addr = conn.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else None


def _text(conn: ServerConnection, status: HTTPStatus, body: str) -> Response:
    resp = conn.respond(status, body)
    if isinstance(resp.headers, Headers):
        resp.headers["Cache-Control"] = "no-store"
    return resp


def run_service(settings: Settings, **kwargs: Any) -> None:
    """Blocking entry point of ``nes2net-stream serve``."""
    check_open_files(settings.limits.max_calls, log)  # ingest workers inherit the limit
    faulthandler.enable()  # a fatal signal (SIGSEGV, SIGABRT) prints every thread's stack
    loop = settings.server.event_loop
    if settings.server.workers > 1:
        event_loop.run(run_multiprocess(settings), loop)
    else:
        event_loop.run(Service(settings, **kwargs).run_forever(), loop)
    end_process_after_cuda()


def end_process_after_cuda(code: int = 0) -> None:
    """After a completed shutdown, end a process that used CUDA without interpreter teardown.

    By now every call has drained, every event is published and the engine has stopped.
    On the H200 runs (docs/benchmarks.md) the scorer then aborted (SIGABRT, exit code -6)
    during the interpreter's own teardown, after the last event; the CUDA libraries' global
    state is torn down there, in no order Python controls. A process that initialised CUDA
    therefore waits for the device, flushes its output and leaves with ``os._exit``; one that
    did not returns and exits normally.
    """
    if not torch.cuda.is_initialized():
        return
    with contextlib.suppress(Exception):
        torch.cuda.synchronize()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


async def run_multiprocess(settings: Settings) -> None:
    """The scorer process: the model and engine here, ``server.workers`` ingest processes."""
    from nes2net_stream.service.multiproc import ScorerHub, WorkerPool

    if settings.server.port == 0:
        raise ConfigError("server.port must be a fixed port when server.workers > 1")
    # fail fast, naming the key, on what the workers would otherwise each refuse
    TokenAuth.from_settings(settings.auth, exposed_host(settings))
    enabled = [name for name, raw in settings.gateways.items()
               if isinstance(raw, dict) and raw.get("enabled", False)]
    check_ingress_names(load_calibrations(settings.scoring.calibrations), enabled,
                        by_metadata=bool(settings.scoring.calibration_key))
    metrics = ServiceMetrics()
    engine = build_engine(settings, metrics)
    await asyncio.to_thread(engine.warmup)
    engine.start()
    if settings.server.scorer_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.server.scorer_metrics_port, addr=settings.server.host,
                          registry=metrics.registry)
    pool = WorkerPool(settings, ScorerHub(engine), engine, settings.server.workers)
    pool.start()
    log.info("scorer ready", workers=settings.server.workers, model=engine.model_id,
             device=str(engine.device))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await pool.watch(stop)
    log.info("stopping ingest workers")
    await asyncio.to_thread(pool.stop, settings.server.drain_timeout_s + 15)
    await asyncio.to_thread(engine.stop, drain=True, timeout=10)
    if pool.config_error is not None:
        raise ConfigError(pool.config_error + " (its log line names the key)")
    log.info("scorer stopped", windows=engine.windows_scored)
