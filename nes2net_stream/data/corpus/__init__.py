"""Offline demo corpus: real telephone-style speech versus several kinds of synthetic speech.

``build_demo_corpus`` builds a labelled bona fide / spoof corpus in the ASVspoof 2019 LA layout
from speech packages and synthesisers installed on the machine, with no network access; see
``docs/corpus.md``.
"""

from nes2net_stream.data.corpus.builder import build_demo_corpus, plan_demo_corpus
from nes2net_stream.data.corpus.requirements import check_requirements
from nes2net_stream.data.corpus.summary import CorpusSummary, SplitSummary

__all__ = [
    "CorpusSummary",
    "SplitSummary",
    "build_demo_corpus",
    "check_requirements",
    "plan_demo_corpus",
]
