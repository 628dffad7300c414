"""Which asyncio event loop runs the service: uvloop where available, else asyncio's own.

An ingest process spends most of its CPU on per-packet work of the event loop (socket reads,
callbacks, futures) and of the WebSocket library, 50 packets a second per call at 20 ms
packets. uvloop implements the loop on libuv in C, which lowers that cost (figures in
docs/benchmarks.md); ``[server] event_loop`` picks it: ``auto`` (uvloop when installed),
``uvloop`` (required: the start fails naming the key without it) or ``asyncio``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from nes2net_stream.errors import ConfigError

T = TypeVar("T")
LoopKind = Literal["auto", "uvloop", "asyncio"]


def loop_factory(kind: LoopKind | str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new loop of ``kind`` (:func:`loop_name` names it once running).

    Raises :class:`~nes2net_stream.errors.ConfigError` naming ``server.event_loop`` when
    ``uvloop`` is asked for and cannot be imported, or for an unknown kind.
    """
    if kind == "asyncio":
        return asyncio.new_event_loop
    if kind not in ("auto", "uvloop"):
        raise ConfigError(f"server.event_loop: {kind!r} is not one of auto, uvloop, asyncio")
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if kind == "uvloop":
            raise ConfigError(f"server.event_loop: uvloop is not installed ({exc}); install "
                              "it or set event_loop = \"auto\" or \"asyncio\"") from exc
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def resolve(kind: LoopKind | str) -> str:
    """``uvloop`` or ``asyncio``: the loop ``kind`` resolves to (errors: :func:`loop_factory`)."""
    return "uvloop" if loop_factory(kind) is not asyncio.new_event_loop else "asyncio"


def run(main: Coroutine[Any, Any, T], kind: LoopKind | str = "auto") -> T:
    """Run ``main`` to completion on a new loop of ``kind`` (like :func:`asyncio.run`)."""
    try:
        factory = loop_factory(kind)
    except ConfigError:
        main.close()  # never awaited: avoid the "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the implementation of the running loop."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
