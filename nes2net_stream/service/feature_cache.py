"""Per-stream cache of convolutional SSL features across overlapping windows.

Consecutive windows of one call channel overlap: with a 4 s window and a 1 s hop, three
quarters of each window were already seen. The convolutional feature encoder of wav2vec 2.0 /
XLS-R / WavLM Large has no padding and per-frame layer norm, so frame ``i`` of a window depends
only on samples ``[i*stride, i*stride + receptive_field)``. When a window starts ``shift``
samples after the previous one of its stream and ``shift`` is a multiple of the stride, its
first ``frames - shift/stride`` frames are the previous window's last ones, and only the
``shift/stride`` new frames have to be computed from the window's tail. That is exact (the
same arithmetic on the same samples); the tests check it against full windows.

A window is only reusable when it is a contiguous slice of its stream (not padded by
repetition); the caller passes ``stream_end`` (samples of the stream up to the window's end)
only for such windows. Entries are kept per stream key, least recently used first out, and
dropped when their call ends (:meth:`ConvFeatureCache.forget`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from nes2net_stream.models.detector import Detector


class ConvFeatureCache:
    """Reuses the convolutional frames of each stream's previous window (device memory)."""

    def __init__(self, detector: Detector, window_samples: int, max_entries: int = 10_000):
        self.detector = detector
        self.geometry = detector.conv_geometry()
        self.window_samples = window_samples
        self.max_entries = max_entries
        self.frames = self.geometry.frames(window_samples) if self.geometry else 0
        self._store: OrderedDict[str, tuple[int, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """True when the model's front-end has a reusable convolutional geometry."""
        return self.geometry is not None and self.frames > 0

    def __len__(self) -> int:
        return len(self._store)

    def forget(self, key: str) -> None:
        """Drop a stream's entry (its call ended)."""
        with self._lock:
            self._store.pop(key, None)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._store.clear()

    def _reusable(self, key: str | None, end: int | None) -> tuple[torch.Tensor, int] | None:
        """(previous frames, new frame count) when ``key``'s last window overlaps this one."""
        if key is None or end is None or self.geometry is None:
            return None
        with self._lock:
            entry = self._store.get(key)
        if entry is None:
            return None
        prev_end, frames = entry
        shift = end - prev_end
        if shift <= 0 or shift % self.geometry.stride:
            return None
        new = shift // self.geometry.stride
        if new >= self.frames:
            return None
        return frames, new

    def features(self, x: torch.Tensor, keys: Sequence[str | None],
                 ends: Sequence[int | None]) -> torch.Tensor:
        """Convolutional features (B, C, frames) of the windows ``x`` (B, window_samples).

        Rows with a reusable previous window compute only their new frames; the others run
        the whole encoder. Every row with a key and an end is then stored for its successor.
        """
        assert self.geometry is not None
        g = self.geometry
        n = x.shape[0]
        plans: list[tuple[torch.Tensor, int] | None] = []
        seen: set[str] = set()
        for key, end in zip(keys, ends, strict=True):
            # a stream twice in one batch: the second window's predecessor is not stored yet
            plan = None if key in seen else self._reusable(key, end)
            if key is not None:
                seen.add(key)
            plans.append(plan)
        full_rows = [i for i, p in enumerate(plans) if p is None]
        out: list[torch.Tensor | None] = [None] * n
        if full_rows:
            conv = self.detector.conv_features(x[full_rows])
            for j, i in enumerate(full_rows):
                out[i] = conv[j]
        by_new: dict[int, list[int]] = {}
        for i, p in enumerate(plans):
            if p is not None:
                by_new.setdefault(p[1], []).append(i)
        for new, rows in by_new.items():
            first = self.frames - new
            start = first * g.stride
            stop = (self.frames - 1) * g.stride + g.receptive_field
            tail = self.detector.conv_features(x[rows, start:stop])
            for j, i in enumerate(rows):
                prev, _ = plans[i]  # type: ignore[misc]
                out[i] = torch.cat([prev[:, new:], tail[j].to(prev.dtype)], dim=1)
        self.hits += n - len(full_rows)
        self.misses += len(full_rows)
        feats = torch.stack(out)  # type: ignore[arg-type]
        with self._lock:
            for i, (key, end) in enumerate(zip(keys, ends, strict=True)):
                if key is None or end is None:
                    continue
                self._store[key] = (end, feats[i])
                self._store.move_to_end(key)
            while len(self._store) > self.max_entries:
                self._store.popitem(last=False)
        return feats
