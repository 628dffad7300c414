"""``nes2net-stream train``: train or fine-tune a detector on an ASVspoof-style database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nes2net_stream.cli.common import resolve_device
from nes2net_stream.errors import ConfigError


def build_model(opts: dict[str, Any]) -> Any:
    """A fresh detector from the command-line architecture options, or a bundle to fine-tune."""
    from nes2net_stream.bundle import load_model
    from nes2net_stream.models.config import BackendConfig, SpectralConfig, SSLConfig
    from nes2net_stream.models.detector import Detector
    from nes2net_stream.models.ssl_frontend import SSLFrontend

    if opts["init_model"]:
        detector = load_model(opts["init_model"])
        if opts["model_id"]:
            detector.model_id = opts["model_id"]
        return detector
    if opts["frontend"] == "spectral":
        front = SpectralConfig(kind=opts["spectral_kind"], n_features=opts["n_features"],
                               max_freq_hz=opts["max_freq_hz"], n_fft=opts["n_fft"],
                               win_length=opts["win_length"], hop_length=opts["hop_length"],
                               projection_dim=opts["projection_dim"])
        module = None
        dim = front.projection_dim or front.n_features
    elif opts["frontend"] == "speaker":
        module = _speaker_frontend(opts["speaker_weights"], opts["speaker_layer"])
        front, dim = module.cfg, module.output_dim
    else:
        if not opts["ssl_path"]:
            raise click.UsageError("--frontend ssl needs --ssl-path (a local transformers folder)")
        front = SSLConfig(family=opts["ssl_family"], aggregation=opts["aggregation"],
                          freeze=opts["freeze_ssl"])
        module = SSLFrontend.from_pretrained(opts["ssl_path"], front,
                                             allow_download=opts["allow_download"])
        front = module.cfg
        dim = module.output_dim
    back = BackendConfig(variant=opts["variant"], input_dim=dim, outer_ratio=opts["outer_ratio"],
                         inner_ratio=opts["inner_ratio"], se_ratio=opts["se_ratio"],
                         dilation=opts["dilation"], pooling=opts["pooling"],
                         activation=opts["activation"], n_logits=opts["n_logits"],
                         se_min_channels=2 if opts["activation"] == "selu" else 1)
    return Detector(front, back, model_id=opts["model_id"] or "nes2net-model",
                    frontend_module=module)


def _speaker_frontend(weights: Path | None, layer: int) -> Any:
    """A speaker-encoder front-end initialised from a local GE2E ``pretrained.pt``."""
    from nes2net_stream.errors import BundleError
    from nes2net_stream.models.config import SpeakerEncoderConfig
    from nes2net_stream.models.speaker_frontend import (
        SpeakerFrontend,
        installed_resemblyzer_weights,
        read_ge2e_weights,
    )

    path = weights or installed_resemblyzer_weights()
    if path is None:
        raise click.UsageError("--frontend speaker needs --speaker-weights (a GE2E "
                               "pretrained.pt), or the Resemblyzer package installed: "
                               "pip install --no-deps resemblyzer==0.1.4")
    try:
        module = SpeakerFrontend(SpeakerEncoderConfig(
            layer=layer, source=f"GE2E LSTM from {Path(path).name}"))
        module.load_encoder(read_ge2e_weights(path))
    except (BundleError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    return module


@click.command()
@click.option("--database", required=True, type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="ASVspoof 2019 LA layout root (also the demo corpus).")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Checkpoints and state; re-running the command resumes here.")
@click.option("--out", "out_bundle", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the final model bundle [RUN_DIR/model].")
@click.option("--model-id", default=None, help="Model id stored in the bundle.")
@click.option("--init-model", default=None, help="Fine-tune this bundle instead of a new model.")
@click.option("--frontend", type=click.Choice(["spectral", "ssl", "speaker"]),
              default="spectral", show_default=True,
              help="spectral: log spectra; ssl: a transformers speech model; speaker: a frozen "
                   "pre-trained GE2E speaker encoder.")
@click.option("--speaker-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="GE2E pretrained.pt for --frontend speaker [the installed "
                                 "Resemblyzer package's].")
@click.option("--speaker-layer", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --frontend speaker: 0 mixes all LSTM layers (learnt weights), "
                   "k uses layer k alone.")
@click.option("--spectral-kind", type=click.Choice(["lfb", "lfcc", "logspec"]), default="lfb",
              show_default=True)
@click.option("--n-features", type=int, default=128, show_default=True)
@click.option("--max-freq-hz", type=float, default=4000.0, show_default=True)
@click.option("--n-fft", type=int, default=512, show_default=True)
@click.option("--win-length", type=int, default=400, show_default=True,
              help="Analysis window in samples at 16 kHz.")
@click.option("--hop-length", type=int, default=160, show_default=True,
              help="Frame step in samples at 16 kHz (320 = the 20 ms of SSL models).")
@click.option("--projection-dim", type=int, default=0, show_default=True,
              help="Learnable stem from the spectral features to this back-end dimension.")
@click.option("--ssl-path", default=None, help="Local transformers folder with SSL weights.")
@click.option("--ssl-family", type=click.Choice(["wav2vec2", "wavlm", "hubert"]),
              default="wav2vec2", show_default=True)
@click.option("--aggregation", type=click.Choice(["last", "sea", "weighted_sum",
              "attentive_merge"]), default="last", show_default=True)
@click.option("--freeze-ssl", is_flag=True, help="Train the back-end only.")
@click.option("--allow-download", is_flag=True, help="Allow --ssl-path to be a hub id.")
@click.option("--variant", type=click.Choice(["nes2net", "nes2net_x"]), default="nes2net_x",
              show_default=True)
@click.option("--outer-ratio", type=int, default=8, show_default=True)
@click.option("--inner-ratio", type=int, default=8, show_default=True)
@click.option("--se-ratio", type=int, default=1, show_default=True)
@click.option("--dilation", type=int, default=2, show_default=True)
@click.option("--pooling", type=click.Choice(["mean", "astp"]), default="mean", show_default=True)
@click.option("--activation", type=click.Choice(["relu", "selu"]), default="relu",
              show_default=True)
@click.option("--n-logits", type=click.Choice(["1", "2"]), default="2", show_default=True)
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--frontend-lr", type=float, default=1e-6, show_default=True)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--class-weights", type=float, nargs=2, default=(0.1, 0.9), show_default=True,
              help="Cross-entropy weights of spoof and bona fide.")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine",
              show_default=True)
@click.option("--bn-recalibration-batches", type=int, default=50, show_default=True,
              help="Re-estimate batch-norm statistics on clean training crops after "
                   "averaging (0 disables).")
@click.option("--balance/--no-balance", default=False, show_default=True,
              help="Sample every bona fide speaker and spoofing system equally (use with "
                   "--class-weights 0.5 0.5).")
@click.option("--mask-channels", type=click.IntRange(min=0), default=0, show_default=True,
              help="Zero two random bands of up to this many back-end input channels per "
                   "training crop (SpecAugment-style; 0 disables).")
@click.option("--mask-frames", type=click.IntRange(min=0), default=0, show_default=True,
              help="Zero two random spans of up to this many frames per training crop.")
@click.option("--speech-crops", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of training crops cut from the VAD speech stream (silence dropped, "
                   "as the live service scores); above 0, dev crops come from it too.")
@click.option("--teacher", "teachers", multiple=True, metavar="BUNDLE",
              help="Also train towards the averaged scores of this bundle (repeat for several; "
                   "knowledge distillation).")
@click.option("--distill-weight", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
              show_default=True, help="Share of the distillation loss, with --teacher.")
@click.option("--distill-temperature", type=click.FloatRange(0.0, min_open=True), default=2.0,
              show_default=True, help="Temperature softening both scores, with --teacher.")
@click.option("--calibration-mode", type=click.Choice(["4s", "windows"]), default="4s",
              show_default=True,
              help="Scoring of the dev trials the calibration is fitted on: the official "
                   "4-second crop, or speech windows averaged as the live service does.")
@click.option("--segment-s", type=float, default=4.0, show_default=True)
@click.option("--average-best", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-batches", type=int, default=None, help="Batches per epoch (quick runs).")
@click.option("--limit-train", type=int, default=None, help="Use a random subset of train.")
@click.option("--limit-dev", type=int, default=None, help="Use a random subset of dev.")
@click.option("--num-workers", type=int, default=0, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="RawBoost and telephone-codec augmentation of training crops.")
@click.option("--augment-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file with augmentation settings (see docs/augmentation.md).")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Fit the score calibration on dev at the end.")
@click.option("--device", default="auto", show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def train(**opts: Any) -> None:
    """Train a Nes2Net detector (back-end only or with SSL fine-tuning)."""
    from nes2net_stream.bundle import save_model
    from nes2net_stream.data.augment import AugmentConfig, TelephoneAugment
    from nes2net_stream.evaluation.protocol_scoring import fit_calibration, score_trials
    from nes2net_stream.training.dataset import ProtocolDataset, load_split
    from nes2net_stream.training.trainer import TrainConfig, Trainer

    opts["n_logits"] = int(opts["n_logits"])
    augment = None
    aug_dict: dict[str, Any] | None = None
    if opts["augment"]:
        cfg_data = {}
        if opts["augment_config"]:
            try:
                cfg_data = json.loads(opts["augment_config"].read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{opts['augment_config']}: invalid JSON ({exc})") from exc
        aug_cfg = AugmentConfig.from_dict(cfg_data)
        augment = TelephoneAugment(aug_cfg)
        aug_dict = aug_cfg.to_dict()
    cfg = TrainConfig(
        epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
        frontend_lr=0.0 if opts["freeze_ssl"] else opts["frontend_lr"],
        weight_decay=opts["weight_decay"], class_weights=tuple(opts["class_weights"]),
        schedule=opts["schedule"], segment_s=opts["segment_s"], balance=opts["balance"],
        bn_recalibration_batches=opts["bn_recalibration_batches"],
        mask_channels=opts["mask_channels"], mask_frames=opts["mask_frames"],
        speech_crops=opts["speech_crops"], teachers=tuple(opts["teachers"]),
        distill_weight=opts["distill_weight"], distill_temperature=opts["distill_temperature"],
        average_best=opts["average_best"], seed=opts["seed"], max_batches=opts["max_batches"],
        num_workers=opts["num_workers"], extra={"augment": aug_dict,
                                                "limit_train": opts["limit_train"],
                                                "limit_dev": opts["limit_dev"]})
    from nes2net_stream.training.trainer import seed_everything

    seed_everything(opts["seed"])
    model = build_model(opts)
    segment = int(round(cfg.segment_s * 16000))
    train_trials, train_audio = load_split(opts["database"], "train", limit=opts["limit_train"],
                                           seed=opts["seed"])
    dev_trials, dev_audio = load_split(opts["database"], "dev", limit=opts["limit_dev"],
                                       seed=opts["seed"])
    train_set = ProtocolDataset(train_trials, train_audio, segment_samples=segment, train=True,
                                augment=augment, seed=opts["seed"],
                                speech_crops=cfg.speech_crops)
    dev_set = ProtocolDataset(dev_trials, dev_audio, segment_samples=segment, train=False,
                              speech_crops=cfg.speech_crops)
    device = resolve_device(opts["device"])
    trainer = Trainer(model, train_set, dev_set, cfg, opts["run_dir"], device=device,
                      progress=opts["progress"])
    model = trainer.fit()
    model.metadata.update({
        "training": {"database": opts["database"].name, "train_trials": len(train_trials),
                     "dev_trials": len(dev_trials), "config": trainer_config_dict(cfg),
                     "best_epochs": trainer.best_epochs(),
                     "history": [e.__dict__ for e in trainer.history]},
    })
    if opts["calibrate"]:
        raw = score_trials(model, dev_trials, dev_audio, mode=opts["calibration_mode"],
                           progress=opts["progress"])
        model.calibration = fit_calibration(raw, dev_trials, source=f"{opts['database'].name}/dev"
                                            f" ({opts['calibration_mode']})")
    out = opts["out_bundle"] or opts["run_dir"] / "model"
    save_model(model.cpu(), out, overwrite=True)
    click.echo(f"model bundle written to {out}")


def trainer_config_dict(cfg: Any) -> dict[str, Any]:
    """Training configuration as plain JSON data."""
    import dataclasses

    d = dataclasses.asdict(cfg)
    d["class_weights"] = list(d["class_weights"])
    d["teachers"] = list(d["teachers"])
    return d
