"""What every ingest source shares: configs, the engine, the publisher and the call registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from nes2net_stream.audio.vad import VADConfig
from nes2net_stream.audio.windows import WindowConfig
from nes2net_stream.models.detector import Calibration
from nes2net_stream.service.auth import TokenAuth
from nes2net_stream.service.engine import ScoringEngine
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd, CallStart, OutputEvent
from nes2net_stream.service.metrics import ServiceMetrics
from nes2net_stream.service.policy import AlertConfig
from nes2net_stream.service.publisher import RedisPublisher
from nes2net_stream.service.session import CallSession, EventSink
from nes2net_stream.settings import LimitsSection


@dataclass
class ServiceContext:
    """Shared state of one service process."""

    engine: ScoringEngine
    publisher: RedisPublisher
    metrics: ServiceMetrics
    vad: VADConfig
    windows: WindowConfig
    alerts: AlertConfig
    limits: LimitsSection
    auth: TokenAuth
    #: calibration per ingress name (``[scoring] calibrations``); others use the model's
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    #: dotted metadata field whose value picks one of ``calibrations`` per call
    calibration_key: str = ""
    calls: dict[str, CallSession] = field(default_factory=dict)
    draining: bool = False

    def open_call(self, start: CallStart, sink: EventSink | None = None) -> CallSession:
        """Register a new call; refuses duplicates, overload and new calls while draining."""
        if self.draining:
            self.metrics.calls_rejected.labels(reason="draining").inc()
            raise ProtocolError("shutting_down", "the service is draining; retry elsewhere")
        if start.call_id in self.calls:
            self.metrics.calls_rejected.labels(reason="duplicate").inc()
            raise ProtocolError("duplicate_call_id",
                                f"call_id {start.call_id!r} is already streaming")
        if len(self.calls) >= self.limits.max_calls:
            self.metrics.calls_rejected.labels(reason="capacity").inc()
            raise ProtocolError("too_many_calls",
                                f"{len(self.calls)} calls active (limit {self.limits.max_calls})")
        session = CallSession(start, self, sink)
        self.calls[start.call_id] = session
        self.metrics.active_calls.set(len(self.calls))
        self.metrics.calls_started.labels(gateway=start.source.gateway).inc()
        session.log.info("call started", encoding=start.encoding, sample_rate=start.sample_rate,
                         channels=list(start.channels), scored=session.scored_roles,
                         calibration=session.calibration_name or "model")
        return session

    async def end_call(self, session: CallSession, end: CallEnd) -> list[OutputEvent]:
        """Finish a call (summary published) and unregister it."""
        try:
            return await session.close(end)
        finally:
            if self.calls.get(session.call_id) is session:
                del self.calls[session.call_id]
                self.metrics.active_calls.set(len(self.calls))
                reason = session.ended.reason if session.ended else end.reason
                self.metrics.calls_ended.labels(reason=reason).inc()
