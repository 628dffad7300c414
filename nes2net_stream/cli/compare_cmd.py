"""``nes2net-stream compare``: rank two training recipes from several runs of each."""

from __future__ import annotations

import json
from pathlib import Path

import click

from nes2net_stream.cli.common import bootstrap_unit_option, confidence_option

_SCORES = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("compare")
@click.option("--key", "key_file", required=True, type=_SCORES,
              help="Protocol/key file the score files were computed on.")
@click.option("-a", "--a", "files_a", multiple=True, required=True, type=_SCORES,
              help="Score file of one run of recipe A (repeat: one per seed).")
@click.option("-b", "--b", "files_b", multiple=True, required=True, type=_SCORES,
              help="Score file of one run of recipe B (repeat: one per seed).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=10), default=1000,
              show_default=True, help="Bootstrap resamples.")
@bootstrap_unit_option
@confidence_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the comparison as JSON here.")
def compare_cmd(key_file: Path, files_a: tuple[Path, ...], files_b: tuple[Path, ...],
                n_boot: int, bootstrap_unit: str, confidence: float, seed: int,
                out_file: Path | None) -> None:
    """Recipe B against recipe A: EER, minDCF, actDCF and Cllr, mean over runs, with intervals.

    Every run is scored on the same key. The intervals resample the speakers (shared by all
    runs) and, per recipe, its runs, so they hold the seed-to-seed spread too; "B lower in
    N % of resamples" is how often recipe B came out better.
    """
    from nes2net_stream.evaluation.report import compare_score_files, format_comparison

    report = compare_score_files(list(files_a), list(files_b), key_file, bootstrap=n_boot,
                                 bootstrap_unit=bootstrap_unit, bootstrap_seed=seed,
                                 level=confidence)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    click.echo(format_comparison(report))
