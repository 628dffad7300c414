"""Score files in both official layouts, error cases, and joining with a key."""

from __future__ import annotations

import numpy as np
import pytest

from nes2net_stream.data.protocols import Trial, read_protocol, write_protocol
from nes2net_stream.errors import ConfigError, DataError
from nes2net_stream.evaluation.scorefiles import (
    detect_layout,
    join_with_key,
    read_scores,
    write_scores,
)

SCORES = {
    "LA_E_0000001": 3.25,
    "LA_E_0000002": -7.125,
    "LA_E_0000003": 0.1 + 0.2,  # needs 17 significant digits
    "LA_E_0000004": 1e-300,
    "LA_E_0000005": -2.5e12,
}


@pytest.mark.parametrize("layout", ["2021", "asvspoof5"])
def test_round_trip_is_exact(tmp_path, layout):
    path = write_scores(tmp_path / "sub" / "scores.txt", SCORES, layout=layout)
    assert path.is_file()
    assert detect_layout(path) == layout
    again = read_scores(path)
    assert again == SCORES  # exact floats, same order
    assert list(again) == list(SCORES)


def test_written_layouts_look_official(tmp_path):
    a = write_scores(tmp_path / "a.txt", {"u1": 1.5, "u2": -2.0}, layout="2021")
    b = write_scores(tmp_path / "b.tsv", {"E_000001": 0.01}, layout="asvspoof5")
    assert a.read_text() == "u1 1.5\nu2 -2.0\n"
    assert b.read_text() == "filename\tcm-score\nE_000001\t0.01\n"


def test_numpy_scores_are_written_as_plain_numbers(tmp_path):
    p = write_scores(tmp_path / "s.txt", {"u1": np.float32(0.5), "u2": np.float64(-1.25)})
    assert p.read_text() == "u1 0.5\nu2 -1.25\n"


def test_reads_whitespace_variants_comments_and_blank_lines(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("# scores\n\nu1\t1.0\n  u2   -2e-3  \r\nu3 +4\n")
    assert read_scores(p) == {"u1": 1.0, "u2": -0.002, "u3": 4.0}


def test_reads_the_2019_four_column_cm_layout(tmp_path):
    p = tmp_path / "cm.txt"
    p.write_text("LA_E_1 - bonafide 2.5\nLA_E_2 A07 spoof -1.0\n")
    assert detect_layout(p) == "2021"
    assert read_scores(p) == {"LA_E_1": 2.5, "LA_E_2": -1.0}


def test_reads_asvspoof5_files_with_extra_columns(tmp_path):
    p = tmp_path / "sasv.tsv"
    p.write_text("spk\tfilename\tcm-score\tasv-score\tsasv-score\n"
                 "E_2040\tE_000001\t0.5\t-\t0.9\n"
                 "E_2040\tE_000002\t-0.5\t-\t0.1\n")
    assert detect_layout(p) == "asvspoof5"
    assert read_scores(p) == {"E_000001": 0.5, "E_000002": -0.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has no scores"),
        ("\n# only a comment\n", "has no scores"),
        ("filename\tcm-score\n", "header but no scores"),
        ("u1 1.0\nu2 abc\n", r"s\.txt:2: score 'abc' is not a number"),
        ("u1 1.0\n\nu2 nan\n", r"s\.txt:3: score 'nan' is not finite"),
        ("u1 inf\n", r"s\.txt:1: score 'inf' is not finite"),
        ("u1 1.0\nu2 2.0\nu1 3.0\n", r"s\.txt:3: duplicate id 'u1' \(first on line 1\)"),
        ("u1 1.0\nu2\n", r"s\.txt:2: expected 2 columns, found 1"),
        ("u1 1.0 2.0\n", r"s\.txt:1: expected 2 columns, found 3"),
        ("filename\tscore\nu1\t1.0\n", r"s\.txt:1: header has no 'cm-score' column"),
        ("filename\tcm-score\nu1\t1.0\textra\n", r"s\.txt:2: expected 2 columns, found 3"),
        ("filename\tcm-score\nu1\t-\n", r"s\.txt:2: score '-' is not a number"),
    ],
)
def test_malformed_files_raise_with_file_and_line(tmp_path, text, message):
    p = tmp_path / "s.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        read_scores(p)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="score file not found"):
        read_scores(tmp_path / "nope.txt")
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        read_scores(p)


@pytest.mark.parametrize(
    ("scores", "layout", "error", "message"),
    [
        ({"u1": 1.0}, "2019", ConfigError, "unknown score file layout '2019'"),
        ({}, "2021", DataError, "no scores to write"),
        ({"u 1": 1.0}, "2021", DataError, "white space"),
        ({"": 1.0}, "asvspoof5", DataError, "empty"),
        ({"u1": float("nan")}, "2021", DataError, "score of 'u1' is not finite"),
        ({"u1": float("-inf")}, "asvspoof5", DataError, "not finite"),
    ],
)
def test_write_errors(tmp_path, scores, layout, error, message):
    with pytest.raises(error, match=message):
        write_scores(tmp_path / "s.txt", scores, layout=layout)
    assert not (tmp_path / "s.txt").exists()


def _key(tmp_path):
    trials = [
        Trial("LA_0001", "LA_E_1", "-", "bonafide"),
        Trial("LA_0001", "LA_E_2", "A07", "spoof"),
        Trial("LA_0002", "LA_E_3", "-", "bonafide"),
        Trial("LA_0002", "LA_E_4", "A08", "spoof"),
        Trial("LA_0003", "LA_E_5", "A07", "spoof"),
    ]
    return read_protocol(write_protocol(tmp_path / "key.txt", trials))


def test_join_with_key_splits_by_class_and_counts_extras(tmp_path):
    trials = _key(tmp_path)
    scores = {"LA_E_5": -3.0, "LA_E_1": 2.0, "LA_E_2": -1.0, "LA_E_3": 1.5, "LA_E_4": 0.5,
              "LA_E_99": 9.0, "LA_E_98": 8.0}
    bona, spoof, n_extra = join_with_key(scores, trials)
    np.testing.assert_array_equal(bona, [2.0, 1.5])  # key order
    np.testing.assert_array_equal(spoof, [-1.0, 0.5, -3.0])
    assert n_extra == 2
    assert bona.dtype == np.float64


def test_join_with_an_asvspoof5_key_file(tmp_path):
    key = tmp_path / "key.tsv"
    key.write_text("filename\tcm-label\nE_1\tbonafide\nE_2\tspoof\nE_3\tspoof\n")
    scores = read_scores(write_scores(tmp_path / "s.tsv", {"E_1": 1.0, "E_2": -1.0, "E_3": 0.0},
                                      layout="asvspoof5"))
    joined = join_with_key(scores, read_protocol(key))
    np.testing.assert_array_equal(joined.bona, [1.0])
    np.testing.assert_array_equal(joined.spoof, [-1.0, 0.0])
    assert joined.n_extra == 0


def test_join_with_key_lists_missing_ids(tmp_path):
    trials = _key(tmp_path)
    with pytest.raises(DataError, match=r"2 of 5 key trials have no score: LA_E_2, LA_E_4$"):
        join_with_key({"LA_E_1": 1.0, "LA_E_3": 1.0, "LA_E_5": 1.0}, trials)
    many = [Trial("s", f"u{i}", "A01", "spoof") for i in range(12)]
    with pytest.raises(DataError, match=r"12 of 12 .*u0, u1, u2, u3, u4, \.\.\. \(7 more\)"):
        join_with_key({}, many)
