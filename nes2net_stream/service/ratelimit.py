"""The rate limits of ingest.

Token buckets (messages per connection, requests per client) and the audio of a call against
real time (``[limits] max_call_s``, ``max_realtime_factor``).
"""

from __future__ import annotations

import time
from typing import Any

from nes2net_stream.service.errors import ProtocolError


def check_audio_rate(audio_s: float, elapsed_s: float, limits: Any) -> None:
    """ProtocolError ``call_too_long`` or ``rate_limited`` when a call's audio passes a limit.

    ``audio_s`` is the call's audio position (the furthest channel's), ``elapsed_s`` the wall
    time since the call started: audio may arrive ``max_realtime_factor`` times faster than real
    time after a burst of ``realtime_burst_s``.
    """
    if audio_s > limits.max_call_s:
        raise ProtocolError("call_too_long", f"call exceeded {limits.max_call_s:g} s of audio")
    if audio_s > limits.realtime_burst_s + elapsed_s * limits.max_realtime_factor:
        raise ProtocolError("rate_limited", f"{audio_s:.1f} s of audio in {elapsed_s:.1f} s "
                            f"exceeds {limits.max_realtime_factor:g}x real time")


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when none is left (the caller refuses the message)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a client address), with bounded memory."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> bool:
        """Spend one of ``key``'s tokens; False when none is left."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # an address sweep must not grow memory without bound
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.take()
