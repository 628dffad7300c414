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

Nothing here waits for the device: row and slot indices travel as index tensors copied from
pinned memory without blocking, and batches whose rows all take the same path use slices.
(Indexing a CUDA tensor with a Python list, or building a CUDA tensor from one, copies the
indices from pageable memory and waits for everything queued before it: on the GPU engine
that made each batch wait for the previous one to finish before queuing its transformer.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from nes2net_stream.models.detector import Detector


def device_index(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """``values`` as an int64 index tensor on ``device``, without waiting for the device.

    On CUDA the indices are written to pinned host memory and copied asynchronously (the
    caching host allocator keeps that memory until the copy has run).
    """
    if device.type != "cuda":
        return torch.tensor(values, dtype=torch.int64, device=device)
    host = torch.tensor(values, dtype=torch.int64).pin_memory()
    return host.to(device, non_blocking=True)


class ConvFeatureCache:
    """Reuses the convolutional frames of each stream's previous window (device memory).

    Frames live in one preallocated tensor of slots (grown by doubling up to ``max_entries``),
    so a batch reads and writes the cache with a constant number of device operations whatever
    its size, and an entry never keeps the rest of its batch's tensors alive.
    """

    def __init__(self, detector: Detector, window_samples: int, max_entries: int = 10_000):
        self.detector = detector
        self.geometry = detector.conv_geometry()
        self.window_samples = window_samples
        self.max_entries = max_entries
        self.frames = self.geometry.frames(window_samples) if self.geometry else 0
        self._index: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (slot, end)
        self._free: list[int] = []
        self._slots: torch.Tensor | None = None  # (capacity, C, frames)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """True when the model's front-end has a reusable convolutional geometry."""
        return self.geometry is not None and self.frames > 0

    @property
    def samples_read(self) -> int:
        """Samples of a window the encoder reads: up to the end of its last frame."""
        assert self.geometry is not None
        return (self.frames - 1) * self.geometry.stride + self.geometry.receptive_field

    @property
    def capacity(self) -> int:
        """Slots allocated so far (device memory held: capacity x C x frames)."""
        return 0 if self._slots is None else self._slots.shape[0]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def forget(self, key: str) -> None:
        """Drop a stream's entry (its call ended)."""
        with self._lock:
            entry = self._index.pop(key, None)
            if entry is not None:
                self._free.append(entry[0])

    def clear(self) -> None:
        """Drop every entry (the slot memory is kept for reuse)."""
        with self._lock:
            self._free.extend(slot for slot, _ in self._index.values())
            self._index.clear()

    def _plan(self, key: str | None, end: int | None) -> tuple[int, int] | None:
        """(slot of the previous frames, new frame count) when ``key``'s last window overlaps."""
        if key is None or end is None or self.geometry is None or self._slots is None:
            return None
        entry = self._index.get(key)
        if entry is None:
            return None
        slot, prev_end = entry
        shift = end - prev_end
        if shift <= 0 or shift % self.geometry.stride:
            return None
        new = shift // self.geometry.stride
        if new >= self.frames:
            return None
        return slot, new

    def plan(self, keys: Sequence[str | None], ends: Sequence[int | None]
             ) -> list[tuple[int, int] | None]:
        """Per row: (slot of the previous frames, new frame count), or None (whole window).

        A stream twice in one batch plans its second window whole: its predecessor is not
        stored yet.
        """
        plans: list[tuple[int, int] | None] = []
        seen: set[str] = set()
        with self._lock:
            for key, end in zip(keys, ends, strict=True):
                plans.append(None if key in seen else self._plan(key, end))
                if key is not None:
                    seen.add(key)
        return plans

    def tail_span(self, plans: Sequence[tuple[int, int] | None]) -> tuple[int, int] | None:
        """The samples ``[start, stop)`` of each window that a batch of ``plans`` reads.

        Only when every row reuses its previous window (the steady state of a busy engine):
        then only that tail of each window, from the first new frame of the row that advanced
        furthest, has to be staged and copied to the device. None otherwise.
        """
        if not plans or self.geometry is None or any(p is None for p in plans):
            return None
        first = self.frames - max(p[1] for p in plans)  # type: ignore[index]
        return first * self.geometry.stride, self.samples_read

    def features(self, x: torch.Tensor, keys: Sequence[str | None],
                 ends: Sequence[int | None], *,
                 plans: Sequence[tuple[int, int] | None] | None = None,
                 offset: int = 0) -> torch.Tensor:
        """Convolutional features (B, C, frames) of the windows ``x`` (B, window_samples).

        Rows with a reusable previous window compute only their new frames; the others run
        the whole encoder. Every row with a key and an end is then stored for its successor.
        ``plans`` (from :meth:`plan`) are computed here when not given; with ``offset`` > 0,
        ``x`` holds only each window's samples from ``offset`` on (:meth:`tail_span`), which
        needs every row to reuse its previous window.
        """
        assert self.geometry is not None
        g = self.geometry
        n = x.shape[0]
        if plans is None:
            plans = self.plan(keys, ends)
        if offset and any(p is None for p in plans):
            raise ValueError("a window without reusable frames needs all its samples")
        full_rows = [i for i, p in enumerate(plans) if p is None]
        out: torch.Tensor | None = None
        if full_rows:
            idx = None if len(full_rows) == n else device_index(full_rows, x.device)
            conv = self.detector.conv_features(x if idx is None else x.index_select(0, idx))
            if idx is None:
                out = conv
            else:
                out = conv.new_empty(n, *conv.shape[1:])
                out.index_copy_(0, idx, conv)
        by_new: dict[int, list[int]] = {}
        for i, p in enumerate(plans):
            if p is not None:
                by_new.setdefault(p[1], []).append(i)
        stop = self.samples_read
        for new, rows in by_new.items():
            first = self.frames - new
            idx = None if len(rows) == n else device_index(rows, x.device)
            part = x if idx is None else x.index_select(0, idx)
            tail = self.detector.conv_features(part[:, first * g.stride - offset:stop - offset])
            assert self._slots is not None
            slots = device_index([plans[i][0] for i in rows],  # type: ignore[index]
                                 self._slots.device)
            prev = self._slots.index_select(0, slots)[:, :, new:]
            merged = torch.cat([prev, tail.to(prev.dtype)], dim=2)
            if idx is None:
                out = merged
            else:
                if out is None:
                    out = self._slots.new_empty(n, *self._slots.shape[1:])
                out.index_copy_(0, idx, merged.to(out.dtype))
        assert out is not None
        self.hits += n - len(full_rows)
        self.misses += len(full_rows)
        self._store(out, keys, ends)
        return out

    def _store(self, feats: torch.Tensor, keys: Sequence[str | None],
               ends: Sequence[int | None]) -> None:
        last: dict[str, tuple[int, int]] = {}  # key -> (row, end); the latest row of a stream
        for i, (key, end) in enumerate(zip(keys, ends, strict=True)):
            if key is not None and end is not None:
                last[key] = (i, end)
        if not last:
            return
        with self._lock:
            assigned: dict[str, tuple[int, int]] = {}  # key -> (row, slot)
            for key, (row, end) in last.items():
                entry = self._index.pop(key, None)
                if entry is not None:
                    slot = entry[0]
                else:
                    slot, evicted = self._take_slot(feats)
                    assigned.pop(evicted or "", None)  # more streams than entries: it lost
                self._index[key] = (slot, end)
                assigned[key] = (row, slot)
            assert self._slots is not None
            rows = [row for row, _ in assigned.values()]
            src = feats if rows == list(range(feats.shape[0])) else feats.index_select(
                0, device_index(rows, feats.device))
            slots = device_index([slot for _, slot in assigned.values()], self._slots.device)
            self._slots.index_copy_(0, slots, src.to(self._slots.dtype))

    def _take_slot(self, like: torch.Tensor) -> tuple[int, str | None]:
        """A free slot (and the key evicted for it): reuse, grow, or evict the oldest entry."""
        if self._free:
            return self._free.pop(), None
        cap = self.capacity
        if cap < self.max_entries:
            new_cap = min(self.max_entries, max(64, 2 * cap))
            grown = like.new_empty(new_cap, *like.shape[1:])
            if self._slots is not None:
                grown[:cap] = self._slots
            self._slots = grown
            self._free.extend(range(new_cap - 1, cap, -1))
            return cap, None
        key, (slot, _) = self._index.popitem(last=False)
        return slot, key
