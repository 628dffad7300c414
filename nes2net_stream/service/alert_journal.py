"""On-disk journal of alerts not yet written to Redis, replayed by the next process.

The publisher's alert buffer lives in memory: a process that is killed, crashes, or stops
while Redis is unreachable would lose what it holds. With ``[redis] alert_journal_dir`` set,
every alert (``state`` and ``summary`` events) is appended to a journal before it is queued,
and an acknowledgement is appended once Redis has taken it (or the bounded buffer dropped it).
The next process with the same directory replays the alerts that were never acknowledged, in
their order and with their original ``event_id`` (consumers already de-duplicate on it).

Layout of a journal directory (one per process; ingest worker ``i`` uses ``w<i>``)::

    .lock                       flock(2)-held by the owning process
    00000000000000000001.jsonl  segments, in order of their first sequence number

Each line is one JSON record: ``{"s": seq, "e": "<event JSON>"}`` for an alert and
``{"a": seq}`` for "everything up to ``seq`` is done". Alerts leave the buffer in order, so one
number acknowledges them all.

The journal also knows which scored channels of which calls are open: ``{"c": key, "e": doc}``
opens channel ``key`` when its call starts (``doc``: the channel's identity, no state yet), an
alert record with ``"o": key`` (a ``state`` event) updates it with that event, one with ``"x":
key`` (its ``summary``) closes it, and every new segment starts with a ``"c"`` record for each
channel still open, so deleting delivered segments never forgets one. Channels
open when a process died are :attr:`AlertJournal.lost_calls` for the next one, which publishes a
summary for each (the call ended with the process).

Lines are written with one ``write(2)`` each, which the kernel keeps when the process dies;
``fsync(2)`` (against power loss) runs every ``alert_journal_fsync_s`` from a thread, or after
every write when that is 0. A line cut short by a crash is skipped when the journal is read. A
segment is deleted once all its alerts are acknowledged, and a clean stop with everything
delivered and every call summarised leaves no segment behind, so the journal holds about what
the in-memory buffer holds, plus one segment and the open channels' latest states.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nes2net_stream.logs import get_logger

log = get_logger("nes2net.journal")
LOCK_NAME = ".lock"
SUFFIX = ".jsonl"
LOCK_WAIT_S = 10.0


class JournalError(OSError):
    """The journal directory cannot be used (not writable, or held by another process)."""


@dataclass(frozen=True)
class JournalEntry:
    """One alert read back from a journal."""

    seq: int
    doc: str  # the event's JSON document, as published


def _segment_name(first_seq: int, k: int = 0) -> str:
    return f"{first_seq:020d}{f'.{k}' if k else ''}{SUFFIX}"


def _segment_order(path: Path) -> tuple[int, int]:
    """Creation order of segments: first sequence number, then the collision counter."""
    parts = path.name[:-len(SUFFIX)].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return (1 << 62, 0)  # not a segment name this writes: read it last


@dataclass
class _Contents:
    segments: list[tuple[Path, int]]  # with the last sequence number each holds
    alerts: dict[int, str]
    acked: int
    open_calls: dict[str, str]  # channel key -> its latest state event
    bad: int  # unreadable lines

    def pending(self) -> list[tuple[int, str]]:
        """The unacknowledged alerts, in order: (sequence number, document)."""
        return [(s, self.alerts[s]) for s in sorted(self.alerts) if s > self.acked]


def worker_dirs(base: str | os.PathLike[str]) -> dict[int, Path]:
    """The per-process journal directories (``w<index>``) under ``base``, by index."""
    found = {}
    for p in Path(base).glob("w*"):
        if p.is_dir() and p.name[1:].isdigit():
            found[int(p.name[1:])] = p
    return dict(sorted(found.items()))


def _lock(directory: Path, wait_s: float) -> int:
    """Hold ``directory/.lock`` exclusively; waits up to ``wait_s`` for a dying owner."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError as exc:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise JournalError(f"alert journal {directory} is held by another process"
                                   ) from exc
            time.sleep(0.1)


def _read(directory: Path) -> _Contents:
    """Read a journal directory, records in the order they were written."""
    out = _Contents([], {}, 0, {}, 0)
    for path in sorted(directory.glob("*" + SUFFIX), key=_segment_order):
        last = 0
        with path.open("rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                    if "s" in rec:
                        seq = int(rec["s"])
                        out.alerts[seq] = str(rec["e"])
                        last = max(last, seq)
                        if "o" in rec:
                            out.open_calls[str(rec["o"])] = str(rec["e"])
                        elif "x" in rec:
                            out.open_calls.pop(str(rec["x"]), None)
                    elif "c" in rec:
                        out.open_calls[str(rec["c"])] = str(rec["e"])
                    elif "x" in rec:
                        out.open_calls.pop(str(rec["x"]), None)
                    else:
                        out.acked = max(out.acked, int(rec["a"]))
                except (ValueError, KeyError, TypeError):
                    out.bad += 1  # a line cut short by a crash, or damaged
        out.segments.append((path, last))
    return out


def describe(directory: str | os.PathLike[str]) -> dict[str, object]:
    """What a journal directory holds, without taking it (safe while its owner runs).

    Returns the number of segments and their bytes, the alerts not yet acknowledged (with the
    ``ts`` of the oldest), the open channels (calls being scored, or lost with a dead owner)
    and whether a running process holds the directory.
    """
    d = Path(directory)
    found = _read(d)
    pending = found.pending()
    oldest = None
    if pending:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            oldest = json.loads(pending[0][1]).get("ts")
    held = False
    if (d / LOCK_NAME).exists():
        fd = os.open(d / LOCK_NAME, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held = True
        finally:
            os.close(fd)
    return {"directory": str(d), "held_by_a_process": held, "segments": len(found.segments),
            "bytes": sum(p.stat().st_size for p, _ in found.segments),
            "pending_alerts": len(pending), "oldest_pending_ts": oldest,
            "open_calls": [json.loads(k) for k in found.open_calls],
            "unreadable_lines": found.bad}


class AlertJournal:
    """The alert journal of one process (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], *,
                 segment_bytes: int = 8 * 1024 * 1024, fsync_interval_s: float = 1.0):
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._fd_lock = threading.Lock()  # the fd is swapped on rotation while sync() runs
        self._segments: list[tuple[Path, int]] = []  # all but the current one
        self._current: Path | None = None
        self._current_bytes = 0
        self._next_seq = 1
        self.acked = 0
        self.dirty = False
        self._open: dict[str, str] = {}  # open channel key -> its latest state event
        self.lost_calls: dict[str, str] = {}  # open when the previous owner died

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest alert."""
        return self._next_seq - 1

    @property
    def pending(self) -> int:
        """Alerts journaled but not yet acknowledged."""
        return self.last_seq - self.acked

    @property
    def open_calls(self) -> int:
        """Scored channels with a state and no summary yet."""
        return len(self._open)

    def open(self) -> list[JournalEntry]:
        """Take the directory, read it, and return the unacknowledged alerts in order.

        Channels the previous owner left open are in :attr:`lost_calls` afterwards.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock(self.directory, LOCK_WAIT_S)
            found = _read(self.directory)
        except JournalError:
            raise
        except OSError as exc:
            raise JournalError(f"alert journal {self.directory}: {exc}") from exc
        if found.bad:
            log.warning("alert journal: unreadable lines skipped", lines=found.bad,
                        directory=str(self.directory))
        self.acked = found.acked
        self._next_seq = max([self.acked, *found.alerts]) + 1
        self._segments = found.segments
        self._open = dict(found.open_calls)
        self.lost_calls = dict(found.open_calls)
        self._start_segment()  # carries the open channels forward
        self._drop_done_segments()
        return [JournalEntry(s, doc) for s, doc in found.pending()]

    def take_over(self, other: Path) -> list[JournalEntry]:
        """Move another journal directory's unacknowledged alerts into this one.

        Used for an ingest worker index no longer configured. Its segments are deleted; the
        alerts are returned with their numbers here, for the caller to replay after the ones
        :meth:`open` returned.
        """
        fd = _lock(other, 0.0)
        try:
            found = _read(other)
            moved = [JournalEntry(self.append(doc), doc) for _s, doc in found.pending()]
            for key, doc in found.open_calls.items():
                self._carry(key, doc)
                self.lost_calls[key] = doc
            self.sync()
            for path, _last in found.segments:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        return moved

    def append(self, doc: str, *, opens: str | None = None, closes: str | None = None) -> int:
        """Journal one alert; returns its sequence number. Raises :class:`OSError`.

        ``opens``: the alert is the latest state of the scored channel with this key (a
        ``state`` event); ``closes``: it ends that channel (its ``summary``).
        """
        seq = self._next_seq
        rec: dict[str, object] = {"s": seq, "e": doc}
        # the open channels are tracked even when the write fails: the next segment restates
        # them, and a summary that could not be journaled must not leave its channel open
        if opens is not None:
            rec["o"] = opens
            self._open[opens] = doc
        elif closes is not None:
            rec["x"] = closes
            self._open.pop(closes, None)
            self.lost_calls.pop(closes, None)
        self._write(json.dumps(rec, separators=(",", ":")))
        self._next_seq += 1
        return seq

    def track(self, key: str, doc: str) -> None:
        """A scored channel started: open it with ``doc``; raises :class:`OSError`.

        ``doc`` is a ``state``-shaped event without a state, and no alert: a process dying
        before the channel's first state change still leaves it for :attr:`lost_calls`.
        """
        self._open[key] = doc
        self._write(json.dumps({"c": key, "e": doc}, separators=(",", ":")))

    def discard(self, key: str) -> None:
        """Close an open channel without an alert (its record cannot be used)."""
        self._write(json.dumps({"x": key}, separators=(",", ":")))
        self._open.pop(key, None)
        self.lost_calls.pop(key, None)

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` was written to Redis or dropped. Raises :class:`OSError`."""
        if seq <= self.acked:
            return
        self.acked = seq
        self._write(f'{{"a":{seq}}}')
        self._drop_done_segments()

    def sync(self) -> None:
        """``fsync`` the current segment if it has unsynced lines (safe from another thread)."""
        with self._fd_lock:
            if self._fd is None or not self.dirty:
                return
            fd = os.dup(self._fd)
            self.dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> bool:
        """Release the directory.

        With every alert delivered and every channel closed its segments are deleted (True);
        otherwise they stay for the next process (False).
        """
        done = self.pending == 0 and not self._open  # else: alerts or summaries still due
        with self._fd_lock:
            if self._fd is not None:
                if not done:
                    with contextlib.suppress(OSError):
                        os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        if done:
            for path, _last in self._segments:
                path.unlink(missing_ok=True)
            if self._current is not None:
                self._current.unlink(missing_ok=True)
            self._segments = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        return done

    def _write(self, line: str) -> None:
        if self._current_bytes >= self.segment_bytes:
            self._rotate()
        self._current_bytes += self._put(line)
        if self.fsync_interval_s <= 0:
            self.sync()

    def _put(self, line: str) -> int:
        data = (line + "\n").encode()
        assert self._fd is not None, "journal not open"
        n = os.write(self._fd, data)
        if n != len(data):  # a short write (disk full): the line is cut; say so
            raise OSError(f"short write to {self._current} ({n} of {len(data)} bytes)")
        self.dirty = True
        return n

    def _carry(self, key: str, doc: str) -> None:
        """Restate an open channel at the head of the current segment."""
        self._open[key] = doc
        self._put(json.dumps({"c": key, "e": doc}, separators=(",", ":")))

    def _start_segment(self) -> None:
        path, k = self.directory / _segment_name(self._next_seq), 0
        while path.exists():  # a segment of acknowledgements only may carry the same number
            k += 1
            path = self.directory / _segment_name(self._next_seq, k)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with self._fd_lock:
            old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)
        self._current = path
        self._current_bytes = 0  # carried records do not count: no rotation loop
        for key, doc in list(self._open.items()):
            self._carry(key, doc)

    def _rotate(self) -> None:
        assert self._current is not None
        self.sync()
        self._segments.append((self._current, self.last_seq))
        self._start_segment()
        self._drop_done_segments()

    def _drop_done_segments(self) -> None:
        while self._segments and self._segments[0][1] <= self.acked:
            self._segments.pop(0)[0].unlink(missing_ok=True)
