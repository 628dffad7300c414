"""The process's open-files limit: every call holds a socket.

Many hosts start processes with a soft ``RLIMIT_NOFILE`` of 1,024 (the hard limit is usually far
higher), which a service accepting ``[limits] max_calls`` = 1,000 connections per process would
hit under load: ``accept()`` fails with "too many open files", new connections wait in the
kernel's accept queue and calls start late, in waves, while the service looks healthy. At
start-up the soft limit is raised to the hard one (as servers commonly do; it needs no
privilege), and a warning names the setting when even the hard limit is below what the
configured call limit needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: descriptors besides the calls' sockets: listeners, Redis connections, shared memory, logs,
#: the model's files, worker pipes
RESERVED = 256


@dataclass(frozen=True)
class OpenFiles:
    """The open-files limit before and after :func:`raise_open_files`."""

    before: int
    after: int
    hard: int
    needed: int

    @property
    def enough(self) -> bool:
        """True when the limit now covers what was asked for."""
        return self.after >= self.needed


def raise_open_files(calls: int) -> OpenFiles | None:
    """Raise the soft open-files limit for ``calls`` concurrent connections; None off POSIX."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    needed = calls + RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    after = soft
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            after = target
        except (ValueError, OSError):  # e.g. above the kernel's nr_open
            after = soft
    return OpenFiles(before=soft, after=after, hard=hard, needed=needed)


def check_open_files(calls: int, log: Any) -> OpenFiles | None:
    """:func:`raise_open_files` and log the outcome (a warning when it is not enough)."""
    found = raise_open_files(calls)
    if found is None:
        return None
    if not found.enough:
        log.warning("open-files limit below what limits.max_calls needs; calls beyond it "
                    "will wait to be accepted and start late", max_calls=calls, needed=found.needed,
                    limit=found.after, hard_limit=found.hard,
                    fix="raise the hard limit: ulimit -Hn, systemd LimitNOFILE=, "
                        "docker --ulimit nofile=")
    elif found.after != found.before:
        log.info("open-files limit raised", before=found.before, after=found.after)
    return found
