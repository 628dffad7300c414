"""Shared pieces of the property-based fuzz tests (``tests/test_fuzz_*.py``).

``FUZZ_EXAMPLES`` (environment variable ``NES2NET_FUZZ_EXAMPLES``, default 200) sets the number
of examples per test: the default keeps CI fast, ``make fuzz`` runs 100 000. ``FUZZ`` is the
hypothesis settings profile every fuzz test uses (derandomized, so a run is reproducible; no
deadline, because the machine may be busy). The strategies build valid messages first and then
mutate them (drop, retype or add fields, tweak strings, corrupt bytes), which reaches far
deeper into a parser than random bytes alone.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("NES2NET_FUZZ_EXAMPLES", "200"))
#: one parser call taking longer than this counts as a hang (catastrophic backtracking ...)
HANG_S = 5.0

settings.register_profile(
    "nes2net-fuzz", max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None,
    database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example])
#: decorator applied to every fuzz test (the profile is not loaded globally: other tests keep
#: their own settings)
FUZZ = settings.get_profile("nes2net-fuzz")

#: strings that trip parsers: empty, whitespace, a trailing newline, non-ASCII digits,
#: numbers beyond int() limits, NUL, lone brackets ...
NASTY_TEXT = ["", " ", "\n", "\t\r\n", "0", "-1", "1e400", "NaN", "Infinity", "²", "١٢",
              "16k", "²k", "8000\n", "1" * 30, "9" * 5000, "\x00", "[", "{", "\"", "\\",
              "é" * 40, "\U0001f600", "x" * 300, "a=b;c", ":", "PT1S\n", "true"]
NASTY_NUMBERS = [0, -1, 1, 2, 8000, 16000, 2 ** 31, 2 ** 53, 2 ** 63, 2 ** 64, -(2 ** 63),
                 10 ** 30, 0.5, -0.0, 1e308, math.inf, -math.inf, math.nan]

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=12) | st.sampled_from(NASTY_TEXT)
                | st.sampled_from(NASTY_NUMBERS))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=12)


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key/index) pair of a JSON document, nested ones included."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _slots(value, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((node, i))
            _slots(value, out)
    return out


def _tweak(value: Any, draw: Callable[[Any], Any]) -> Any:
    """A near miss of ``value``: same type with a twist, or a nasty constant."""
    if isinstance(value, str):
        return draw(st.sampled_from([value + "\n", value.upper(), value[:-1], value * 3,
                                     " " + value, value + "\x00", value + "é"])
                    | st.sampled_from(NASTY_TEXT))
    if isinstance(value, bool) or value is None:
        return draw(json_scalars)
    if isinstance(value, int | float):
        return draw(st.sampled_from([value + 1, -value, str(value), float(value), True])
                    | st.sampled_from(NASTY_NUMBERS))
    return draw(json_values)


@st.composite
def mutated(draw: Callable[[Any], Any], base: Any, max_mutations: int = 3) -> Any:
    """``base`` (a JSON document) after 0..``max_mutations`` random edits."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, max_mutations))):
        slots = _slots(doc, [])
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["drop", "retype", "tweak", "add", "nest"]))
        if op == "drop":
            if isinstance(container, dict):
                del container[key]
            else:
                container.pop(key)
        elif op == "retype":
            container[key] = draw(json_values)
        elif op == "tweak":
            container[key] = _tweak(container[key], draw)
        elif op == "add" and isinstance(container, dict):
            container[draw(st.text(max_size=10))] = draw(json_values)
        elif op == "nest":
            container[key] = draw(st.sampled_from([[container[key]],
                                                   {"value": container[key]}]))
    return doc


def dumps(doc: Any) -> str:
    """JSON text as a lenient peer would send it (NaN/Infinity allowed, non-ASCII as is)."""
    return json.dumps(doc, ensure_ascii=False, allow_nan=True)


@st.composite
def corrupted(draw: Callable[[Any], Any], data: bytes, max_edits: int = 4) -> bytes:
    """``data`` with a few byte-level edits: flips, deletions, insertions, truncation."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del buf[pos:pos + draw(st.integers(1, 8))]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8)
                                | st.sampled_from([b"\n", b"\xff", b"\x00", b"\"", b"{", b"["]))
        elif op == "truncate":
            del buf[pos:]
        elif op == "duplicate":
            buf[pos:pos] = buf[max(0, pos - 8):pos]
    return bytes(buf)


def deep_json(depth: int, opener: str = "[") -> str:
    """JSON nested ``depth`` levels deep (parsers must refuse it cleanly, not overflow)."""
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a":' * depth + "1" + closer * depth
    return opener * depth + closer * depth


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a parser and fail the example if it takes longer than :data:`HANG_S`."""
    t0 = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - t0
        assert elapsed < HANG_S, f"{getattr(fn, '__name__', fn)} took {elapsed:.1f} s"
