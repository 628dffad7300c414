"""``nes2net-stream data``: build corpora."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def data() -> None:
    """Build training and evaluation corpora."""


@data.command("build-demo")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A tiny corpus (for tests and smoke runs).")
@click.option("--jobs", type=int, default=2, show_default=True, help="Worker processes.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def build_demo(out_dir: Path, seed: int, quick: bool, jobs: int, progress: bool) -> None:
    """Build the offline bona fide / spoof demo corpus in OUT_DIR (ASVspoof 2019 LA layout).

    Uses only locally installed packages: real recordings on the bona fide side, several
    speech synthesisers and vocoder resynthesis on the spoof side, the same telephone channel
    on both. Lists every missing package with its install command before starting.
    """
    from nes2net_stream.data.corpus import build_demo_corpus

    summary = build_demo_corpus(out_dir, seed=seed, quick=quick, jobs=jobs, progress=progress)
    click.echo(summary.describe())
    click.echo(f"summary: {out_dir / 'corpus.json'}")
