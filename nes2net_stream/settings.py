"""The settings schema: one pydantic model per ``config.toml`` section.

Defaults here are the documented defaults of the repository's ``config.toml`` (a test keeps
the two equal). Every section forbids unknown keys, so a typo fails at start-up.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from nes2net_stream.audio.vad import VADConfig
from nes2net_stream.audio.windows import WindowConfig
from nes2net_stream.service.policy import AlertConfig


class Section(BaseModel):
    """Base of all sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    """``[model]``: which bundle scores audio and where."""

    path: str = "builtin:demo"
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    dtype_mode: Literal["weights", "autocast"] = "weights"


class VADSection(Section):
    """``[vad]``: webrtcvad speech detection."""

    enabled: bool = True
    aggressiveness: int = Field(2, ge=0, le=3)
    frame_ms: Literal[10, 20, 30] = 30
    hangover_ms: int = Field(300, ge=0, le=5000)
    onset_frames: int = Field(2, ge=1, le=50)

    def to_config(self) -> VADConfig:
        """The runtime VAD configuration."""
        return VADConfig(**self.model_dump())


class WindowsSection(Section):
    """``[windows]``: speech-only sliding windows (seconds of speech)."""

    window_s: float = Field(4.0, ge=0.5, le=30.0)
    hop_s: float = Field(1.0, ge=0.1, le=30.0)
    min_speech_s: float = Field(1.0, ge=0.1, le=30.0)
    min_new_speech_s: float = Field(0.5, ge=0.0, le=30.0)

    def to_config(self) -> WindowConfig:
        """The runtime window configuration (checks hop <= window etc.)."""
        return WindowConfig(**self.model_dump())


class ScoringSection(Section):
    """``[scoring]``: how window scores combine into a file score or a call's running score."""

    aggregation: Literal["mean", "median", "max", "ema"] = "mean"
    ema_alpha: float = Field(0.3, gt=0.0, le=1.0)
    batch_size: int = Field(16, ge=1, le=4096)
    #: ingress name (generic, webrtc, a gateway's name) -> calibration JSON file for its calls
    calibrations: dict[str, str] = Field(default_factory=dict)
    #: dotted metadata field whose value names one of ``calibrations`` per call ("": none)
    calibration_key: str = Field("", max_length=200)


class ServerSection(Section):
    """``[server]``: the WebSocket/HTTP listener."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    drain_timeout_s: float = Field(30.0, ge=0.0, le=3600.0)
    workers: int = Field(1, ge=1, le=64)
    worker_window_slots: int = Field(512, ge=0, le=65_536)
    scorer_metrics_port: int = Field(0, ge=0, le=65535)
    backlog: int = Field(1024, ge=1, le=65535)
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    tls_cert: str = ""
    tls_key: str = ""


class HttpSection(Section):
    """``[http]``: the HTTP listener for the dashboard, the try-it page and WebRTC signalling."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)


class IceServer(Section):
    """One ``[[webrtc.ice_servers]]`` entry: a STUN or TURN server (``RTCIceServer``)."""

    urls: list[str] = Field(min_length=1)
    username: str = ""
    credential: str = ""


class WebRTCSection(Section):
    """``[webrtc]``: WebRTC ingest (aiortc) behind HTTP signalling on the ``[http]`` listener."""

    enabled: bool = True
    path: str = Field("/v1/webrtc", pattern=r"^/[A-Za-z0-9/_.-]*[A-Za-z0-9_.-]$")
    max_peers: int = Field(50, ge=1, le=10_000)
    max_tracks_per_peer: int = Field(2, ge=1, le=16)
    max_offer_bytes: int = Field(65_536, ge=1024, le=1_048_576)
    connect_timeout_s: float = Field(20.0, gt=0.0, le=600.0)
    ice_servers: list[IceServer] = Field(default_factory=list)


class RedisSection(Section):
    """``[redis]``: where events go."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("nes2net", min_length=1, max_length=64)
    alerts_maxlen: int = Field(100_000, ge=100)
    scores_maxlen: int = Field(1_000_000, ge=100)
    call_ttl_s: int = Field(86_400, ge=60)
    alert_buffer: int = Field(100_000, ge=10)
    score_buffer: int = Field(50_000, ge=10)
    alert_buffer_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)
    score_buffer_bytes: int = Field(128 * 1024 * 1024, ge=64 * 1024)
    socket_timeout_s: float = Field(5.0, gt=0.0, le=120.0)
    alert_journal_dir: str = Field("", max_length=4096)
    alert_journal_fsync_s: float = Field(1.0, ge=0.0, le=60.0)
    alert_journal_segment_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, le=1024 ** 3)


class EngineSection(Section):
    """``[engine]``: the batching scoring worker."""

    max_batch_size: int = Field(32, ge=1, le=4096)
    max_delay_ms: float = Field(10.0, ge=0.0, le=5000.0)
    max_queue: int = Field(4096, ge=1)
    drop_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    threads: int = Field(0, ge=0, le=256)
    cuda_graphs: bool = True
    cuda_graph_max_batch: int = Field(16, ge=1, le=4096)
    cuda_graph_backend: bool = True
    pipeline: bool = True
    conv_encoder: Literal["gemm", "native"] = "gemm"
    pos_conv: Literal["fft", "native"] = "fft"
    encoder_layers: Literal["fused", "native"] = "fused"
    compile_backend: bool = False
    compile_min_batch: int = Field(128, ge=1, le=4096)
    compile_norms: bool = False
    latency_target_ms: float = Field(500.0, gt=0.0, le=600_000.0)
    max_hop_factor: int = Field(8, ge=1, le=64)
    feature_cache: bool = True
    feature_cache_entries: int = Field(10_000, ge=1, le=1_000_000)
    stall_timeout_s: float = Field(120.0, gt=0.0, le=86_400.0)


class AlertsSection(Section):
    """``[alerts]``: running score states and their thresholds."""

    suspicious_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    spoof_threshold: float = Field(0.8, gt=0.0, lt=1.0)
    hysteresis: float = Field(0.1, ge=0.0, lt=1.0)
    min_windows_for_spoof: int = Field(2, ge=1)
    min_windows_for_state: int = Field(2, ge=1)
    default_score_channels: list[str] = Field(default_factory=lambda: ["caller"])

    def to_config(self, scoring: ScoringSection, spoof_prior: float | None) -> AlertConfig:
        """The runtime alert policy (``spoof_prior``: the model's calibration prior, or 0.5)."""
        return AlertConfig(
            suspicious_threshold=self.suspicious_threshold, spoof_threshold=self.spoof_threshold,
            hysteresis=self.hysteresis, min_windows_for_spoof=self.min_windows_for_spoof,
            min_windows_for_state=self.min_windows_for_state, aggregation=scoring.aggregation,
            ema_alpha=scoring.ema_alpha, spoof_prior=0.5 if spoof_prior is None else spoof_prior)


class LimitsSection(Section):
    """``[limits]``: size, rate and time limits on every input."""

    max_calls: int = Field(1000, ge=1)
    max_frame_bytes: int = Field(65_536, ge=320)
    max_text_bytes: int = Field(16_384, ge=256)
    max_metadata_bytes: int = Field(8_192, ge=0)
    start_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    idle_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    max_call_s: float = Field(14_400.0, gt=0.0, le=604_800.0)
    max_realtime_factor: float = Field(50.0, ge=1.0, le=10_000.0)
    realtime_burst_s: float = Field(30.0, ge=0.0, le=3600.0)


class AuthSection(Section):
    """``[auth]``: ingress authentication.

    ``mode = "auto"`` requires a bearer token whenever the server binds beyond loopback.
    """

    mode: Literal["auto", "required", "off"] = "auto"
    tokens: list[str] = Field(default_factory=list)
    tokens_file: str = ""


class LoggingSection(Section):
    """``[logging]``: structlog output."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(Section):
    """All configuration sections."""

    server: ServerSection = Field(default_factory=ServerSection)
    http: HttpSection = Field(default_factory=HttpSection)
    webrtc: WebRTCSection = Field(default_factory=WebRTCSection)
    redis: RedisSection = Field(default_factory=RedisSection)
    model: ModelSection = Field(default_factory=ModelSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    vad: VADSection = Field(default_factory=VADSection)
    windows: WindowsSection = Field(default_factory=WindowsSection)
    scoring: ScoringSection = Field(default_factory=ScoringSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    #: ``[gateways.<name>]`` tables, validated by each plugin's own settings model at start-up
    gateways: dict[str, dict[str, Any]] = Field(default_factory=dict)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    _source: str = PrivateAttr(default="built-in defaults")

    @property
    def source(self) -> str:
        """Where the settings came from (a file path or "built-in defaults")."""
        return self._source

    @source.setter
    def source(self, value: str) -> None:
        self._source = value
