"""Live event feeds for browsers: server-sent events read from the Redis streams.

``GET /v1/events`` streams the entries of ``<prefix>:alerts`` and ``<prefix>:scores`` as SSE
messages whose ``id`` is the pair of stream ids read so far (``<alerts id>,<scores id>``). A
browser's ``EventSource`` sends the last one back in ``Last-Event-ID`` when it reconnects (or
a page passes it as ``?last_event_id=``), and the feed resumes right after it: no entry is
sent twice or skipped while the streams still hold it. Every few seconds an ``active`` message
lists the calls open in this process, including those with no score yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError, ResponseError

from nes2net_stream.logs import get_logger
from nes2net_stream.service.events import REPLICA_ID
from nes2net_stream.service.redis_client import create_redis_client

log = get_logger("nes2net.feeds")
# ASCII digits only and \Z (not $, which allows a trailing newline): ids go to Redis XREAD
STREAM_ID_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\Z")
MAX_ID_PART = 2 ** 64 - 1  # Redis stream ids are two unsigned 64-bit numbers
STREAMS = ("alerts", "scores")
BLOCK_MS = 2000          # longest XREAD wait; also the period of the "active" messages
READ_COUNT = 500
MAX_HISTORY_S = 24 * 3600
MAX_FEEDS = 200          # concurrent SSE connections per process


class FeedRequestError(ValueError):
    """A feed request with invalid parameters (answered with HTTP 400)."""


@dataclass
class FeedQuery:
    """What one feed connection asked for.

    Attributes:
        streams: ``alerts``, ``scores`` or both.
        call_id: only this call's events, if set.
        cursor: stream id to resume after, per stream, from ``Last-Event-ID``.
        history_s: without a cursor, start this many seconds back (0: only new events).
    """

    streams: tuple[str, ...] = STREAMS
    call_id: str | None = None
    cursor: dict[str, str] | None = None
    history_s: float = 0.0


def parse_cursor(text: str, streams: tuple[str, ...]) -> dict[str, str]:
    """``"<alerts id>,<scores id>"`` (the SSE id) to a per-stream cursor.

    ``-`` stands for a stream the feed did not follow; such a stream starts afresh.
    """
    parts = text.strip().split(",")
    if len(parts) != len(STREAMS) or not all(
            p == "-" or (STREAM_ID_RE.match(p) and max(map(int, p.split("-"))) <= MAX_ID_PART)
            for p in parts):
        raise FeedRequestError(f"Last-Event-ID {text[:60]!r} is not '<alerts id>,<scores id>'")
    cursor = dict(zip(STREAMS, parts, strict=True))
    return {s: cursor[s] for s in streams if cursor[s] != "-"}


def format_cursor(cursor: dict[str, str]) -> str:
    """The SSE id of a cursor (``-`` for a stream not followed)."""
    return ",".join(cursor.get(s, "-") for s in STREAMS)


def parse_query(query: Any, last_event_id: str | None) -> FeedQuery:
    """Validate the feed's query parameters (``streams``, ``call_id``, ``history_s``)."""
    names = tuple(x for x in query.get("streams", ",".join(STREAMS)).split(",") if x)
    if not names or any(n not in STREAMS for n in names):
        raise FeedRequestError("streams must be 'alerts', 'scores' or 'alerts,scores'")
    try:
        history_s = float(query.get("history_s", "0"))
    except ValueError:
        raise FeedRequestError("history_s must be a number of seconds") from None
    if not 0.0 <= history_s <= MAX_HISTORY_S:
        raise FeedRequestError(f"history_s must be between 0 and {MAX_HISTORY_S}")
    last = last_event_id or query.get("last_event_id")
    return FeedQuery(streams=tuple(s for s in STREAMS if s in names),
                     call_id=query.get("call_id") or None,
                     cursor=parse_cursor(last, names) if last else None, history_s=history_s)


def active_calls(ctx: Any) -> list[dict[str, Any]]:
    """The calls open in this process (for the ``active`` messages)."""
    now_mono, now = time.monotonic(), time.time()
    return [{"call_id": s.call_id, "source": s.start.source.to_dict(),
             "metadata": s.metadata, "channels": s.scored_roles,
             "started_unix": round(now - (now_mono - s.started_at), 3),
             "audio_s": round(s.audio_seconds, 2), "replica": REPLICA_ID}
            for s in list(ctx.calls.values())]


class EventFeeds:
    """Serves ``/v1/events`` from one Redis connection pool."""

    def __init__(self, redis_url: str, key_prefix: str, ctx: Any):
        self.client = create_redis_client(redis_url, socket_timeout=BLOCK_MS / 1000 + 5,
                                          decode_responses=True)
        self.keys = {s: f"{key_prefix}:{s}" for s in STREAMS}
        self.ctx = ctx
        self.open = 0
        self.stopping = asyncio.Event()

    async def _start_cursor(self, q: FeedQuery) -> dict[str, str]:
        cursor = dict(q.cursor or {})
        missing = [s for s in q.streams if s not in cursor]
        if not missing:
            return cursor
        if q.history_s > 0 and q.cursor is None:  # stream ids are Redis server milliseconds
            sec, usec = await self.client.time()
            ms = int(sec) * 1000 + int(usec) // 1000 - int(q.history_s * 1000)
            return {s: f"{max(ms, 0)}-0" for s in q.streams}
        for s in missing:  # pin "$" to concrete ids so a reconnect does not skip entries
            try:
                info = await self.client.xinfo_stream(self.keys[s])
                cursor[s] = info["last-generated-id"]
            except ResponseError:  # no such stream yet
                cursor[s] = "0-0"
        return cursor

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The SSE response; runs until the client leaves or the service drains."""
        try:
            q = parse_query(request.query, request.headers.get("Last-Event-ID"))
        except FeedRequestError as exc:
            return web.json_response({"error": {"code": "bad_request", "message": str(exc)}},
                                     status=400)
        if self.open >= MAX_FEEDS or self.stopping.is_set():
            return web.json_response({"error": {"code": "too_many_feeds", "message":
                                      f"{self.open} event feeds are open (limit {MAX_FEEDS})"}},
                                     status=503 if self.stopping.is_set() else 429)
        try:
            cursor = await self._start_cursor(q)
        except (RedisError, OSError) as exc:
            return web.json_response({"error": {"code": "redis_unavailable",
                                                "message": f"Redis: {exc}"}}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        self.open += 1
        try:
            hello = {"replica": REPLICA_ID, "streams": list(q.streams), "call_id": q.call_id,
                     "thresholds": {"suspicious": self.ctx.alerts.suspicious_threshold,
                                    "spoof": self.ctx.alerts.spoof_threshold}}
            await resp.write(f"retry: 2000\nid: {format_cursor(cursor)}\n"
                             f"event: hello\ndata: {json.dumps(hello)}\n\n".encode())
            await self._pump(resp, q, cursor)
        except ConnectionError:  # the browser left
            pass
        finally:
            self.open -= 1
        return resp

    async def _pump(self, resp: web.StreamResponse, q: FeedQuery,
                    cursor: dict[str, str]) -> None:
        last_active = 0.0
        backoff = 0.1
        while not self.stopping.is_set():
            if time.monotonic() - last_active >= BLOCK_MS / 1000:
                last_active = time.monotonic()
                calls = active_calls(self.ctx)
                if q.call_id:
                    calls = [c for c in calls if c["call_id"] == q.call_id]
                await resp.write(f"event: active\ndata: {json.dumps({'calls': calls})}\n\n"
                                 .encode())
            try:
                reply = await self.client.xread({self.keys[s]: cursor[s] for s in q.streams},
                                                block=BLOCK_MS, count=READ_COUNT)
            except (RedisError, OSError) as exc:
                log.warning("event feed: redis read failed; retrying", error=str(exc))
                await resp.write(b": redis unavailable, retrying\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            names = {v: k for k, v in self.keys.items()}
            chunks = []
            for key, entries in reply or []:
                stream = names[key]
                for entry_id, fields in entries:
                    cursor[stream] = entry_id
                    if q.call_id and fields.get("call_id") != q.call_id:
                        continue
                    chunks.append(f"id: {format_cursor(cursor)}\nevent: {fields.get('type')}\n"
                                  f"data: {fields['event']}\n\n")
            if chunks:
                await resp.write("".join(chunks).encode())
            else:  # the id keeps a filtered feed's cursor fresh for its next reconnect
                await resp.write(f"id: {format_cursor(cursor)}\n: keep-alive\n\n".encode())

    async def close(self) -> None:
        """Stop every feed and release the Redis connections."""
        self.stopping.set()
        await self.client.aclose()
