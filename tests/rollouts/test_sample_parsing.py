"""jsonl sample objects: parsing keeps ``json.loads`` semantics, columns equal the per-record definition.

The parser reads with orjson where its answer equals the standard library's and falls back to
``json.loads`` elsewhere; the columns are built for all fields at once (a float64 matrix for the usual
all-float feature file). These tests hold both to the plain definitions they replace.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollouts.checks.columns import count, kind_between, kind_of, numbers, scalar_fields, value_types
from rollouts.errors import ObjectTooLargeError, SampleFormatError
from rollouts.sources.samples import Samples, SampleStore


def store(max_rows: int = 1000) -> SampleStore:
    return SampleStore("t", "/nonexistent", max_bytes=1 << 20, max_rows=max_rows, timeout=1.0)


def parse(text: str | bytes) -> list[dict[str, Any]]:
    data = text.encode() if isinstance(text, str) else text
    return store()._parse_jsonl("t.jsonl", data)


def typed(value: Any) -> Any:
    """A structure where 1, 1.0 and True differ and NaN equals NaN (plain == would hide both)."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    return (type(value).__name__, value)


def stdlib(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


EDGE_LINES = [
    '{"a": 0.1, "b": -2.5e-7, "c": 1e300, "d": -0.0, "e": 5e-324, "f": 0.12345678901234567}',
    '{"a": 1, "b": true, "c": null, "d": "x", "e": [1, 2.5, {"f": null}], "g": {"h": "é"}}',
    '{"a": NaN, "b": Infinity, "c": -Infinity}',  # not strict JSON; json.loads accepts it
    '{"a": 1e400}',  # overflows to inf in json.loads
    '{"big": 18446744073709551616, "neg": -9223372036854775809, "huge": 123456789012345678901234567890}',
    '{"id": "1234567890123456789012345", "x": 0.00012345678901234567}',  # long digit runs, not integers
    '{"a": "\\ud800"}',  # a lone surrogate escape
    '{"a": 1, "a": 2}',  # duplicate key: the last wins
    '{"u64": 18446744073709551615, "i64": -9223372036854775808}',
    '{}',
]


@pytest.mark.parametrize("line", EDGE_LINES)
def test_each_line_parses_as_json_loads_does(line):
    text = '{"z": 1.5}\n' + line + "\n"
    assert typed(parse(text)) == typed(stdlib(text))


def test_large_integers_stay_exact_integers():
    (record,) = parse('{"id": 123456789012345678901234567890, "n": -9223372036854775809}\n')
    assert record == {"id": 123456789012345678901234567890, "n": -9223372036854775809}
    assert all(type(v) is int for v in record.values())


def test_blank_lines_are_skipped_and_rows_are_limited():
    assert parse(b'\n{"a": 1}\r\n  \n\t\n{"a": 2}\n') == [{"a": 1}, {"a": 2}]
    with pytest.raises(ObjectTooLargeError, match="more than 2 rows"):
        store(max_rows=2)._parse_jsonl("t.jsonl", b'{"a": 1}\n{"a": 2}\n{"a": 3}\n')


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": 1}\n{"a": 2}\n{"a": 3,}\n', r"'t.jsonl' record 3: not JSON \(Expecting"),
    ('{"a": 1}\n[1, 2]\n{"a": 3,}\n', r"'t.jsonl' record 2: expected a JSON object"),
    ('{"a": 1}\n{"a": 2}\n7\n', r"'t.jsonl' record 3: expected a JSON object"),
    ('{"a": NaN}\n"text"\n', r"'t.jsonl' record 2: expected a JSON object"),
    ('{"a": 1}\n{"a": 2},{"a": 3}\n', r"'t.jsonl' record 2: not JSON \(Extra data"),  # was read as 2 records
    ('{"a": [1\n2]}\n', r"'t.jsonl' record 1: not JSON"),  # was read as 1 record spanning 2 lines
    (b'{"a": 1}\n{"a": "\xff"}\n', r"'t.jsonl' record 2: not JSON \('utf-8' codec"),
    ('{"a": 1}\n{"a": 12345678901234567890123,}\n', r"'t.jsonl' record 2: not JSON"),
])
def test_bad_lines_are_refused_with_their_number(text, message):
    with pytest.raises(SampleFormatError, match=message):
        parse(text)


# ---- columns ---------------------------------------------------------------------------------


def reference_fields(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def reference_column(records: list[dict[str, Any]], name: str) -> list[Any]:
    return [r.get(name) for r in records if r.get(name) is not None]


def check_columns(records: list[dict[str, Any]]) -> None:
    samples = Samples(key="t.jsonl", records=records)
    assert samples.fields() == reference_fields(records)
    for name in [*reference_fields(records), "absent"]:
        expected = reference_column(records, name)
        assert typed(samples.column(name)) == typed(expected), name
        assert samples.size(name) == count(samples, name) == len(expected)
        assert samples.first(name) is (expected[0] if expected else None)
        assert samples.types(name) == value_types(samples, name) == set(map(type, expected))
        got = samples.numbers(name)
        if set(map(type, expected)) <= {int, float}:
            assert got is not None and got.dtype == np.float64
            np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.float64))
        else:
            assert got is None
            with pytest.raises(SampleFormatError, match="other than numbers"):
                numbers(samples, name)


def test_columns_of_a_uniform_float_file():
    rng = np.random.default_rng(3)
    records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in rng.normal(size=(50, 4))]
    check_columns(records)
    samples = Samples(key="t.jsonl", records=records)
    assert scalar_fields(samples) == ["f0", "f1", "f2", "f3"]
    np.testing.assert_array_equal(numbers(samples, "f2"), [r["f2"] for r in records])


@pytest.mark.parametrize("records", [
    [{"a": 1.0, "b": 2.0}, {"b": 3.0, "a": 4.0}],  # same fields in another order
    [{"a": 1.0}, {"a": 2.5}],  # a single field
    [{"a": 1.0, "b": 2.0}, {"a": 3.0, "c": 4.0}],  # same count, other fields
    [{"a": 1.0}, {"a": 2.0, "b": 5.0}, {"b": 6.0}],  # fields appear later
    [{"a": 1, "b": 2.0}, {"a": 3.5, "b": None}, {"a": None, "b": 4.0}],  # ints and nulls
    [{"a": True, "b": "x"}, {"a": False, "b": "y"}],  # booleans and strings
    [{"a": [1.0, 2.0], "b": {"c": 1}}, {"a": [3.0, 4.0], "b": None}],  # nested values
    [{"a": None}, {"a": None}],  # a field with no values
    [{}, {}],
    [{"a": 1.0}, {"a": True}],  # a boolean among floats is not a number
])
def test_columns_match_the_per_record_definition(records):
    check_columns(records)


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["x", "y"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), VALUES, max_size=4), min_size=1,
                max_size=12))
def test_columns_property(records):
    check_columns(records)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.permutations(["a", "b", "c"]), min_size=1, max_size=10), st.data())
def test_columns_property_same_fields_any_order(orders, data):
    floats = st.floats(allow_nan=False, allow_infinity=False)
    value = data.draw(st.sampled_from([floats, floats | st.integers(-5, 5) | st.none()]))
    check_columns([{k: data.draw(value) for k in order} for order in orders])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b"]), VALUES, min_size=1), min_size=1, max_size=8))
def test_parse_then_columns_equals_json_loads(records):
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    parsed = parse(text)
    assert typed(parsed) == typed(stdlib(text))
    check_columns(parsed)


def test_kinds_across_windows_are_the_kind_of_both_columns():
    floats = Samples(key="f.jsonl", records=[{"x": 1.0, "c": "a"}, {"x": 2.0, "c": "b"}])
    ints = Samples(key="i.jsonl", records=[{"x": 3, "c": True}, {"x": None, "c": "a"}])
    array = Samples(key="a.npy", array=np.array([[1.0], [2.0]]))
    assert kind_between(floats, ints, field="x") == kind_of([1.0, 2.0, 3], field="x") == "numeric"
    assert kind_between(floats, ints, field="c") == kind_of(["a", "b", True, "a"], field="c") == "categorical"
    assert kind_between(array, floats, field="col0") == "numeric"
    with pytest.raises(SampleFormatError, match="mixes"):
        kind_between(floats, Samples(key="s.jsonl", records=[{"x": "7"}]), field="x")
    np.testing.assert_array_equal(numbers(array, "col0"), [1.0, 2.0])
    assert numbers(array, "col0").flags.c_contiguous
