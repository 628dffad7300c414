"""The ``nes2net-stream`` command line."""

from __future__ import annotations

import sys

import click

from nes2net_stream import __version__
from nes2net_stream.cli.alerts_cmd import build_calls_cmd, eval_alerts_cmd
from nes2net_stream.cli.bench_cmd import bench
from nes2net_stream.cli.compare_cmd import compare_cmd
from nes2net_stream.cli.convert_cmd import convert_checkpoint_cmd
from nes2net_stream.cli.data_cmd import data
from nes2net_stream.cli.eval_cmd import eval_cmd
from nes2net_stream.cli.journal_cmd import journal_cmd
from nes2net_stream.cli.model_cmd import model
from nes2net_stream.cli.score_cmd import score
from nes2net_stream.cli.serve_cmd import serve
from nes2net_stream.cli.stream_cmd import stream, watch
from nes2net_stream.cli.train_cmd import train
from nes2net_stream.errors import Nes2NetError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="nes2net-stream")
def cli() -> None:
    """Real-time voice-deepfake detection for telephone calls with Nes2Net."""


cli.add_command(score)
cli.add_command(train)
cli.add_command(eval_cmd)
cli.add_command(eval_alerts_cmd)
cli.add_command(compare_cmd)
cli.add_command(journal_cmd)
cli.add_command(data)
data.add_command(build_calls_cmd)
cli.add_command(model)
cli.add_command(serve)
cli.add_command(stream)
cli.add_command(watch)
cli.add_command(bench)
cli.add_command(convert_checkpoint_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, prog_name="nes2net-stream", standalone_mode=False)
    except Nes2NetError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
