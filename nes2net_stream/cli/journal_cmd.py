"""``nes2net-stream journal``: what the alert journal holds (pending alerts, open calls)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from nes2net_stream.cli.common import config_option, settings_from


@click.command("journal")
@click.argument("directory", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_option
def journal_cmd(directory: Path | None, config_file: Path | None) -> None:
    """Show each ingest process's alert journal under DIRECTORY as JSON.

    DIRECTORY defaults to ``[redis] alert_journal_dir``. Reading does not disturb a running
    service: alerts still pending are written by the next start (or by the running process once
    Redis is back); open calls of a directory no process holds get a ``lost`` summary then.
    """
    from nes2net_stream.errors import ConfigError
    from nes2net_stream.service.alert_journal import describe, worker_dirs

    if directory is None:
        configured = settings_from(config_file).redis.alert_journal_dir
        if not configured:
            raise ConfigError("redis.alert_journal_dir is not set; give the directory")
        directory = Path(configured)
        if not directory.is_dir():
            raise ConfigError(f"redis.alert_journal_dir: {directory} does not exist")
    journals = [describe(p) for p in worker_dirs(directory).values()]
    click.echo(json.dumps({"journals": journals}, indent=2))
