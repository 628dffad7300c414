"""``nes2net-stream serve``: run the streaming service."""

from __future__ import annotations

from pathlib import Path

import click

from nes2net_stream.cli.common import config_option, device_option, model_option, settings_from


@click.command()
@config_option
@model_option
@device_option
@click.option("--host", default=None, help="Listen address [server.host].")
@click.option("--port", type=int, default=None, help="Listen port [server.port].")
@click.option("--redis-url", default=None, help="Redis URL [redis.url].")
@click.option("--alert-journal", "alert_journal", default=None, metavar="DIR",
              help="Keep alerts not yet in Redis on disk here, replayed by the next start "
                   "[redis.alert_journal_dir].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default=None)
def serve(config_file: Path | None, model_path: str | None, device: str | None,
          host: str | None, port: int | None, redis_url: str | None, alert_journal: str | None,
          log_level: str | None, log_format: str | None) -> None:
    """Run the streaming service: WebSocket ingest, batched scoring, alerts to Redis."""
    from nes2net_stream.logs import configure_logging
    from nes2net_stream.service.server import run_service

    settings = settings_from(config_file, model__path=model_path, model__device=device,
                             server__host=host, server__port=port, redis__url=redis_url,
                             redis__alert_journal_dir=alert_journal,
                             logging__level=log_level, logging__format=log_format)
    configure_logging(settings.logging.level, settings.logging.format)
    run_service(settings)
