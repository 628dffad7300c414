"""The window channel between ingest workers and the scorer process.

Both directions carry batches: whatever queued up while the previous send was in progress goes
out as one message, so under load the number of system calls (and, in the scorer, of GIL
hand-overs) grows with the number of batches, not of windows. The scorer process runs the model
thread, which holds the GIL for most of its time; measured with a GIL-busy scorer, a channel
that moved each 256 KB window as its own pipe message fell to about 65 windows/s and stalled the
worker's event loop for up to 335 ms, because each message needs several reads and each read a
GIL hand-over (``benchmarks/ingest_channel_bench.py``, docs/benchmarks.md).

Window samples travel in shared memory where the platform has anonymous shared files
(``memfd``, Linux): each worker maps arenas of fixed-size slots as it needs them (up to
``[server] worker_window_slots``) and passes each one's descriptor to the scorer over the
socket (``SCM_RIGHTS``), then sends only small records. A slot is the worker's again when the
window's reply arrives; while every slot is in use, or without ``memfd``, samples are sent
inline. memfd memory is not limited by the size of ``/dev/shm``
(64 MB in a default Docker container).

Worker -> scorer message: concatenated records (:data:`RECORD`), each optionally followed by
inline float32 samples. Scorer -> worker message: a pickled ``(replies, expected_wait_s,
restarts)`` with ``replies`` a list of ``(request id, score values or None, error kind)``.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

# kind, request id, stream end (-1: none), stream key (16 bytes, zeros: none), slot (-1:
# inline samples follow), number of samples
RECORD = struct.Struct("<BQq16siI")
WINDOW, FORGET, HELLO = 0, 1, 2
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # one send carries at most this much (beyond one record)


def memfd_available() -> bool:
    """True where anonymous shared memory files exist (Linux)."""
    return hasattr(os, "memfd_create")


class SlotArena:
    """``slots`` float32 buffers of ``slot_samples`` in one shared mapping (one memfd)."""

    def __init__(self, slots: int, slot_samples: int, fd: int | None = None):
        self.slots = slots
        self.slot_samples = slot_samples
        size = max(1, slots * slot_samples * 4)
        if fd is None:
            fd = os.memfd_create("nes2net-windows", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        self.fd = fd
        self._map = mmap.mmap(fd, size)
        self._array = np.frombuffer(self._map, dtype=np.float32)

    def view(self, slot: int, n: int) -> np.ndarray:
        """The first ``n`` samples of ``slot`` (a view into the shared mapping)."""
        start = slot * self.slot_samples
        return self._array[start:start + n]


class SlotPool:
    """Worker side: window slots in arenas of ``chunk`` slots, added on demand up to ``limit``.

    A new arena has to reach the scorer before the first record that uses it:
    :meth:`acquire` returns it alongside the slot so the caller can queue it in order.
    """

    def __init__(self, limit: int, slot_samples: int, chunk: int = 128):
        self.limit = limit
        self.chunk = max(1, min(chunk, limit))
        self.slot_samples = slot_samples
        self.arenas: list[SlotArena] = []
        self._free: list[int] = []
        self._lock = threading.Lock()

    @property
    def free(self) -> int:
        """Slots allocated and not in use."""
        return len(self._free)

    @property
    def allocated(self) -> int:
        """Slots in all arenas."""
        return len(self.arenas) * self.chunk

    def acquire(self) -> tuple[int, SlotArena | None] | None:
        """(a free slot, the arena created for it or None), or None when the limit is reached."""
        with self._lock:
            if self._free:
                return self._free.pop(), None
            if self.allocated + self.chunk > self.limit:
                return None
            arena = SlotArena(self.chunk, self.slot_samples)
            base = self.allocated
            self.arenas.append(arena)
            self._free.extend(range(base + self.chunk - 1, base, -1))
            return base, arena

    def release(self, slot: int) -> None:
        """Give a slot back (its window's reply arrived)."""
        with self._lock:
            self._free.append(slot)

    def view(self, slot: int, n: int) -> np.ndarray:
        """Samples of a slot."""
        return self.arenas[slot // self.chunk].view(slot % self.chunk, n)


def send_fd(conn: Connection, fd: int) -> None:
    """Pass a file descriptor to the other end of a (Unix socket) connection."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        socket.send_fds(sock, [b"F"], [fd])


def recv_fd(conn: Connection) -> int:
    """Receive a descriptor sent with :func:`send_fd`."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if len(fds) != 1:
        raise OSError("expected one file descriptor from the ingest worker")
    return fds[0]


def pack_window(req: int, key: str | None, end: int | None, samples: np.ndarray,
                pool: SlotPool | None) -> tuple[bytes, int, SlotArena | None]:
    """A window record (samples in a slot, else inline), the slot (-1: none), a new arena."""
    raw_key = bytes.fromhex(key) if key is not None else bytes(16)
    n = len(samples)
    got = pool.acquire() if pool is not None and n <= pool.slot_samples else None
    if got is not None:
        slot, arena = got
        pool.view(slot, n)[:] = samples  # type: ignore[union-attr]
        return RECORD.pack(WINDOW, req, -1 if end is None else end, raw_key, slot, n), slot, arena
    head = RECORD.pack(WINDOW, req, -1 if end is None else end, raw_key, -1, n)
    return head + np.ascontiguousarray(samples, np.float32).tobytes(), -1, None


def pack_forget(key: str) -> bytes:
    """The record telling the scorer that a stream ended."""
    return RECORD.pack(FORGET, 0, -1, bytes.fromhex(key), -1, 0)


def pack_hello(arena: SlotArena) -> bytes:
    """Announces a new slot arena (its descriptor follows); its slots number on from the last."""
    return RECORD.pack(HELLO, 0, arena.slot_samples, bytes(16), arena.slots, 0)


@dataclass(frozen=True)
class Record:
    """One parsed worker record."""

    kind: int
    req: int
    end: int | None
    key: str | None
    slot: int
    samples: np.ndarray | None  # inline samples (a read-only view of the message)
    n: int


def parse(data: bytes) -> Iterator[Record]:
    """The records of one worker message."""
    off = 0
    while off < len(data):
        kind, req, end, raw_key, slot, n = RECORD.unpack_from(data, off)
        off += RECORD.size
        samples = None
        if kind == WINDOW and slot < 0:
            samples = np.frombuffer(data, dtype=np.float32, count=n, offset=off)
            off += 4 * n
        key = raw_key.hex() if any(raw_key) else None
        yield Record(kind, req, None if end < 0 else end, key, slot, samples, n)


class Outbox:
    """Items queued by any thread and taken in batches by one sender thread."""

    def __init__(self) -> None:
        self._items: list = []
        self._bytes = 0
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: object, size: int = 0) -> None:
        """Queue one item (``size``: bytes it holds, for :attr:`queued_bytes`)."""
        with self._cond:
            if self._closed:  # the sender is gone (its peer closed): nothing would send it
                return
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify()

    @property
    def queued_bytes(self) -> int:
        """Bytes held by queued items."""
        return self._bytes

    def close(self) -> None:
        """Refuse new items and wake the sender; :meth:`take` returns None once empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, max_bytes: int | None = None) -> list | None:
        """Everything queued (up to ``max_bytes``, at least one item); None when closed."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            if max_bytes is None:
                batch, self._items = self._items, []
            else:
                total, cut = 0, 0
                for _, size in self._items:
                    if cut and total + size > max_bytes:
                        break
                    total += size
                    cut += 1
                batch, self._items = self._items[:cut], self._items[cut:]
            self._bytes -= sum(size for _, size in batch)
        return [item for item, _ in batch]
