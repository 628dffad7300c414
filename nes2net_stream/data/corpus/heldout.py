"""The held-out corpus: real speakers, languages and synthesisers the demo corpus never uses.

An eval-only database in the ASVspoof 2019 LA layout for measuring how a detector trained on
the demo corpus generalises. Bona fide: five IVR voices in four languages none of the demo
corpus's speakers speaks it in (French-Canadian, Italian (two), Russian, Colombian Spanish),
from Debian packages. Spoofs: espeak-ng in those languages (H01, a known engine in new
languages); festival's Italian diphone voices (H02), its Russian unit-selection voice (H03) and
two HTS statistical parametric voices, Catalan and English (H04), three synthesis paradigms or
voices never in training; WORLD copy-synthesis (H05) and voice conversion (H06) of the held-out
speakers. Every utterance passes through the demo corpus's eval channel (half of it through
codecs training never saw). See ``docs/corpus.md``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nes2net_stream.data.corpus import dsp
from nes2net_stream.data.corpus.builder import (
    map_jobs,
    prepare_out_dir,
    write_checksums,
)
from nes2net_stream.data.corpus.channel import draw_channels
from nes2net_stream.data.corpus.heldout_texts import heldout_pools
from nes2net_stream.data.corpus.licenses import package_notice
from nes2net_stream.data.corpus.plan import speaker_clips, stable_seed
from nes2net_stream.data.corpus.render import AnalyseJob, Clip, UtteranceJob, analyse, render
from nes2net_stream.data.corpus.requirements import missing_modules, missing_programs
from nes2net_stream.data.corpus.sources import Recording, package_folder
from nes2net_stream.data.corpus.summary import collect_versions, split_summary
from nes2net_stream.data.corpus.systems import ESPEAK_VARIANTS, draw_voice
from nes2net_stream.data.corpus.texts import TextPool
from nes2net_stream.data.protocols import BONAFIDE, LA2019_PROTOCOLS, SPOOF, Trial, write_protocol
from nes2net_stream.errors import DataError, DependencyError

#: Bona fide utterances kept per speaker (quick builds: :data:`QUICK_PER_SPEAKER`).
PER_SPEAKER = 40
QUICK_PER_SPEAKER = 3
#: Spoof utterances per bona fide utterance.
SPOOF_PER_BONAFIDE = 2.0
#: ``UTTERANCE LANGUAGE`` lines: the language each utterance is spoken in.
LANGUAGES = "languages.txt"


@dataclass(frozen=True, slots=True)
class HeldoutSpeaker:
    """A bona fide voice of the held-out corpus and the Debian package holding it."""

    id: str
    sex: str
    lang: str
    package: str
    folder: Path
    suffix: str  # ".wav" or ".gsm"


_SOUNDS = Path("/usr/share/asterisk/sounds")
SPEAKERS: tuple[HeldoutSpeaker, ...] = (
    HeldoutSpeaker("JUNE", "F", "fr", "asterisk-core-sounds-fr-wav", _SOUNDS / "fr_CA_f_June",
                   ".wav"),
    HeldoutSpeaker("CARLO", "M", "it", "asterisk-core-sounds-it-wav", _SOUNDS / "it_IT_m_Carlo",
                   ".wav"),
    HeldoutSpeaker("MENARDI", "F", "it", "asterisk-prompt-it-menardi-wav",
                   _SOUNDS / "it_IT_f_Menardi", ".wav"),
    HeldoutSpeaker("IVRVOICE-RU", "F", "ru", "asterisk-core-sounds-ru-wav",
                   _SOUNDS / "ru_RU_f_IvrvoiceRU", ".wav"),
    HeldoutSpeaker("JULY", "F", "es", "asterisk-prompt-es-co", _SOUNDS / "es", ".gsm"),
)

#: System id -> (name, paradigm, share of the spoof utterances, languages).
SYSTEMS: dict[str, tuple[str, str, float, tuple[str, ...]]] = {
    "H01": ("espeak-ng", "rule-based formant synthesis (known engine, new languages)", 0.2,
            ("es", "it", "ru", "fr")),
    "H02": ("festival Italian diphones (lp, pc)", "diphone concatenation (new voices)", 0.15,
            ("it",)),
    "H03": ("festival Russian msu_ru_nsh_clunits", "unit selection (unseen paradigm)", 0.15,
            ("ru",)),
    "H04": ("festival HTS (Catalan ona, English slt)",
            "HMM statistical parametric synthesis (unseen paradigm)", 0.15, ("ca", "en")),
    "H05": ("WORLD copy-synthesis", "vocoder resynthesis of the held-out speakers", 0.175, ()),
    "H06": ("WORLD voice conversion", "vocoder with modified F0 and envelope", 0.175, ()),
}
#: Festival voices: system -> ((voice, language, text encoding, Debian package), ...).
FESTIVAL_VOICES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "H02": (("lp_diphone", "it", "latin-1", "festvox-italp16k"),
            ("pc_diphone", "it", "latin-1", "festvox-itapc16k")),
    "H03": (("msu_ru_nsh_clunits", "ru", "utf-8", "festvox-ru"),),
    "H04": (("upc_ca_ona_hts", "ca", "latin-1", "festvox-ca-ona-hts"),
            ("cmu_us_slt_arctic_hts", "en", "utf-8", "festvox-us-slt-hts")),
}
ESPEAK_LANGS = {"es": ("es", "es-419"), "it": ("it",), "ru": ("ru",),
                "fr": ("fr-fr", "fr-be", "fr-ch")}
#: Everything the build needs from Debian.
PACKAGES = tuple(sorted({s.package for s in SPEAKERS} | {
    v[3] for voices in FESTIVAL_VOICES.values() for v in voices} | {
    "espeak-ng", "festival", "sox", "libsox-fmt-all", "ffmpeg"}))
_SKIP = ("beep", "silence/", "tone", "tt-monkeys", "confbridge-join", "confbridge-leave")


def check_heldout_requirements() -> list[str]:
    """Every missing program, package and Python module, each with its install command."""
    problems = missing_programs(("espeak-ng", "text2wave", "sox", "ffmpeg"))
    for spk in SPEAKERS:
        if package_folder(spk.package, spk.folder) is None:
            problems.append(f"bona fide voice {spk.id} is missing: apt-get install {spk.package}")
    for voices in FESTIVAL_VOICES.values():
        for voice, _lang, _enc, package in voices:
            if not any(Path("/usr/share/festival/voices").glob(f"*/{voice}")):
                problems.append(f"festival voice {voice} is missing: apt-get install {package}")
    return problems + missing_modules(("pyworld",))


def find_heldout_recordings() -> list[Recording]:
    """The held-out voices' recordings, in a fixed order (IVR beeps and silences left out)."""
    out = []
    for spk in SPEAKERS:
        root = package_folder(spk.package, spk.folder)
        if root is None:
            continue
        for path in sorted(root.rglob(f"*{spk.suffix}")):
            key = path.relative_to(root).with_suffix("").as_posix()
            if any(s in key for s in _SKIP):
                continue
            out.append(Recording(f"{spk.id}/{key}", path, spk.id, spk.lang, "heldout",
                                 source_codec="gsm" if spk.suffix == ".gsm" else ""))
    return out


class _Row(NamedTuple):
    """One planned utterance before its channel and id are drawn."""

    key: str
    system: str
    speaker: str
    lang: str
    clips: tuple[Clip, ...]
    texts: tuple[str, ...]
    params: dict[str, Any]
    target_s: float


Clips = dict[str, list[tuple[Clip, float]]]


def _bonafide(clips: Clips, seed: int, per_speaker: int) -> list[_Row]:
    rows = []
    for spk in sorted(clips):
        items = clips[spk]
        rng = np.random.default_rng(stable_seed(seed, "heldout", "bonafide", spk))
        order = rng.permutation(len(items))
        durations = [items[i][1] for i in order]
        for group in dsp.pack(durations, rng)[:per_speaker]:
            chosen = tuple(items[order[i]][0] for i in group)
            rows.append(_Row(BONAFIDE, "-", spk, chosen[0][0].lang, chosen, (), {},
                             sum(durations[i] for i in group)))
    return rows


def _spoof(system: str, k: int, bona: list[_Row], clips: Clips, seed: int,
           pools: dict[str, TextPool]) -> _Row:
    rng = np.random.default_rng(stable_seed(seed, "heldout", system, k))
    u = rng.uniform
    target = float(np.clip(bona[int(rng.integers(len(bona)))].target_s + u(-0.25, 0.25),
                           dsp.UTT_FLOOR_S, dsp.UTT_MAX_S))
    if system in ("H05", "H06"):
        spk = bona[int(rng.integers(len(bona)))].speaker  # weighted by their utterances
        voice, params = draw_voice("A05" if system == "H05" else "A06", "eval", "", rng, (spk,))
        own = clips[spk]
        picks = rng.permutation(len(own))[:12]
        return _Row(SPOOF, system, voice, own[0][0][0].lang, tuple(own[i][0] for i in picks),
                    (), params, target)
    if system == "H01":
        lang = bona[int(rng.integers(len(bona)))].lang  # languages as often as in bona fide
        bases = ESPEAK_LANGS[lang]
        variant = ESPEAK_VARIANTS["eval"][int(rng.integers(len(ESPEAK_VARIANTS["eval"])))]
        params: dict[str, Any] = {"voice": f"{bases[int(rng.integers(len(bases)))]}+{variant}",
                                  "rate": int(u(125, 190)), "pitch": int(u(25, 75))}
        voice = f"ESPEAK-{variant}"
    else:
        voices = FESTIVAL_VOICES[system]
        name, lang, encoding, _ = voices[int(rng.integers(len(voices)))]
        params = {"voice": name, "encoding": encoding, "stretch": round(u(0.85, 1.2), 3)}
        voice = f"FESTIVAL-{name.upper()}"
    return _Row(SPOOF, system, voice, lang, (), tuple(pools[lang].draw(rng, 20)), params, target)


def plan_heldout(clips: Clips, out_dir: Path, seed: int, per_speaker: int,
                 systems: Sequence[str] = tuple(SYSTEMS),
                 channel: str = "eval") -> list[tuple[Trial, UtteranceJob, str]]:
    """Every utterance of the held-out corpus: its protocol line, render job and language."""
    bona = _bonafide(clips, seed, per_speaker)
    if not bona:
        raise DataError("no held-out bona fide speech found; check the recording packages")
    n_spoof = round(SPOOF_PER_BONAFIDE * len(bona))
    weights = np.array([SYSTEMS[s][2] for s in systems])
    counts = np.floor(weights / weights.sum() * n_spoof).astype(int)
    counts[: n_spoof - int(counts.sum())] += 1
    pools = heldout_pools()
    rows = list(bona)
    for system, count in zip(systems, counts, strict=True):
        rows.extend(_spoof(system, k, bona, clips, seed, pools) for k in range(int(count)))
    channels = {}
    for key in (BONAFIDE, SPOOF):
        idx = [i for i, r in enumerate(rows) if r.key == key]
        rng = np.random.default_rng(stable_seed(seed, "heldout", "channels", key))
        channels.update(zip(idx, draw_channels(channel, len(idx), rng), strict=True))
    coded = Counter(r.lang for r in bona if r.clips[0][0].source_codec)
    total = Counter(r.lang for r in bona)
    order = np.random.default_rng(stable_seed(seed, "heldout", "order")).permutation(len(rows))
    folder = out_dir / "ASVspoof2019_LA_eval" / "flac"
    planned = []
    for n, i in enumerate(order, 1):
        key, system, spk, lang, chosen, texts, params, target = rows[i]
        utt = f"HELD_E_{n:06d}"
        chan = channels[int(i)]
        rng = np.random.default_rng(stable_seed(seed, "heldout", "precode", utt))
        if key == SPOOF and total[lang] and rng.random() < coded[lang] / total[lang]:
            chan = replace(chan, precode="gsm")  # as the GSM-coded Spanish prompts
        job = UtteranceJob(utterance=utt, out_path=folder / f"{utt}.flac", system=system,
                           channel=chan, seed=stable_seed(seed, "heldout", "render", utt),
                           clips=chosen, texts=texts, params=params, target_s=target)
        planned.append((Trial(speaker=spk, utterance=utt, system=system, key=key,
                              environment=chan.environment), job, lang))
    return planned


def _licences(path: Path) -> None:
    parts = ["# Licences of the held-out corpus\n\nBuilt by `nes2net-stream data "
             "build-heldout` from the installed packages below. Bona fide utterances are "
             "adaptations of the recordings (cut, joined, filtered, passed through codecs) and "
             "stay under each recording's licence, as do their WORLD resyntheses; the "
             "synthesisers' licences cover the programs. Each notice is the installed "
             "package's own.\n"]
    parts.extend(f"\n## {package}\n\n{package_notice(package)}" for package in PACKAGES)
    path.write_text("".join(parts), encoding="utf-8")


def build_heldout_corpus(out_dir: Path, *, seed: int = 0, quick: bool = False, jobs: int = 2,
                         per_speaker: int | None = None, speakers: Sequence[str] = (),
                         systems: Sequence[str] = (), channel: str = "eval",
                         progress: bool = True) -> dict[str, Any]:
    """Build the held-out eval database in ``out_dir``; returns what ``corpus.json`` holds.

    ``speakers`` and ``systems`` (default: all) build a part of it, e.g. some voices and their
    WORLD resyntheses as training material for a model tested on the other voices; the same
    seed draws the same choices for each system whatever else is built. ``channel`` is the
    demo corpus split whose channel distribution is drawn: ``"eval"`` (half through codecs
    training never saw) or ``"train"`` (G.711 and GSM only, for training material).

    Raises:
        DependencyError: programs, voices or recordings are missing (all listed at once).
        DataError: ``out_dir`` holds something else, or ``jobs`` is below 1.
        AudioError: a synthesiser or codec failed.
    """
    started = time.monotonic()
    problems = check_heldout_requirements()
    if problems:
        raise DependencyError("cannot build the held-out corpus, {} problem(s):\n  - {}".format(
            len(problems), "\n  - ".join(problems)))
    if jobs < 1:
        raise DataError(f"jobs must be at least 1, got {jobs}")
    voices = {s.id for s in SPEAKERS}
    for given, known, what in ((speakers, voices, "speaker"), (systems, set(SYSTEMS), "system")):
        unknown = sorted(set(given) - known)
        if unknown:
            raise DataError(f"unknown held-out {what}(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(known))}")
    if channel not in ("train", "eval"):
        raise DataError(f"channel must be 'train' or 'eval', got {channel!r}")
    chosen_systems = [s for s in SYSTEMS if not systems or s in systems]
    per = per_speaker or (QUICK_PER_SPEAKER if quick else PER_SPEAKER)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    recordings = [r for r in find_heldout_recordings() if not speakers or r.speaker in speakers]
    if quick:  # the first recordings of each speaker are enough for a few utterances
        seen: Counter[str] = Counter()
        kept = []
        for rec in recordings:
            seen[rec.speaker] += 1
            if seen[rec.speaker] <= 4 * per:
                kept.append(rec)
        recordings = kept
    analyses = map_jobs(analyse, [AnalyseJob(r, stable_seed(seed, "analyse", r.key))
                              for r in recordings], jobs, "analysing recordings", progress)
    planned = plan_heldout(speaker_clips(recordings, analyses), out_dir, seed, per,
                           chosen_systems, channel)
    rendered = map_jobs(render, [job for _, job, _ in planned], jobs, "rendering utterances",
                    progress)
    seconds = {utt: sec for utt, sec, _ in rendered}
    sums = write_checksums(out_dir, {job.out_path: digest for (_, job, _), (_, _, digest)
                                     in zip(planned, rendered, strict=True)})
    trials = [t for t, _, _ in planned]
    write_protocol(out_dir / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS["eval"], trials)
    _licences(out_dir / "LICENSES.md")
    (out_dir / LANGUAGES).write_text("".join(f"{t.utterance} {lang}\n" for t, _, lang in planned),
                                     encoding="utf-8")
    summary = split_summary(trials, seconds, {t.utterance: lang for t, _, lang in planned})
    data = {"kind": "heldout", "out_dir": str(out_dir), "seed": seed, "quick": quick,
            "per_speaker": per, "only_speakers": sorted(speakers),
            "only_systems": sorted(systems), "channel": channel,
            "build_seconds": round(time.monotonic() - started, 1),
            "splits": {"eval": asdict(summary)},
            "speakers": {s.id: {"sex": s.sex, "lang": s.lang, "package": s.package}
                         for s in SPEAKERS},
            "systems": {k: {"name": v[0], "paradigm": v[1]} for k, v in SYSTEMS.items()},
            "versions": collect_versions(PACKAGES), "audio_sha256": sums,
            "format": {"audio": "FLAC, 8 kHz, mono, 16-bit PCM",
                       "protocol": "SPEAKER UTTERANCE CODEC SYSTEM KEY (ASVspoof 2019 LA)"}}
    (out_dir / "corpus.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data
