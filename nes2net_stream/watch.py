"""Reading events back from Redis streams, resuming from the last id after any outage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from nes2net_stream.logs import get_logger
from nes2net_stream.service.redis_client import create_redis_client

log = get_logger("nes2net.watch")


async def tail_events(url: str, streams: list[str], on_event: Callable[[dict[str, Any]], None],
                      *, from_start: bool = False, count: int | None = None,
                      block_ms: int = 5000, stop: asyncio.Event | None = None) -> int:
    """Call ``on_event`` for every new stream entry, in order, until ``count`` or ``stop``.

    Reconnects with backoff when Redis goes away and resumes after the last entry id it saw,
    so nothing is skipped or shown twice.
    """
    last = {s: "0-0" if from_start else "$" for s in streams}
    seen = 0
    backoff = 0.1
    client = create_redis_client(url, decode_responses=True, socket_timeout=block_ms / 1000 + 5)
    try:
        if not from_start:  # pin "$" to concrete ids so a reconnect does not skip entries
            for s in streams:
                try:
                    info = await client.xinfo_stream(s)
                    last[s] = info["last-generated-id"]
                except RedisError:
                    last[s] = "0-0"
        while (count is None or seen < count) and not (stop and stop.is_set()):
            try:
                reply = await client.xread(last, block=block_ms, count=100)
            except (RedisError, OSError) as exc:
                log.warning("redis read failed; retrying", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    last[stream] = entry_id
                    event = json.loads(fields["event"])
                    event["_stream_id"] = entry_id
                    on_event(event)
                    seen += 1
                    if count is not None and seen >= count:
                        return seen
    finally:
        await client.aclose()
    return seen
