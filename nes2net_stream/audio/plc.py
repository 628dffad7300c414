"""Packet-loss concealment: the one rule shared by training, evaluation and the RTP gateways.

A lost packet is replaced by the packet before it, attenuated by :data:`PLC_FADE` for each
further packet of a run of losses (a run of losses fades towards silence: the third packet of
a run plays at 0.7 x 0.7 of the second's level, and so on). This is the simplest concealment a
telephone endpoint applies (G.711 Appendix I repeats the last pitch period with a fading
gain); using the same rule in training augmentation and at the RTP ingest edge means the
detector hears on a live call the kind of concealment it was trained with, rather than gaps
of digital silence it never met.

:func:`conceal` fills a gap after a received packet; :func:`lose_packets` simulates random
loss on a recording (for augmentation and for ``nes2net-stream eval --packet-loss``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

#: Level of each repeated packet relative to the one before in a run of losses.
PLC_FADE = 0.7

LossFill = Literal["conceal", "silence"]
LOSS_FILLS: tuple[str, ...] = ("conceal", "silence")


def conceal(last: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples concealing a gap that follows the packet ``last`` (any dtype, 1-D).

    The gap is tiled with ``last``: the k-th repeat (k = 1, 2, ...) is ``last`` times the
    product of the fades before it, :data:`PLC_FADE` ** (k (k - 1) / 2), the same as repeating
    the packet before, faded once more each time. An empty ``last`` conceals with zeros.
    """
    if n <= 0:
        return np.zeros(0, dtype=last.dtype)
    size = len(last)
    if size == 0:
        return np.zeros(n, dtype=last.dtype)
    reps = math.ceil(n / size)
    j = np.arange(reps, dtype=np.float64)  # 0-based repeat: fade ** (j (j + 1) / 2)
    gains = PLC_FADE ** (j * (j + 1) / 2)
    tiled = np.tile(last.astype(np.float64), reps)[:n] * np.repeat(gains, size)[:n]
    if np.issubdtype(last.dtype, np.integer):
        info = np.iinfo(last.dtype)
        return np.clip(np.rint(tiled), info.min, info.max).astype(last.dtype)
    return tiled.astype(last.dtype)


def lose_packets(x: np.ndarray, packet: int, rate: float, rng: np.random.Generator, *,
                 fill: LossFill = "conceal", at_least_one: bool = False) -> np.ndarray:
    """Drop packets of ``packet`` samples of ``x`` at ``rate`` (independently); fill each run.

    ``fill``: ``conceal`` repeats the last received packet with a fading gain
    (:func:`conceal`); ``silence`` zeros the lost packets (what a receiver without
    concealment feeds). The first packet is never lost. ``at_least_one``: lose one packet at
    random when the draw lost none and ``x`` has two or more packets.
    """
    if packet < 1:
        raise ValueError("packet must be at least one sample")
    n_packets = math.ceil(len(x) / packet)
    lost = rng.random(n_packets) < rate
    lost[0] = False
    if at_least_one and n_packets > 1 and not lost.any():
        lost[rng.integers(1, n_packets)] = True
    y = np.array(x, copy=True)
    i = 1
    while i < n_packets:
        if not lost[i]:
            i += 1
            continue
        j = i
        while j < n_packets and lost[j]:
            j += 1
        start, stop = i * packet, min(j * packet, len(y))
        if fill == "silence":
            y[start:stop] = 0
        else:
            y[start:stop] = conceal(y[start - packet:start], stop - start)
        i = j
    return y
