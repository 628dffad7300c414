"""Linear probe: how much spoofing evidence do the GE2E speaker encoder's layers hold?

Each trial's first 4 seconds go through the frozen encoder (``--speaker-weights`` or the
installed Resemblyzer package's ``pretrained.pt``); the mean and standard deviation over time
of one LSTM layer's states (or of all layers, or of the log mel bands the encoder reads) are
the trial's features. A class-balanced, L2-regularised logistic regression is fitted on the
train split and scored on eval (optionally through a codec, as `eval --channel`), for several
regularisation strengths. Prints one JSON line per (features, C) with the eval EER in %.

A probe, not a detector: it reads the eval figures of every setting, so its best row is an
optimistic estimate (docs/training.md, "A frozen speaker encoder as front-end").

    python scripts/probe_speaker_layers.py corpus/demo [--channel g726:16000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nes2net_stream.audio.io import load_audio, resample
from nes2net_stream.audio.vad import VADConfig, speech_stream
from nes2net_stream.data.protocols import audio_path, database_split, read_protocol
from nes2net_stream.evaluation.metrics import compute_eer
from nes2net_stream.evaluation.protocol_scoring import codec_channel
from nes2net_stream.models.config import SpeakerEncoderConfig
from nes2net_stream.models.speaker_frontend import (
    SpeakerFrontend,
    installed_resemblyzer_weights,
    read_ge2e_weights,
)

CROP = 4 * 16_000


def trial_features(encoder: SpeakerFrontend, wave: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled (mean, std) statistics of every layer and of the log mel input."""
    x = torch.from_numpy(wave[:CROP].astype(np.float32))[None]
    with torch.no_grad():
        h = encoder.mel_frames(x)
        out = {"logmel": torch.log(h + 1e-6)}
        for i, layer in enumerate(encoder.layers):
            h, _ = layer(h)
            out[f"layer{i + 1}"] = h
    feats = {k: torch.cat((v[0].mean(0), v[0].std(0))).numpy() for k, v in out.items()}
    feats["all_layers"] = np.concatenate([feats[f"layer{i + 1}"]
                                          for i in range(len(encoder.layers))])
    return feats


def split_features(encoder: SpeakerFrontend, root: Path, split: str, channel: str | None,
                   speech_only: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features and spoof labels (1 = spoof) of every trial of a split.

    ``speech_only``: from the first 4 s of the trial's VAD speech stream (silence dropped, as
    the live service scores) instead of its first 4 s.
    """
    protocol, audio_dir = database_split(root, split)
    transmit = None
    if channel:
        codec, _, rate = channel.partition(":")
        transmit = codec_channel(codec, int(rate) if rate else None)
    rows: dict[str, list[np.ndarray]] = {}
    labels = []
    for trial in read_protocol(protocol):
        clip = load_audio(audio_path(audio_dir, trial.utterance), sample_rate=None)
        raw = clip.samples if transmit is None else transmit(clip.samples, clip.sample_rate)
        wave = resample(raw.astype(np.float32), clip.sample_rate, 16_000)
        if speech_only:
            speech = speech_stream(wave, VADConfig())
            wave = speech if speech.shape[0] >= 16_000 else wave  # under 1 s: keep it all
        for key, value in trial_features(encoder, wave).items():
            rows.setdefault(key, []).append(value)
        labels.append(trial.is_spoof)
    return {k: np.stack(v) for k, v in rows.items()}, np.asarray(labels, dtype=np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression, 0.5 |w|^2 + C * sum of weighted log-losses."""
    xt = torch.from_numpy(x.astype(np.float64))
    yt = torch.from_numpy(y.astype(np.float64))
    n_pos = float(y.sum())
    weights = torch.where(yt > 0, len(y) / (2 * n_pos), len(y) / (2 * (len(y) - n_pos)))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-9,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ w + b
        loss = 0.5 * w.square().sum() + c * (
            weights * torch.nn.functional.binary_cross_entropy_with_logits(
                logits, yt, reduction="none")).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("database", type=Path)
    ap.add_argument("--channel", default=None, help="codec[:bitrate] applied to eval trials")
    ap.add_argument("--speaker-weights", type=Path, default=None)
    ap.add_argument("--features", nargs="+", default=None,
                    help="only these feature sets (logmel, layer1.., all_layers)")
    ap.add_argument("--c", nargs="+", type=float, default=[0.01, 0.1, 1.0],
                    help="regularisation strengths to fit")
    ap.add_argument("--speech-only", action="store_true",
                    help="features of the first 4 s of VAD speech (no leading silence)")
    ap.add_argument("--scores-out", type=Path, default=None,
                    help="also write each setting's eval scores (<features>-C<c>.txt, "
                    "higher = more bona fide) here, for compare")
    args = ap.parse_args()
    path = args.speaker_weights or installed_resemblyzer_weights()
    if path is None:
        raise SystemExit("no GE2E weights: pass --speaker-weights or install resemblyzer")
    torch.manual_seed(0)
    encoder = SpeakerFrontend(SpeakerEncoderConfig()).eval()
    encoder.load_encoder(read_ge2e_weights(path))
    train_x, train_y = split_features(encoder, args.database, "train", None, args.speech_only)
    eval_x, eval_y = split_features(encoder, args.database, "eval", args.channel,
                                    args.speech_only)
    protocol, _ = database_split(args.database, "eval")
    ids = [t.utterance for t in read_protocol(protocol)]
    for key in args.features or list(train_x):
        mean, std = train_x[key].mean(0), train_x[key].std(0) + 1e-8
        xs, es = (train_x[key] - mean) / std, (eval_x[key] - mean) / std
        for c in args.c:
            w, b = fit_logistic(xs, train_y, c)
            spoof_score = es @ w + b
            bona_score = -spoof_score  # EER convention: higher = more bona fide
            eer, _ = compute_eer(bona_score[eval_y == 0], bona_score[eval_y == 1])
            if args.scores_out is not None:
                args.scores_out.mkdir(parents=True, exist_ok=True)
                (args.scores_out / f"{key}-C{c:g}.txt").write_text(
                    "".join(f"{u} {s!r}\n" for u, s in zip(ids, bona_score.tolist(),
                                                           strict=True)))
            print(json.dumps({"features": key, "C": c, "channel": args.channel,
                              "speech_only": args.speech_only,
                              "eval_eer_pct": round(100 * eer, 2)}), flush=True)


if __name__ == "__main__":
    main()
