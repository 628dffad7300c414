"""Pool language-fold score files on the held-out corpus into one score file.

Usage: python scripts/pool_heldout_folds.py CORPUS OUT LANGS=SCORES [LANGS=SCORES ...]

Each fold model trained on some of the held-out corpus's voices and is tested on the others;
``LANGS`` are the languages its test voices speak (e.g. ``fr,ru``). Every trial of CORPUS is
taken from the fold whose languages include the trial's language (``languages.txt`` of the
build), so genuine speech, its WORLD resyntheses and the synthesisers of a language are scored
by a model that never heard that language's voices. Trials in a language no fold lists
(spoofs only: Catalan and English HTS) are spread over the folds by a hash of their id.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path


def read_pairs(path: Path) -> dict[str, str]:
    """First two columns of a whitespace-separated file as a dictionary."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def pool(languages: dict[str, str],
         folds: list[tuple[set[str], dict[str, str]]]) -> dict[str, str]:
    """Utterance -> score string, each from the fold that owns the utterance's language."""
    owner = {lang: k for k, (langs, _) in enumerate(folds) for lang in langs}
    out = {}
    for utt, lang in languages.items():
        k = owner.get(lang, zlib.crc32(utt.encode()) % len(folds))
        scores = folds[k][1]
        if utt not in scores:
            raise SystemExit(f"{utt} ({lang}) has no score in fold {k + 1}")
        out[utt] = scores[utt]
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or any("=" not in a for a in args[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    corpus, out = Path(args[0]), Path(args[1])
    folds = []
    for spec in args[2:]:
        langs, _, scores = spec.partition("=")
        folds.append(({x for x in langs.split(",") if x}, read_pairs(Path(scores))))
    seen = [lang for langs, _ in folds for lang in langs]
    if len(seen) != len(set(seen)):
        print("a language is listed in two folds", file=sys.stderr)
        return 2
    pooled = pool(read_pairs(corpus / "languages.txt"), folds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{u} {s}\n" for u, s in pooled.items()), encoding="utf-8")
    print(f"{len(pooled)} trials pooled into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
