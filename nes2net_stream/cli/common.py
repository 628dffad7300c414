"""Helpers shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nes2net_stream.config import cli_overrides, load_settings
from nes2net_stream.settings import Settings

if TYPE_CHECKING:
    from nes2net_stream.evaluation.protocol_scoring import Channel
    from nes2net_stream.models.detector import Detector

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="TOML configuration (default: $NES2NET_CONFIG or ./config.toml or built-in defaults).")
model_option = click.option(
    "--model", "model_path", default=None,
    help="Model bundle: a directory, .tar.gz/.zip archive or builtin:NAME "
         "(default: [model] path of the configuration).")
device_option = click.option(
    "--device", default=None, help="auto, cpu, cuda or cuda:N (default: [model] device).")


bootstrap_unit_option = click.option(
    "--bootstrap-unit", type=click.Choice(["auto", "speaker", "trial"]), default="auto",
    show_default=True, help="Resample whole speakers (trials of one voice are not independent) "
    "or single trials; auto: speakers where the key names them.")
confidence_option = click.option(
    "--confidence", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95,
    show_default=True, help="Two-sided level of the intervals.")


def channel_option(what: str) -> Callable[[F], F]:
    """``--channel CODEC[:BITRATE]``: pass every ``what`` through a codec before scoring."""
    from nes2net_stream.audio.codecs import CODECS

    return click.option(
        "--channel", metavar="CODEC[:BITRATE]",
        help=f"Pass every {what} through this codec before scoring (e.g. amr_nb or "
             "amr_nb:4750), to see how the detector holds up on a channel; codecs: "
             + ", ".join(CODECS) + ".")


def parse_audio_channel(value: str, option: str, *, each: bool = False) -> str | int:
    """``mix``, a 0-based channel number, or with ``each`` ``each``; errors name ``option``."""
    if value == "mix" or (each and value == "each"):
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("expected 'mix'" + (", 'each'" if each else "")
                                 + " or a channel number (0-based)", param_hint=option) from None


def parse_channel(text: str) -> Channel:
    """Parse ``CODEC[:BITRATE]`` into a codec channel; usage errors name the option."""
    from nes2net_stream.errors import AudioError, DependencyError
    from nes2net_stream.evaluation.protocol_scoring import codec_channel

    name, _, rate = text.partition(":")
    try:
        bitrate = int(rate) if rate else None
    except ValueError:
        raise click.BadParameter(f"bitrate {rate!r} is not a whole number of bit/s",
                                 param_hint="--channel") from None
    try:
        return codec_channel(name.strip(), bitrate)
    except (AudioError, DependencyError) as exc:
        raise click.BadParameter(str(exc), param_hint="--channel") from None


def settings_from(config_file: Path | None, **flags: Any) -> Settings:
    """Load settings with CLI flags (``section__key=value``) as the top layer."""
    return load_settings(config_file, overrides=cli_overrides(**flags))


def resolve_device(spec: str) -> str:
    """``auto`` picks CUDA when available, else the CPU."""
    if spec != "auto":
        return spec
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_detector(settings: Settings) -> Detector:
    """Load the configured model bundle on the configured device."""
    import torch

    from nes2net_stream.bundle import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_model(settings.model.path, device=resolve_device(settings.model.device))
