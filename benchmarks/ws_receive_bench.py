"""CPU per received WebSocket message: ``asyncio.timeout`` per ``recv()`` against ``Receiver``,
on asyncio's event loop and on uvloop (``[server] event_loop``).

A websockets server (this process) receives audio-sized binary messages from N connections fed
by a load-generator process at a fixed packet rate; each server handler waits for messages in
0.5 s slices as the service's handlers do, either with ``async with asyncio.timeout(...)`` around
every ``recv()`` (one timer per message) or with :class:`nes2net_stream.service.ws_poll.Receiver`
(one timer per slice). Prints the server's CPU microseconds per message for each, as JSON.

    python benchmarks/ws_receive_bench.py                    # 200 connections, 20 ms packets
    python benchmarks/ws_receive_bench.py --loops asyncio,uvloop --forms receiver
    python benchmarks/ws_receive_bench.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import websockets
from websockets.asyncio.server import ServerConnection, serve

from nes2net_stream.bench.engine import emit, environment
from nes2net_stream.bench.loadgen import CallPlan, LoadGenerator
from nes2net_stream.client import start_message
from nes2net_stream.service import event_loop
from nes2net_stream.service.ws_poll import Receiver

SLICE_S = 0.5


async def handler_timeout(conn: ServerConnection) -> None:
    while True:
        try:
            async with asyncio.timeout(SLICE_S):
                msg = await conn.recv()
        except TimeoutError:
            continue
        if isinstance(msg, str) and '"stop"' in msg:
            return


async def handler_receiver(conn: ServerConnection) -> None:
    receiver = Receiver.of(conn)
    while True:
        try:
            msg = await receiver.recv(SLICE_S)
        except TimeoutError:
            continue
        if isinstance(msg, str) and '"stop"' in msg:
            return


def load(url: str, calls: int, seconds: float, packet_ms: int) -> None:
    """The load-generator process: ``calls`` real-time calls of μ-law-sized packets."""
    packet = 8 * packet_ms
    plans = [CallPlan(f"c{i}", start_message(f"c{i}", "mulaw", 8000), bytes(int(seconds * 8000)),
                      packet_bytes=packet, packet_s=packet / 8000, audio_s=seconds,
                      delay_s=0.5 * i / calls) for i in range(calls)]
    asyncio.run(LoadGenerator(url).run(plans))


async def measure(handler, calls: int, seconds: float, packet_ms: int) -> dict[str, float]:  # noqa: ANN001
    async with serve(handler, "127.0.0.1", 0, compression=None) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        proc = multiprocessing.get_context("spawn").Process(
            target=load, args=(url, calls, seconds, packet_ms))
        cpu0, t0 = time.process_time(), time.monotonic()
        proc.start()
        await asyncio.to_thread(proc.join)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    messages = calls * (seconds * 1000 / packet_ms + 2)  # audio + start + stop
    return {"server_cpu_s": round(cpu, 3), "wall_s": round(wall, 2),
            "cpu_us_per_message": round(1e6 * cpu / messages, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--packet-ms", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each form")
    ap.add_argument("--forms", default="asyncio_timeout,receiver",
                    help="receive forms to compare: asyncio_timeout, receiver")
    ap.add_argument("--loops", default="asyncio",
                    help="event loops of the receiving server: asyncio, uvloop")
    ap.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args()
    if a.smoke:
        a.calls, a.seconds, a.rounds = 4, 1.0, 1
    handlers = {"asyncio_timeout": handler_timeout, "receiver": handler_receiver}
    forms = [f for f in a.forms.split(",") if f]
    loops = [x for x in a.loops.split(",") if x]
    rows = []
    for r in range(a.rounds):
        for loop in loops:
            for name in forms:
                res = event_loop.run(measure(handlers[name], a.calls, a.seconds, a.packet_ms),
                                     loop)
                rows.append({"form": name, "loop": loop, "round": r, **res})
    best = {f"{f}/{lp}": min(x["cpu_us_per_message"] for x in rows
                             if x["form"] == f and x["loop"] == lp)
            for f in forms for lp in loops}
    emit({"benchmark": "ws_receive", "date": datetime.now(UTC).isoformat(timespec="seconds"),
          "environment": {**environment(torch.device("cpu")), "host_cpus": os.cpu_count(),
                          "websockets": websockets.__version__},
          "calls": a.calls, "seconds": a.seconds, "packet_ms": a.packet_ms, "rows": rows,
          "best_cpu_us_per_message": best}, a.out)


if __name__ == "__main__":
    main()
