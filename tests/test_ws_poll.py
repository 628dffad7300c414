"""Receiver: recv() with a timeout and one timer per connection, over a real loopback socket."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from nes2net_stream.service.ws_poll import Receiver


async def pair(handler):  # noqa: ANN001, ANN201
    """A server running ``handler(conn)`` and the URL to reach it."""
    srv = await serve(handler, "127.0.0.1", 0).__aenter__()
    return srv, f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


async def test_streamed_messages_arrive_in_order_with_a_timer_per_slice_not_per_message():
    got: list[object] = []
    timeouts = 0
    timers = 0
    done = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        nonlocal timeouts, timers
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counting_call_at(when, callback, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            nonlocal timers
            if getattr(callback, "__self__", None) is receiver:  # the client shares this loop
                timers += 1
            return call_at(when, callback, *args, **kwargs)

        loop.call_at = counting_call_at  # type: ignore[method-assign]
        receiver = Receiver.of(conn)
        assert Receiver.of(conn) is receiver
        try:
            while len(got) < 60:
                try:
                    got.append(await receiver.recv(0.3))
                except TimeoutError:
                    timeouts += 1
        finally:
            loop.call_at = call_at  # type: ignore[method-assign]
            done.set()

    srv, url = await pair(handler)
    async with connect(url) as ws:
        for i in range(50):  # 50 packets 5 ms apart: well inside one 0.3 s slice each
            await ws.send(bytes([i]))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.7)  # silence: the receive gives up (at least twice)
        for i in range(50, 60):
            await ws.send(bytes([i]))
        await asyncio.wait_for(done.wait(), 5)
    srv.close()
    assert got == [bytes([i]) for i in range(60)]  # nothing lost, nothing reordered
    assert timeouts >= 2
    # far fewer timers than messages (asyncio.timeout would have armed one per message)
    assert timers <= 10, timers


async def test_an_outside_cancellation_stays_a_cancellation():
    outcome: list[str] = []
    entered = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        receiver = Receiver.of(conn)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.05, task.cancel)
        entered.set()
        try:
            await receiver.recv(10.0)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        except TimeoutError:
            outcome.append("timeout")

    srv, url = await pair(handler)
    async with connect(url) as ws:
        await asyncio.wait_for(entered.wait(), 5)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    srv.close()
    assert outcome == ["cancelled"]


async def test_deadlines_racing_ready_messages_lose_nothing_and_close_is_reported():
    got: list[object] = []
    ends: list[str] = []

    async def handler(conn: ServerConnection) -> None:
        receiver = Receiver.of(conn)
        while True:
            try:
                got.append(await receiver.recv(0.0005))  # expires constantly
            except TimeoutError:
                continue
            except ConnectionClosed:
                ends.append("closed")
                return

    srv, url = await pair(handler)
    async with connect(url) as ws:
        for i in range(300):
            await ws.send(str(i))
            if i % 7 == 0:
                await asyncio.sleep(0.001)
    await asyncio.sleep(0.3)
    srv.close()
    assert got == [str(i) for i in range(300)]
    assert ends == ["closed"]
