"""Deterministic planning of the corpus: which clips, texts, voices and channels go where.

Everything random is drawn here (or from a per-utterance seed fixed here), in a fixed order, so
a seed always gives the same protocol files.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nes2net_stream.data.corpus import dsp
from nes2net_stream.data.corpus.channel import ChannelParams, draw_channels
from nes2net_stream.data.corpus.render import Analysis, Clip, UtteranceJob
from nes2net_stream.data.corpus.sources import SPEAKERS, Recording
from nes2net_stream.data.corpus.systems import SPOOF_RATIO, SYSTEMS, draw_voice, systems_in
from nes2net_stream.data.corpus.texts import TextPool
from nes2net_stream.data.protocols import BONAFIDE, SPOOF, Trial
from nes2net_stream.errors import DataError

SPLITS = ("train", "dev", "eval")
SPLIT_LETTER = {"train": "T", "dev": "D", "eval": "E"}
#: Bona fide speakers with less audio than this (seconds) are used several times...
SMALL_SPEAKER_S = 200.0
#: ...this many times per split, each with a new clip order, pauses and channel.
COPIES = {"train": 3, "dev": 4, "eval": 4}
#: Candidate texts handed to each TTS utterance (it uses as many as its length needs).
TEXTS_PER_UTTERANCE = 20
#: Candidate clips handed to each WORLD utterance.
CLIPS_PER_UTTERANCE = 12
#: Spoof utterances per system and split, and bona fide ones per speaker, in a quick build.
QUICK_SPOOFS = 3
QUICK_BONAFIDE = 4


@dataclass(frozen=True, slots=True)
class PlannedUtterance:
    """A protocol line and the job that renders its audio."""

    split: str
    trial: Trial
    job: UtteranceJob
    lang: str


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from strings and numbers, the same in every process and Python run."""
    words = [zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)[0] >> 1)


def speaker_clips(recordings: Sequence[Recording],
                  analyses: Sequence[Analysis]) -> dict[str, list[tuple[Clip, float]]]:
    """Clips and their durations grouped by speaker, in recording order."""
    out: dict[str, list[tuple[Clip, float]]] = defaultdict(list)
    for rec, ana in zip(recordings, analyses, strict=True):
        for a, b in ana.clips:
            out[rec.speaker].append(((rec, a, b), (b - a) / ana.rate))
    return dict(out)


def _bonafide(split: str, clips: dict[str, list[tuple[Clip, float]]], seed: int,
              quick: bool) -> list[tuple[str, str, tuple[Clip, ...], float]]:
    """(speaker, lang, clips, estimated seconds) of each bona fide utterance of a split."""
    out = []
    pause = float(np.mean(dsp.PAUSE_RANGE_S))
    for spk in sorted(s for s in clips if SPEAKERS[s].split == split):
        items = clips[spk]
        seconds = sum(d for _, d in items)
        copies = 1 if quick or seconds >= SMALL_SPEAKER_S else COPIES[split]
        for copy in range(copies):
            rng = np.random.default_rng(stable_seed(seed, "bonafide", spk, copy))
            order = rng.permutation(len(items))
            durations = [items[i][1] for i in order]
            groups = dsp.pack(durations, rng)
            for group in groups[:QUICK_BONAFIDE] if quick else groups:
                chosen = tuple(items[order[i]][0] for i in group)
                est = sum(durations[i] for i in group) + pause * (len(group) - 1)
                out.append((spk, SPEAKERS[spk].lang, chosen, est))
    return out


def _spoof_counts(split: str, bona_seconds: float, n_bona: int, quick: bool) -> dict[str, int]:
    mean = bona_seconds / max(1, n_bona)
    target = SPOOF_RATIO[split] * bona_seconds
    counts = {s: max(1, round(SYSTEMS[s].weights[split] * target / mean))
              for s in systems_in(split)}
    return {s: min(n, QUICK_SPOOFS) for s, n in counts.items()} if quick else counts


def plan_split(split: str, clips: dict[str, list[tuple[Clip, float]]], pools: dict[str, TextPool],
               out_dir: Path, seed: int, quick: bool) -> list[PlannedUtterance]:
    """Plan all utterances of one split, bona fide and spoof, with their channels."""
    bona = _bonafide(split, clips, seed, quick)
    if not bona:
        raise DataError(f"no bona fide speech found for the {split} split; check that the "
                        "recording packages are installed and readable")
    bona_s = sum(b[3] for b in bona)
    lang_s: dict[str, float] = defaultdict(float)
    coded_s: dict[str, float] = defaultdict(float)
    for _spk, lang, chosen, est in bona:
        lang_s[lang] += est
        if chosen[0][0].source_codec:
            coded_s[lang] += est
    fr_share = lang_s["fr"] / bona_s if bona_s else 0.0
    world_weight = sum(SYSTEMS[s].weights.get(split, 0.0) for s in ("A05", "A06"))
    espeak_fr = min(1.0, fr_share * (1 - world_weight) / SYSTEMS["A01"].weights[split])
    lengths = np.array([b[3] for b in bona])
    speakers = sorted({b[0] for b in bona})
    spk_weight = np.array([sum(b[3] for b in bona if b[0] == s) for s in speakers])

    rows: list[tuple[str, str, str, str, tuple[Clip, ...], tuple[str, ...], dict, float]] = []
    for spk, lang, chosen, _ in bona:
        rows.append((BONAFIDE, "-", spk, lang, chosen, (), {}, 0.0))
    for system, count in _spoof_counts(split, bona_s, len(bona), quick).items():
        for k in range(count):
            rng = np.random.default_rng(stable_seed(seed, split, system, k))
            # spoof lengths follow the bona fide lengths of the same split
            target = float(np.clip(rng.choice(lengths) + rng.uniform(-0.25, 0.25),
                                   dsp.UTT_FLOOR_S, dsp.UTT_MAX_S))
            if system in ("A05", "A06"):
                spk = speakers[int(rng.choice(len(speakers), p=spk_weight / spk_weight.sum()))]
                lang = SPEAKERS[spk].lang
                voice, params = draw_voice(system, split, lang, rng, (spk,))
                own = clips[spk]
                picks = rng.permutation(len(own))[:CLIPS_PER_UTTERANCE]
                rows.append((SPOOF, system, voice, lang, tuple(own[i][0] for i in picks), (),
                             params, target))
                continue
            lang = "fr" if system == "A01" and rng.random() < espeak_fr else "en"
            voice, params = draw_voice(system, split, lang, rng)
            texts = tuple(pools[lang].draw(rng, TEXTS_PER_UTTERANCE))
            rows.append((SPOOF, system, voice, lang, (), texts, params, target))

    channels: dict[int, ChannelParams] = {}
    for key in (BONAFIDE, SPOOF):
        idx = [i for i, r in enumerate(rows) if r[0] == key]
        rng = np.random.default_rng(stable_seed(seed, split, "channels", key))
        channels.update(zip(idx, draw_channels(split, len(idx), rng), strict=True))
    order = np.random.default_rng(stable_seed(seed, split, "order")).permutation(len(rows))
    planned = []
    folder = out_dir / f"ASVspoof2019_LA_{split}" / "flac"
    for n, i in enumerate(order, 1):
        key, system, spk, lang, chosen, texts, params, target = rows[i]
        utt = f"DEMO_{SPLIT_LETTER[split]}_{n:06d}"
        rng = np.random.default_rng(stable_seed(seed, split, "precode", utt))
        channel = channels[int(i)]
        if key == SPOOF and lang_s[lang] and rng.random() < coded_s[lang] / lang_s[lang]:
            # match the GSM history of the bona fide prompts of this language
            channel = replace(channel, precode="gsm")
        job = UtteranceJob(utterance=utt, out_path=folder / f"{utt}.flac", system=system,
                           channel=channel, seed=stable_seed(seed, split, "render", utt),
                           clips=chosen, texts=texts, params=params, target_s=target)
        trial = Trial(speaker=spk, utterance=utt, system=system, key=key,
                      environment=channel.environment)
        planned.append(PlannedUtterance(split, trial, job, lang))
    return planned
