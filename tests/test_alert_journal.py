"""The alert journal keeps unacknowledged alerts across a killed process and replays them."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from nes2net_stream.service import alert_journal
from nes2net_stream.service.alert_journal import AlertJournal, JournalError


def _doc(i: int) -> str:
    return json.dumps({"type": "state", "event_id": f"ev-{i}", "call_id": "c", "n": i})


def _abandon(j: AlertJournal) -> None:
    """What a killed process leaves: descriptors closed by the kernel, no cleanup."""
    os.close(j._fd)
    os.close(j._lock_fd)


def _segments(path):
    return sorted(p.name for p in path.glob("*.jsonl"))


def test_unacknowledged_alerts_come_back_in_order_and_numbers_go_on(tmp_path):
    j = AlertJournal(tmp_path)
    assert j.open() == []
    seqs = [j.append(_doc(i)) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    j.ack(2)
    assert j.pending == 3
    assert j.close() is False                  # something pending: the segment stays
    assert _segments(tmp_path)

    j2 = AlertJournal(tmp_path)
    entries = j2.open()
    assert [(e.seq, json.loads(e.doc)["n"]) for e in entries] == [(3, 2), (4, 3), (5, 4)]
    assert j2.append(_doc(5)) == 6
    j2.ack(6)
    assert j2.close() is True                  # all delivered: nothing left behind
    assert _segments(tmp_path) == []


def test_a_process_killed_mid_stream_leaves_its_alerts_to_the_next(tmp_path):
    # a real process, killed by SIGKILL right after its writes: the kernel keeps them
    code = textwrap.dedent(f"""
        import os, signal
        from nes2net_stream.service.alert_journal import AlertJournal
        j = AlertJournal({str(tmp_path)!r}, fsync_interval_s=60)
        j.open()
        for i in range(50):
            j.append('{{"n": %d}}' % i)
        j.ack(20)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    entries = AlertJournal(tmp_path).open()
    assert [json.loads(e.doc)["n"] for e in entries] == list(range(20, 50))


def test_segments_rotate_and_delivered_ones_are_deleted(tmp_path):
    j = AlertJournal(tmp_path, segment_bytes=2048)
    j.open()
    big = "x" * 400
    for i in range(60):
        seq = j.append(json.dumps({"n": i, "pad": big}))
        if i % 5 == 4:
            j.ack(seq - 2)                     # delivery trails the writes a little
    assert len(_segments(tmp_path)) <= 3       # bounded by what is pending, not by history
    _abandon(j)
    entries = AlertJournal(tmp_path).open()
    assert [json.loads(e.doc)["n"] for e in entries] == [58, 59]


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    j = AlertJournal(tmp_path)
    j.open()
    for i in range(3):
        j.append(_doc(i))
    os.write(j._fd, b'{"s":4,"e":"{\\"type\\": \\"st')  # the write a crash interrupted
    _abandon(j)
    entries = AlertJournal(tmp_path).open()
    assert [e.seq for e in entries] == [1, 2, 3]


def test_a_segment_of_acknowledgements_only_does_not_collide(tmp_path):
    j = AlertJournal(tmp_path)
    j.open()
    for i in range(3):
        j.append(_doc(i))
    _abandon(j)
    j2 = AlertJournal(tmp_path)
    assert len(j2.open()) == 3
    j2.ack(3)                                  # delivered, then killed: an ack-only segment
    _abandon(j2)
    j3 = AlertJournal(tmp_path)
    assert j3.open() == []
    assert j3.append(_doc(9)) == 4             # same first number as the ack-only segment
    _abandon(j3)
    assert [json.loads(e.doc)["n"] for e in AlertJournal(tmp_path).open()] == [9]


def test_one_directory_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(alert_journal, "LOCK_WAIT_S", 0.2)
    j = AlertJournal(tmp_path)
    j.open()
    with pytest.raises(JournalError, match="held by another process"):
        AlertJournal(tmp_path).open()
    j.close()
    AlertJournal(tmp_path).open()              # free again once the owner closed it


def test_an_unusable_directory_is_a_clear_error(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(JournalError, match="alert journal"):
        AlertJournal(not_a_dir / "j").open()


def test_take_over_moves_another_journals_pending_alerts(tmp_path):
    other = AlertJournal(tmp_path / "w1")
    other.open()
    for i in range(4):
        other.append(_doc(i))
    other.ack(1)
    _abandon(other)
    mine = AlertJournal(tmp_path / "w0")
    mine.open()
    mine.append(_doc(100))
    moved = mine.take_over(tmp_path / "w1")
    assert [(e.seq, json.loads(e.doc)["n"]) for e in moved] == [(2, 1), (3, 2), (4, 3)]
    assert _segments(tmp_path / "w1") == []
    _abandon(mine)
    assert [json.loads(e.doc)["n"] for e in AlertJournal(tmp_path / "w0").open()] == \
        [100, 1, 2, 3]


def test_fsync_after_every_write_when_the_interval_is_zero(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    j = AlertJournal(tmp_path, fsync_interval_s=0)
    j.open()
    j.append(_doc(0))
    j.ack(1)
    assert len(synced) == 2 and not j.dirty
    j2 = AlertJournal(tmp_path / "lazy", fsync_interval_s=1.0)
    j2.open()
    j2.append(_doc(0))
    assert len(synced) == 2 and j2.dirty      # left to the periodic sync
    j2.sync()
    assert len(synced) == 3 and not j2.dirty


def _state(call: str, channel: str, state: str | None) -> tuple[str, str]:
    key = json.dumps([call, channel])
    return key, json.dumps({"type": "state", "call_id": call, "channel": channel,
                            "state": state})


def test_channels_left_open_by_a_dead_process_are_its_lost_calls(tmp_path):
    j = AlertJournal(tmp_path)
    j.open()
    ka, a1 = _state("A", "caller", "suspicious")
    kb, b1 = _state("B", "caller", "bona_fide")
    _, b2 = _state("B", "caller", "spoof")
    j.append(a1, opens=ka)
    j.append(b1, opens=kb)
    j.append(b2, opens=kb)                         # the latest state is what counts
    j.append(json.dumps({"type": "summary", "call_id": "A"}), closes=ka)
    j.ack(j.last_seq)
    assert j.open_calls == 1
    _abandon(j)                                    # killed with call B in progress

    j2 = AlertJournal(tmp_path)
    assert j2.open() == []                         # every alert was delivered ...
    assert j2.lost_calls == {kb: b2}               # ... but B never got its summary
    assert j2.close() is False                     # so the journal is kept
    j3 = AlertJournal(tmp_path)
    j3.open()
    assert j3.lost_calls == {kb: b2}
    j3.append(json.dumps({"type": "summary", "call_id": "B"}), closes=kb)
    j3.ack(j3.last_seq)
    assert j3.lost_calls == {} and j3.close() is True
    assert _segments(tmp_path) == []


def test_a_channel_tracked_at_its_start_is_lost_even_without_a_state(tmp_path):
    j = AlertJournal(tmp_path)
    j.open()
    ka, a0 = _state("A", "caller", None)
    kb, b0 = _state("B", "caller", None)
    j.track(ka, a0)
    j.track(kb, b0)
    _, b1 = _state("B", "caller", "bona_fide")
    j.append(b1, opens=kb)                          # B's first state replaces its start
    j.ack(j.last_seq)
    assert j.open_calls == 2 and j.pending == 0
    _abandon(j)

    j2 = AlertJournal(tmp_path)
    assert j2.open() == []
    assert j2.lost_calls == {ka: a0, kb: b1}


def test_open_channels_survive_the_deletion_of_delivered_segments(tmp_path):
    j = AlertJournal(tmp_path, segment_bytes=1024)
    j.open()
    key, doc = _state("long-call", "caller", "spoof")
    j.append(doc, opens=key)
    for i in range(200):                           # many other calls come and go
        k, d = _state(f"short-{i}", "caller", "bona_fide")
        j.append(d, opens=k)
        j.append(json.dumps({"type": "summary", "call_id": f"short-{i}"}), closes=k)
        j.ack(j.last_seq)
    assert len(_segments(tmp_path)) <= 2           # the first segment is long gone
    _abandon(j)
    j2 = AlertJournal(tmp_path)
    assert j2.open() == []
    assert j2.lost_calls == {key: doc}


def test_take_over_also_moves_open_channels(tmp_path):
    other = AlertJournal(tmp_path / "w1")
    other.open()
    key, doc = _state("C", "agent", "suspicious")
    other.append(doc, opens=key)
    other.ack(1)
    _abandon(other)
    mine = AlertJournal(tmp_path / "w0")
    mine.open()
    assert mine.take_over(tmp_path / "w1") == []
    assert mine.lost_calls == {key: doc}
    _abandon(mine)                                 # killed before it summarised C
    again = AlertJournal(tmp_path / "w0")
    again.open()
    assert again.lost_calls == {key: doc}


def test_journal_command_shows_pending_alerts_and_open_calls(tmp_path, capsys):
    from nes2net_stream.cli import main

    j = AlertJournal(tmp_path / "w1")
    j.open()
    key, doc = _state("live", "caller", "spoof")
    j.append(json.dumps({"type": "state", "ts": "2026-11-27T07:00:00.000Z"}))
    j.append(doc, opens=key)
    idle = AlertJournal(tmp_path / "w0")
    idle.open()
    idle.close()
    assert main(["journal", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)["journals"]
    assert [s["directory"] for s in shown] == [str(tmp_path / "w0"), str(tmp_path / "w1")]
    w1 = shown[1]
    assert w1["held_by_a_process"] is True and w1["pending_alerts"] == 2
    assert w1["oldest_pending_ts"] == "2026-11-27T07:00:00.000Z"
    assert w1["open_calls"] == [["live", "caller"]]
    assert shown[0]["held_by_a_process"] is False and shown[0]["pending_alerts"] == 0
    _abandon(j)
    assert main(["journal", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["journals"][1]["held_by_a_process"] is False
    empty = tmp_path / "empty.toml"
    empty.write_text("[redis]\nalert_journal_dir = \"\"\n")
    assert main(["journal", "--config", str(empty)]) == 2  # nothing configured, nothing given
    assert "redis.alert_journal_dir is not set" in capsys.readouterr().err
