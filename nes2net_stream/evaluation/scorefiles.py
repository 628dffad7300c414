"""Score files in the official ASVspoof layouts, and joining scores with a key.

Two layouts are read and written (scores: higher = more bona fide):

* ``"2021"``: one trial per line, ``UTTERANCE SCORE`` separated by white space, no header, as
  written by the ASVspoof 2019/2021 baselines and the Nes2Net scripts. The four-column
  ASVspoof 2019 CM score layout ``UTTERANCE SYSTEM KEY SCORE`` is also read.
* ``"asvspoof5"``: tab-separated with the header ``filename<TAB>cm-score``. Other columns
  (such as those of the SASV score file) are ignored when reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from nes2net_stream.data.protocols import Trial
from nes2net_stream.errors import ConfigError, DataError

__all__ = ["LAYOUTS", "JoinedScores", "detect_layout", "join_with_key", "read_scores",
           "write_scores"]

Layout = Literal["2021", "asvspoof5"]
LAYOUTS: tuple[str, ...] = ("2021", "asvspoof5")
_ID_COL = "filename"
_SCORE_COL = "cm-score"
_KEYS = ("bonafide", "spoof")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"score file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"
                        ) from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise DataError(f"score file has no scores: {path}")
    return lines


def _is_header(line: str) -> bool:
    cols = line.lower().split()
    return _ID_COL in cols or _SCORE_COL in cols


def detect_layout(path: str | Path) -> Layout:
    """Layout of a score file: ``"asvspoof5"`` when it has a header, else ``"2021"``."""
    first = _read_lines(Path(path))[0][1]
    return "asvspoof5" if _is_header(first) else "2021"


def _parse_score(token: str, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise DataError(f"{where}: score {token!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: score {token!r} is not finite")
    return value


def read_scores(path: str | Path) -> dict[str, float]:
    """Read a score file in either layout (detected from the first line).

    Returns:
        Scores by utterance id, in file order.

    Raises:
        DataError: On a missing or empty file, a malformed line, a non-numeric or non-finite
            score, or a duplicate id (the message gives ``file:line``).
    """
    p = Path(path)
    lines = _read_lines(p)
    id_col, score_col, ncols = 0, 1, 2
    if _is_header(lines[0][1]):
        header = lines[0][1].lower().split()
        for name in (_ID_COL, _SCORE_COL):
            if name not in header:
                raise DataError(f"{p}:{lines[0][0]}: header has no {name!r} column: "
                                f"{lines[0][1]!r}")
        id_col, score_col, ncols = header.index(_ID_COL), header.index(_SCORE_COL), len(header)
        lines = lines[1:]
    scores: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for n, line in lines:
        where = f"{p}:{n}"
        cols = line.split()
        if ncols == 2 and len(cols) == 4 and cols[2] in _KEYS:
            utt, token = cols[0], cols[3]  # ASVspoof 2019: UTTERANCE SYSTEM KEY SCORE
        elif len(cols) == ncols:
            utt, token = cols[id_col], cols[score_col]
        else:
            raise DataError(f"{where}: expected {ncols} columns, found {len(cols)}: {line!r}")
        if utt in scores:
            raise DataError(f"{where}: duplicate id {utt!r} (first on line {first_seen[utt]})")
        scores[utt] = _parse_score(token, where)
        first_seen[utt] = n
    if not scores:
        raise DataError(f"score file has a header but no scores: {p}")
    return scores


def write_scores(path: str | Path, scores: Mapping[str, float], layout: Layout = "2021"
                 ) -> Path:
    """Write scores in the ``"2021"`` or ``"asvspoof5"`` layout (exact float round trip).

    Raises:
        ConfigError: On an unknown layout.
        DataError: On no scores, an id with white space, or a non-finite score.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown score file layout {layout!r}; expected one of {LAYOUTS}")
    if not scores:
        raise DataError("no scores to write")
    sep = " " if layout == "2021" else "\t"
    out = [f"{_ID_COL}\t{_SCORE_COL}"] if layout == "asvspoof5" else []
    for utt, value in scores.items():
        if not utt or len(utt.split()) != 1 or utt != utt.strip():
            raise DataError(f"utterance id {utt!r} is empty or contains white space")
        v = float(value)
        if not math.isfinite(v):
            raise DataError(f"score of {utt!r} is not finite: {value!r}")
        out.append(f"{utt}{sep}{v!r}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(out) + "\n", encoding="utf-8")
    return p


class JoinedScores(NamedTuple):
    """Scores split by class; unpacks as ``bona, spoof, n_extra``.

    Attributes:
        bona: Bona fide scores, in key order.
        spoof: Spoof scores, in key order.
        n_extra: Number of scored ids that are not in the key (ignored).
    """

    bona: NDArray[np.float64]
    spoof: NDArray[np.float64]
    n_extra: int


def _preview(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def join_with_key(scores: Mapping[str, float], trials: Iterable[Trial]) -> JoinedScores:
    """Split scores into bona fide and spoof arrays using the key's trials.

    Args:
        scores: Scores by utterance id (higher = more bona fide).
        trials: Key trials, e.g. from :func:`nes2net_stream.data.protocols.read_protocol`.

    Returns:
        ``(bona, spoof, n_extra)`` in key order; scores of ids not in the key are ignored and
        counted in ``n_extra``.

    Raises:
        DataError: If any key trial has no score (the first few ids are listed).
    """
    bona: list[float] = []
    spoof: list[float] = []
    missing: list[str] = []
    keyed: set[str] = set()
    for t in trials:
        keyed.add(t.utterance)
        if t.utterance not in scores:
            missing.append(t.utterance)
        elif t.is_spoof:
            spoof.append(scores[t.utterance])
        else:
            bona.append(scores[t.utterance])
    if missing:
        raise DataError(f"{len(missing)} of {len(keyed)} key trials have no score: "
                        f"{_preview(missing)}")
    n_extra = sum(1 for utt in scores if utt not in keyed)
    return JoinedScores(np.asarray(bona, dtype=np.float64), np.asarray(spoof, dtype=np.float64),
                        n_extra)
