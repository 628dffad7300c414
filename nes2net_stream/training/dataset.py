"""Datasets over ASVspoof-style protocols (the ASVspoof 2019 LA layout and the demo corpus)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nes2net_stream.audio.io import load_audio
from nes2net_stream.audio.vad import VADConfig, speech_stream
from nes2net_stream.audio.windows import WindowConfig, pad_by_repetition
from nes2net_stream.data.protocols import Trial, audio_path, database_split, read_protocol
from nes2net_stream.errors import AudioError, DataError

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
#: Below this much detected speech (the live service's default ``min_speech_s``) a trial's
#: speech stream is not used and its raw audio is cropped instead.
MIN_SPEECH_SAMPLES = int(WindowConfig().min_speech_s * 16000)


def load_split(root: str | Path, split: str, *, limit: int | None = None,
               seed: int = 0) -> tuple[list[Trial], Path]:
    """Trials and audio folder of one split; ``limit`` keeps a class-stratified random subset."""
    protocol, audio_dir = database_split(root, split)
    trials = read_protocol(protocol)
    if limit is not None and limit < len(trials):
        rng = np.random.default_rng(seed)
        bona = [t for t in trials if not t.is_spoof]
        spoof = [t for t in trials if t.is_spoof]
        n_bona = max(1, round(limit * len(bona) / len(trials)))
        pick_b = rng.choice(len(bona), size=min(n_bona, len(bona)), replace=False)
        pick_s = rng.choice(len(spoof), size=min(limit - len(pick_b), len(spoof)), replace=False)
        trials = [bona[i] for i in sorted(pick_b)] + [spoof[i] for i in sorted(pick_s)]
    return trials, audio_dir


class ProtocolDataset(Dataset):
    """Fixed-length crops of the trials of a protocol with their labels (1 = bona fide).

    Training crops are random (a random start, padded by repetition when the file is shorter)
    and pass through ``augment``; evaluation crops take the first ``segment_samples`` like the
    official 4-second protocol. Decoded audio is cached in memory when ``cache`` is true.

    ``speech_crops`` is the share of crops cut from the trial's speech stream (the frames the
    VAD keeps, silence dropped: what the live service scores, :func:`speech_stream`) instead of
    the raw recording; evaluation crops then come from the speech stream whenever it is
    above zero. A trial with less than a second of detected speech keeps its raw audio.
    """

    def __init__(self, trials: Sequence[Trial], audio_dir: str | Path, *,
                 segment_samples: int = 64_000, train: bool = True,
                 augment: Augment | None = None, seed: int = 0, cache: bool = True,
                 speech_crops: float = 0.0, vad: VADConfig | None = None):
        if not trials:
            raise DataError("empty protocol: no trials to load")
        if not 0.0 <= speech_crops <= 1.0:
            raise DataError(f"speech_crops must be in [0, 1], got {speech_crops}")
        self.speech_crops = speech_crops
        self.vad = vad or VADConfig()
        self._speech: dict[int, np.ndarray] = {}
        self.trials = list(trials)
        self.audio_dir = Path(audio_dir)
        self.segment = segment_samples
        self.train = train
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        missing = [t.utterance for t in self.trials[:50] if not self._exists(t)]
        if missing:
            raise DataError(f"audio missing in {self.audio_dir}: {', '.join(missing[:5])}")

    def _exists(self, trial: Trial) -> bool:
        try:
            audio_path(self.audio_dir, trial.utterance)
        except DataError:
            return False
        return True

    def __len__(self) -> int:
        return len(self.trials)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops and augmentations for a new epoch (reproducibly)."""
        self.epoch = epoch

    def balance_weights(self) -> np.ndarray:
        """Sampling weights that balance speakers, systems and classes.

        Every bona fide speaker and every spoofing system gets the same share of its class,
        and both classes the same share of the epoch.
        """
        groups = [(t.key, t.speaker if not t.is_spoof else t.system) for t in self.trials]
        counts: dict[tuple[str, str], int] = {}
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
        per_class: dict[str, int] = {}
        for key, _ in counts:
            per_class[key] = per_class.get(key, 0) + 1
        w = np.array([1.0 / (counts[g] * per_class[g[0]]) for g in groups])
        return w / w.sum()

    def labels(self) -> np.ndarray:
        """Class labels of all trials (1 = bona fide, 0 = spoof)."""
        return np.array([t.label for t in self.trials], dtype=np.int64)

    def preload(self, progress: bool = False) -> None:
        """Decode every trial into the cache now (before data-loader workers fork)."""
        if self._cache is None:
            return
        import sys

        from tqdm import tqdm

        for i in tqdm(range(len(self.trials)), desc="loading audio", unit="file",
                      disable=not progress, file=sys.stderr, leave=False):
            self._audio(i)
            if self.speech_crops > 0:
                self._speech_audio(i)

    def _audio(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        path = audio_path(self.audio_dir, self.trials[index].utterance)
        try:
            x = load_audio(path, sample_rate=16000, allow_silence=True).samples
        except AudioError as exc:
            raise DataError(f"trial {self.trials[index].utterance}: {exc}") from exc
        if self._cache is not None:
            self._cache[index] = x
        return x

    def _speech_audio(self, index: int) -> np.ndarray:
        if index in self._speech:
            return self._speech[index]
        x = self._audio(index)
        speech = speech_stream(x, self.vad)
        if speech.shape[0] < MIN_SPEECH_SAMPLES:
            speech = x
        if self._cache is not None:
            self._speech[index] = speech
        return speech

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            use_speech = self.speech_crops > 0 and rng.random() < self.speech_crops
            x = self._speech_audio(index) if use_speech else self._audio(index)
            if x.shape[0] > self.segment:
                start = int(rng.integers(0, x.shape[0] - self.segment + 1))
                x = x[start:start + self.segment]
            else:
                x = pad_by_repetition(x, self.segment)
            if self.augment is not None:
                x = self.augment(x, rng)
        else:
            x = self._speech_audio(index) if self.speech_crops > 0 else self._audio(index)
            x = pad_by_repetition(x, self.segment)
        x = np.clip(np.nan_to_num(x), -1.0, 1.0).astype(np.float32, copy=False)
        return torch.from_numpy(np.ascontiguousarray(x)), self.trials[index].label
