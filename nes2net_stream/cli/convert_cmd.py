"""``nes2net-stream convert-checkpoint``: the authors' published checkpoints as model bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nes2net_stream.errors import ConfigError
from nes2net_stream.models.checkpoints.presets import ARCHITECTURES


def _ssl_overrides(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of transformers config keys")
    return data


@click.command("convert-checkpoint")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--arch", required=True, type=click.Choice(list(ARCHITECTURES)),
              help="Published architecture of the checkpoint (see docs/checkpoints.md).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the model bundle to write.")
@click.option("--aggregation", type=click.Choice(["sea", "weighted_sum", "attentive_merge"]),
              default=None, help="Layer aggregation of the WavLM CtrSVDD models [sea].")
@click.option("--pooling", type=click.Choice(["mean", "astp"]), default=None,
              help="Back-end pooling [mean].")
@click.option("--dilation", type=int, default=None,
              help="Dilation of the inner convolutions [2 for XLS-R, 1 for WavLM].")
@click.option("--se-ratio", type=int, default=None, help="SE reduction ratio [1].")
@click.option("--outer-ratio", type=int, default=None, help="Outer Nes2Net groups [8].")
@click.option("--inner-ratio", type=int, default=None, help="Inner Res2Net groups [8].")
@click.option("--n-logits", type=click.Choice(["1", "2"]), default=None,
              help="Classifier outputs [2 for ASVspoof models, 1 for CtrSVDD].")
@click.option("--model-id", default=None, help="Model id stored in the bundle [ARCH-FILE].")
@click.option("--ssl-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSON of transformers config keys replacing parts of the "
                                 "preset's SSL configuration (checkpoints of another size).")
@click.option("--trust-pickle", is_flag=True,
              help="Also load Python objects stored in the file (only for trusted files).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def convert_checkpoint_cmd(checkpoint: Path, arch: str, out_dir: Path, aggregation: str | None,
                           pooling: str | None, dilation: int | None, se_ratio: int | None,
                           outer_ratio: int | None, inner_ratio: int | None,
                           n_logits: str | None, model_id: str | None, ssl_config: Path | None,
                           trust_pickle: bool, overwrite: bool, as_json: bool) -> None:
    """Convert an official Nes2Net CHECKPOINT (.pth) into a model bundle.

    Every tensor must map onto the chosen architecture; unknown, missing or mis-shaped ones
    are listed. The bundle has no calibration: fit one with `eval --calibrate-on dev`.
    """
    from nes2net_stream.bundle import save_model
    from nes2net_stream.models.checkpoints.official import convert_checkpoint, model_card

    options = {"pooling": pooling, "dilation": dilation, "se_ratio": se_ratio,
               "outer_ratio": outer_ratio, "inner_ratio": inner_ratio,
               "n_logits": int(n_logits) if n_logits else None}
    detector, report = convert_checkpoint(
        checkpoint, arch, aggregation=aggregation, backend_options=options,
        ssl_overrides=_ssl_overrides(ssl_config), model_id=model_id, trust_pickle=trust_pickle)
    save_model(detector, out_dir, model_card=model_card(detector, report), overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "bundle": str(out_dir),
                               "model_id": detector.model_id}))
    else:
        click.echo(report.format())
        click.echo(f"model bundle written to {out_dir} (model id {detector.model_id}; "
                   "not calibrated)")
