"""The settings schema: one pydantic model per ``config.toml`` section.

Defaults here are the documented defaults of the repository's ``config.toml`` (a test keeps
the two equal). Every section forbids unknown keys, so a typo fails at start-up.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from nes2net_stream.audio.vad import VADConfig
from nes2net_stream.audio.windows import WindowConfig


class Section(BaseModel):
    """Base of all sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    """``[model]``: which bundle scores audio and where."""

    path: str = "builtin:demo"
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


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
    """``[scoring]``: how window scores combine into a file or running call score."""

    aggregation: Literal["mean", "median", "max", "ema"] = "mean"
    ema_alpha: float = Field(0.3, gt=0.0, le=1.0)
    batch_size: int = Field(16, ge=1, le=4096)


class LoggingSection(Section):
    """``[logging]``: structlog output."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(Section):
    """All configuration sections."""

    model: ModelSection = Field(default_factory=ModelSection)
    vad: VADSection = Field(default_factory=VADSection)
    windows: WindowsSection = Field(default_factory=WindowsSection)
    scoring: ScoringSection = Field(default_factory=ScoringSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    _source: str = PrivateAttr(default="built-in defaults")

    @property
    def source(self) -> str:
        """Where the settings came from (a file path or "built-in defaults")."""
        return self._source

    @source.setter
    def source(self, value: str) -> None:
        self._source = value
