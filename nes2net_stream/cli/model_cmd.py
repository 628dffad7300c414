"""``nes2net-stream model``: inspect model bundles."""

from __future__ import annotations

import json

import click


@click.group()
def model() -> None:
    """Inspect model bundles."""


@model.command("info")
@click.argument("path", default="builtin:demo")
def info(path: str) -> None:
    """Print a bundle's id, architecture, size and calibration as JSON."""
    from nes2net_stream.bundle import load_model
    from nes2net_stream.models.nes2net import count_parameters

    detector = load_model(path)
    desc = detector.describe()
    desc.get("metadata", {}).pop("training", None)
    desc["parameters"] = {
        "total": count_parameters(detector, trainable_only=False),
        "frontend": count_parameters(detector.frontend, trainable_only=False),
        "backend": count_parameters(detector.backend, trainable_only=False),
    }
    desc["calibration"] = detector.calibration.to_dict()
    if desc["frontend"]["type"] == "ssl":
        desc["frontend"]["hf_config"] = {
            k: desc["frontend"]["hf_config"].get(k)
            for k in ("model_type", "hidden_size", "num_hidden_layers")}
    click.echo(json.dumps(desc, indent=2))
