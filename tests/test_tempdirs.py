"""Temporary directories of killed processes are removed by the next start; live ones are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from nes2net_stream.service.tempdirs import LOCK_FILE, owned_tempdir, release, remove_stale

PREFIX = "nes2net-test-"


def _child_dir(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A separate process that makes an owned directory, reports it and waits."""
    code = textwrap.dedent(f"""
        import sys, time
        from nes2net_stream.service.tempdirs import owned_tempdir
        print(owned_tempdir({PREFIX!r}, {str(tmp_path)!r}), flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_the_directory_of_a_killed_process_is_removed_by_the_next(tmp_path):
    proc, left = _child_dir(tmp_path)
    try:
        (left / "counter_123.db").write_bytes(b"\0" * 4096)
        assert remove_stale(PREFIX, tmp_path) == []           # its owner is alive: kept
        assert left.is_dir()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert left.is_dir()                                      # no clean-up ran
    mine = owned_tempdir(PREFIX, tmp_path)                    # the next start sweeps it
    assert not left.exists()
    assert Path(mine).is_dir() and (Path(mine) / LOCK_FILE).exists()
    release(mine)
    assert not Path(mine).exists()


def test_unmarked_foreign_and_own_directories_are_left_alone(tmp_path):
    unmarked = tmp_path / f"{PREFIX}old"
    unmarked.mkdir()
    mine = owned_tempdir(PREFIX, tmp_path)
    other = tmp_path / "other-prefix"
    other.mkdir()
    (other / LOCK_FILE).write_text("")                         # free lock, other prefix
    link = tmp_path / f"{PREFIX}link"
    link.symlink_to(other)
    assert remove_stale(PREFIX, tmp_path) == []
    assert unmarked.is_dir() and Path(mine).is_dir() and other.is_dir() and link.is_symlink()
    release(mine)
    assert os.listdir(other) == [LOCK_FILE]
