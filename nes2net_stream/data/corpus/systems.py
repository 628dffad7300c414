"""The spoofing systems A01-A07 of the demo corpus, their voices and their split assignment.

Voices of multi-voice synthesisers are split disjointly: the espeak-ng variants of train, dev
and eval differ, WORLD copy-synthesis and conversion use the bona fide speakers of their own
split, and the flite clustergen voices (A07) appear only in eval. The single-voice systems
(festival and flite ``kal``, Piper ``joe``) cannot be split by voice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SpoofSystem:
    """One spoofing system (synthesiser plus settings)."""

    id: str
    name: str
    paradigm: str
    languages: tuple[str, ...]
    #: share of the split's spoof audio, per split (absent = not in that split)
    weights: dict[str, float]


SYSTEMS: dict[str, SpoofSystem] = {s.id: s for s in (
    SpoofSystem("A01", "espeak-ng", "rule-based formant synthesis", ("en", "fr"),
                {"train": 0.30, "dev": 0.25, "eval": 0.15}),
    SpoofSystem("A02", "festival kal_diphone", "diphone concatenation (residual-excited LPC)",
                ("en",), {"train": 0.15, "dev": 0.10}),
    SpoofSystem("A03", "flite kal", "diphone concatenation (flite engine)", ("en",),
                {"dev": 0.10, "eval": 0.10}),
    SpoofSystem("A04", "Piper joe (VITS)", "neural end-to-end TTS (VITS, ONNX)", ("en",),
                {"train": 0.20, "dev": 0.20, "eval": 0.15}),
    SpoofSystem("A05", "WORLD copy-synthesis", "vocoder resynthesis of real speech", ("en", "fr"),
                {"train": 0.175, "dev": 0.175, "eval": 0.15}),
    SpoofSystem("A06", "WORLD voice conversion", "vocoder with modified F0 and spectral envelope",
                ("en", "fr"), {"train": 0.175, "dev": 0.175, "eval": 0.15}),
    SpoofSystem("A07", "flite clustergen", "statistical parametric (clustergen) TTS", ("en",),
                {"eval": 0.30}),
)}

#: The system that only eval contains: a synthesis paradigm never seen in training.
EVAL_ONLY_SYSTEM = "A07"
#: Spoof seconds per bona fide second, by split.
SPOOF_RATIO = {"train": 1.5, "dev": 2.0, "eval": 2.5}

#: espeak-ng voice variants (speaker characteristics), disjoint between splits.
ESPEAK_VARIANTS: dict[str, tuple[str, ...]] = {
    "train": ("f1", "f2", "f3", "Annie", "Andrea", "steph", "linda", "aunty", "m1", "m2",
              "klatt", "adam", "john"),
    "dev": ("f4", "Alicia", "steph2", "m3", "klatt2", "Andy", "paul"),
    "eval": ("f5", "belinda", "steph3", "anika", "m4", "m6", "klatt3", "Michael", "robert"),
}
#: espeak-ng language/accent voices, combined with a variant.
ESPEAK_BASES = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
           "en-gb-x-gbcwmd"),
    "fr": ("fr-fr", "fr-be", "fr-ch"),
}
#: flite clustergen voices (CMU ARCTIC speakers) and their F0 range (Hz).
CLUSTERGEN_VOICES = {"awb": (90.0, 130.0), "rms": (90.0, 125.0), "slt": (150.0, 210.0)}


def systems_in(split: str) -> list[str]:
    """System ids present in a split."""
    return [s.id for s in SYSTEMS.values() if split in s.weights]


def draw_voice(system: str, split: str, lang: str, rng: np.random.Generator,
               world_speakers: tuple[str, ...] = ()) -> tuple[str, dict[str, object]]:
    """Pick a voice and random synthesis settings for one spoof utterance.

    Args:
        system: system id A01-A07.
        split: split name (selects the espeak-ng variants).
        lang: ``"en"`` or ``"fr"``.
        rng: random generator.
        world_speakers: bona fide speakers of the split in ``lang`` (A05/A06 only).

    Returns:
        The speaker id for the protocol and the engine settings.
    """
    u = rng.uniform
    if system == "A01":
        variants = ESPEAK_VARIANTS[split]
        variant = variants[int(rng.integers(len(variants)))]
        bases = ESPEAK_BASES[lang]
        base = bases[int(rng.integers(len(bases)))]
        return f"ESPEAK-{variant}", {"voice": f"{base}+{variant}", "rate": int(u(125, 190)),
                                     "pitch": int(u(25, 75))}
    if system == "A02":
        return "KAL", {"stretch": round(u(0.85, 1.2), 3), "f0_mean": round(u(95, 130), 1),
                       "f0_std": round(u(10, 25), 1)}
    if system == "A03":
        return "KAL", {"stretch": round(u(0.85, 1.2), 3), "f0_mean": round(u(95, 130), 1),
                       "f0_std": round(u(10, 25), 1)}
    if system == "A04":
        return "JOE", {"length_scale": round(u(0.85, 1.25), 3),
                       "noise_scale": round(u(0.4, 0.9), 3), "noise_w": round(u(0.5, 1.0), 3)}
    if system == "A07":
        names = sorted(CLUSTERGEN_VOICES)
        voice = names[int(rng.integers(len(names)))]
        lo, hi = CLUSTERGEN_VOICES[voice]
        return f"ARCTIC-{voice.upper()}", {"voice": voice, "stretch": round(u(0.85, 1.2), 3),
                                           "f0_mean": round(u(lo, hi), 1)}
    if system in ("A05", "A06"):
        speaker = world_speakers[int(rng.integers(len(world_speakers)))]
        params: dict[str, object] = {
            "f0_method": "harvest" if rng.random() < 0.4 else "dio",
            "coded_dims": int(rng.integers(24, 61)) if rng.random() < 0.5 else 0,
        }
        if system == "A06":
            sign = 1.0 if rng.random() < 0.5 else -1.0
            warp = 1.0 + sign * u(0.04, 0.12)
            params.update(f0_ratio=round(float(np.exp(rng.choice([-1, 1]) * u(0.15, 0.4))), 3),
                          f0_range=round(u(0.6, 1.4), 3), warp=round(warp, 3))
        return speaker, params
    raise ValueError(f"unknown spoof system {system!r}")
