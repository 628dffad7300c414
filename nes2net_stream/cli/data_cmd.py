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


@data.command("build-heldout")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A tiny corpus (for tests and smoke runs).")
@click.option("--per-speaker", type=click.IntRange(min=1), default=None,
              help="Bona fide utterances per speaker [default: 40, quick: 3].")
@click.option("--speakers", default="", metavar="ID,...",
              help="Build only these voices (and their WORLD resyntheses) [default: all].")
@click.option("--systems", default="", metavar="ID,...",
              help="Build only these spoofing systems, e.g. H01,H05,H06 [default: all].")
@click.option("--channel", type=click.Choice(["eval", "train"]), default="eval",
              show_default=True,
              help="Channel mix: the demo eval split's (half unseen codecs) or train's.")
@click.option("--jobs", type=int, default=2, show_default=True, help="Worker processes.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def build_heldout(out_dir: Path, seed: int, quick: bool, per_speaker: int | None,
                  speakers: str, systems: str, channel: str, jobs: int, progress: bool) -> None:
    """Build the held-out eval database in OUT_DIR: new speakers, languages and synthesisers.

    Five real IVR voices in French-Canadian, Italian, Russian and Spanish against espeak-ng in
    those languages, festival's Italian, Russian and HTS voices, and WORLD resynthesis of the
    same speakers, through the demo corpus's eval channel; only the eval split (docs/corpus.md).
    """
    from nes2net_stream.data.corpus.heldout import build_heldout_corpus

    def names(text: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in text.split(",") if n.strip())

    data = build_heldout_corpus(out_dir, seed=seed, quick=quick, jobs=jobs,
                                per_speaker=per_speaker, speakers=names(speakers),
                                systems=names(systems), channel=channel, progress=progress)
    split = data["splits"]["eval"]
    click.echo(f"held-out corpus in {out_dir}: {split['bonafide']} bona fide "
               f"({len(split['bonafide_speakers'])} speakers), {split['spoof']} spoof "
               f"(systems {', '.join(split['systems'])}), built in {data['build_seconds']:.0f} s")
    click.echo(f"summary: {out_dir / 'corpus.json'}")


@data.command("merge")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", "train", multiple=True, metavar="DB[:SPLIT]",
              help="A source of the train split (repeat); SPLIT defaults to train.")
@click.option("--dev", "dev", multiple=True, metavar="DB[:SPLIT]",
              help="A source of the dev split (repeat); SPLIT defaults to dev.")
@click.option("--eval", "eval_", multiple=True, metavar="DB[:SPLIT]",
              help="A source of the eval split (repeat); SPLIT defaults to eval.")
@click.option("--copy", is_flag=True, help="Copy the audio instead of linking to it.")
@click.option("--allow-shared-speakers", is_flag=True,
              help="Accept bona fide speakers present in several of the output's splits.")
@click.option("--exclude-speaker", "exclude", multiple=True, metavar="SPEAKER",
              help="Leave out this speaker's trials, bona fide and spoofed (repeat).")
def merge(out_dir: Path, train: tuple[str, ...], dev: tuple[str, ...], eval_: tuple[str, ...],
          copy: bool, allow_shared_speakers: bool, exclude: tuple[str, ...]) -> None:
    """Merge splits of ASVspoof-layout databases into OUT_DIR (e.g. the demo corpus + yours).

    Example: data merge mixed --train corpus/demo --train my-calls:train --dev corpus/demo
    --eval my-calls (see docs/training.md). Audio is linked, or copied with --copy.
    """
    from nes2net_stream.data.merge import merge_databases, parse_source

    sources = {split: [parse_source(s, split) for s in given]
               for split, given in (("train", train), ("dev", dev), ("eval", eval_)) if given}
    counts = merge_databases(out_dir, sources, copy=copy,
                             allow_shared_speakers=allow_shared_speakers,
                             exclude_speakers=exclude)
    for split, c in counts.items():
        click.echo(f"{split}: {c['bonafide']} bona fide, {c['spoof']} spoof")
    click.echo(f"merged database: {out_dir}")
