"""Call-level alert evaluation: window scores of whole calls replayed through the alert policy.

Trial EERs say how well single windows separate; a fraud team acts on the *states* the
service publishes. This module feeds each call's window LLRs, in order, through the same
:class:`~nes2net_stream.service.policy.ChannelPolicy` the service runs, and counts what a
consumer of the state events would see: genuine calls that ever raised an alert (even one
that later stepped down), synthetic calls that reached ``spoof``, and how many seconds into
the call the first alert came. Scoring is done once (``score --json`` lines); replaying
under other thresholds costs nothing, so :func:`expand_grid` compares settings side by side.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nes2net_stream.data.protocols import Trial
from nes2net_stream.errors import ConfigError, DataError
from nes2net_stream.evaluation.metrics import compute_eer
from nes2net_stream.models.detector import Calibration
from nes2net_stream.scoring.aggregate import llr_probability
from nes2net_stream.service.policy import AlertConfig, ChannelPolicy

#: AlertConfig fields a grid may vary, with the type their values are parsed as.
VARIABLE: dict[str, type] = {
    "suspicious_threshold": float, "spoof_threshold": float, "hysteresis": float,
    "min_windows_for_spoof": int, "min_windows_for_state": int, "aggregation": str,
    "ema_alpha": float,
}
_ALERT_STATES = ("suspicious", "spoof")


@dataclass(frozen=True)
class CallWindows:
    """One call's window scores, in stream order, and its label."""

    call_id: str
    is_spoof: bool
    end_s: tuple[float, ...]
    llr: tuple[float, ...]
    speaker: str = "-"
    system: str = "-"


@dataclass(frozen=True)
class CallOutcome:
    """What the state events of one call said."""

    call: CallWindows
    states: tuple[str | None, ...]
    final_llr: float | None = None  # the running score at the call's end

    def _first(self, states: Sequence[str]) -> float | None:
        for t, s in zip(self.call.end_s, self.states, strict=True):
            if s in states:
                return t
        return None

    @property
    def first_alert_s(self) -> float | None:
        """Stream time of the first window that left the channel ``suspicious`` or worse."""
        return self._first(_ALERT_STATES)

    @property
    def first_spoof_s(self) -> float | None:
        """Stream time of the first window that left the channel ``spoof``."""
        return self._first(("spoof",))

    @property
    def final_state(self) -> str | None:
        """State at the end of the call (``None``: too few windows for a state)."""
        return self.states[-1] if self.states else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (per call in ``alerts.json``)."""
        return {"call_id": self.call.call_id, "spoof": self.call.is_spoof,
                "speaker": self.call.speaker, "system": self.call.system,
                "windows": len(self.states), "first_alert_s": self.first_alert_s,
                "first_spoof_s": self.first_spoof_s, "final_state": self.final_state,
                "final_llr": self.final_llr,
                "state_changes": sum(a != b for a, b in itertools.pairwise(self.states))}


def calls_from_scores(lines: Iterable[dict[str, Any]],
                      trials: Sequence[Trial]) -> list[CallWindows]:
    """Pair ``score --json`` results with their protocol trials (by file name stem).

    Raises:
        DataError: a trial with no score line, or a score line that failed.
    """
    by_stem: dict[str, dict[str, Any]] = {}
    for d in lines:
        if "file" not in d:
            raise DataError("score line without 'file': not `score --json` output")
        by_stem[Path(d["file"]).stem] = d
    calls: list[CallWindows] = []
    for t in trials:
        d = by_stem.get(t.utterance)
        if d is None:
            raise DataError(f"no score line for call {t.utterance!r}")
        if "error" in d:
            raise DataError(f"call {t.utterance!r} failed to score: {d['error']}")
        if d.get("mode", "windows") != "windows":
            raise DataError(f"call {t.utterance!r} was scored in mode {d['mode']!r}; "
                            "alert replay needs --mode windows")
        ws = d.get("windows") or []
        try:
            end_s = tuple(float(w["end_s"]) for w in ws)
            llr = tuple(float(w["llr"]) for w in ws)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"call {t.utterance!r}: a window without a numeric 'end_s' and "
                            f"'llr' ({exc!r})") from None
        calls.append(CallWindows(call_id=t.utterance, is_spoof=t.is_spoof, end_s=end_s,
                                 llr=llr, speaker=t.speaker, system=t.system))
    return calls


def read_score_lines(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``score --json`` file (one JSON object per line)."""
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not JSON ({exc.msg})") from None
    return out


def recalibrate(lines: Iterable[dict[str, Any]], cal: Calibration) -> list[dict[str, Any]]:
    """Score lines with each window's ``llr`` and probability recomputed through ``cal``.

    From each window's ``raw`` score: what a service with that ingress calibration publishes.
    """
    out = []
    for d in lines:
        windows = []
        for w in d.get("windows") or []:
            try:
                llr = cal.llr(float(w["raw"]))
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{d.get('file')}: a window without a numeric 'raw' score "
                                "to recalibrate") from None
            windows.append({**w, "llr": llr, "spoof_probability": cal.probability(llr)})
        out.append({**d, "windows": windows})
    return out


def replay(call: CallWindows, cfg: AlertConfig) -> CallOutcome:
    """Run one call's window LLRs through a fresh channel policy."""
    policy = ChannelPolicy(cfg)
    states = []
    for llr in call.llr:
        policy.update(llr, llr_probability(llr, cfg.spoof_prior))
        states.append(policy.state)
    return CallOutcome(call, tuple(states), policy.running_llr)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``k / n`` (95 % by default)."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def speaker_interval(flags: Sequence[tuple[str, bool]], *, n_resamples: int = 2000,
                     level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of a share of calls, resampling whole speakers (cluster bootstrap).

    Calls of one speaker (or one synthetic voice) are not independent, so, as ``eval`` does
    for trials, the speakers are drawn with replacement and the share recomputed over their
    calls. ``None`` with fewer than two speakers.
    """
    by: dict[str, list[bool]] = {}
    for speaker, flag in flags:
        by.setdefault(speaker, []).append(flag)
    if len(by) < 2:
        return None
    k = np.array([sum(v) for v in by.values()], dtype=np.float64)
    n = np.array([len(v) for v in by.values()], dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(by), size=(n_resamples, len(by)))
    shares = k[idx].sum(axis=1) / n[idx].sum(axis=1)
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(shares, [tail, 100.0 - tail])
    return (round(float(lo), 4), round(float(hi), 4))


def _rate(outcomes: Sequence[CallOutcome], hit: Callable[[CallOutcome], bool]) -> dict[str, Any]:
    """Share of ``outcomes`` for which ``hit`` holds, with its 95 % interval."""
    flags = [(o.call.speaker, bool(hit(o))) for o in outcomes]
    k, n = sum(f for _, f in flags), len(flags)
    ci = speaker_interval(flags)
    return {"rate": round(k / n, 4) if n else None, "calls": k, "of": n,
            "ci95": ci if ci is not None else wilson(k, n),
            "ci95_method": "speaker bootstrap" if ci is not None else "wilson"}


def _times(values: Sequence[float | None]) -> dict[str, Any]:
    got = np.array([v for v in values if v is not None], dtype=np.float64)
    if got.size == 0:
        return {"median": None, "p90": None, "n": 0}
    return {"median": round(float(np.median(got)), 3),
            "p90": round(float(np.percentile(got, 90)), 3), "n": int(got.size)}


def summarise(outcomes: Sequence[CallOutcome]) -> dict[str, Any]:
    """Call-level figures of one setting (see docs/evaluation.md for their meaning)."""
    genuine = [o for o in outcomes if not o.call.is_spoof]
    fake = [o for o in outcomes if o.call.is_spoof]
    return {
        "bonafide_calls": len(genuine), "spoof_calls": len(fake),
        "false_alert": _rate(genuine, lambda o: o.first_alert_s is not None),
        "false_spoof": _rate(genuine, lambda o: o.first_spoof_s is not None),
        "false_final": _rate(genuine, lambda o: o.final_state in _ALERT_STATES),
        "transient_false_alert": _rate(genuine, lambda o: o.first_alert_s is not None
                                       and o.final_state == "bona_fide"),
        "detected_alert": _rate(fake, lambda o: o.first_alert_s is not None),
        "detected_spoof": _rate(fake, lambda o: o.first_spoof_s is not None),
        "final_spoof": _rate(fake, lambda o: o.final_state == "spoof"),
        "no_state": {"bonafide": sum(o.final_state is None for o in genuine),
                     "spoof": sum(o.final_state is None for o in fake)},
        "time_to_alert_s": _times([o.first_alert_s for o in fake]),
        "time_to_spoof_s": _times([o.first_spoof_s for o in fake]),
        "call_eer": _call_eer(genuine, fake),
    }


def _call_eer(genuine: Sequence[CallOutcome], fake: Sequence[CallOutcome]) -> float | None:
    """EER of the calls' final running scores (threshold-free; None with too few calls)."""
    bona = [-o.final_llr for o in genuine if o.final_llr is not None]  # higher = bona fide
    spoof = [-o.final_llr for o in fake if o.final_llr is not None]
    try:
        return round(compute_eer(bona, spoof)[0], 4)
    except DataError:  # a class without calls, or too few distinct scores
        return None


def parse_vary(specs: Iterable[str]) -> dict[str, list[Any]]:
    """Parse ``KEY=V1,V2`` grid options (keys of :data:`VARIABLE`).

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming it.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError(f"--vary {spec!r}: expected KEY=V1,V2,...")
        if key not in VARIABLE:
            raise ConfigError(f"--vary: unknown key {key!r}; one of {', '.join(VARIABLE)}")
        try:
            grid[key] = [VARIABLE[key](v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--vary {key}: values must be {VARIABLE[key].__name__}") from None
    return grid


def expand_grid(base: AlertConfig,
                grid: dict[str, list[Any]]) -> list[tuple[dict[str, Any], AlertConfig]]:
    """Every combination of the grid's values applied to ``base`` (``base`` alone if empty).

    Raises:
        ConfigError: a combination the policy rejects, naming the key.
    """
    combos: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        combos = [{**c, key: v} for c in combos for v in values]
    return [(c, dataclasses.replace(base, **c)) for c in combos]
