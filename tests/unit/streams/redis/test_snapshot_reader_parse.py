"""The SnapshotReader's reply parsing (streams.redis.read._FieldNames): field names decoded
once per scrape, the result equal to the plain per-field parse, order included."""

from __future__ import annotations

import pytest

from kpi_core.state import present
from streams.redis.keys import floats as _floats
from streams.redis.read import _FieldNames


def test_hashes_and_flat_lists_parse_like_the_plain_parse() -> None:
    names = _FieldNames()
    first = {b"offered": b"3", b"max_wait": b"12.5", "asa_sum": b"0.1", "\u00fcn\u00ef".encode(): b"-0"}
    second = {b"max_wait": b"1e308", b"offered": b"7", b"new": b"5e-324"}  # a name seen first here
    for raw in (first, second, {}, first):
        got = names.floats(raw)
        assert got == _floats(raw) and list(got) == list(_floats(raw))
    flat = [b"wa0", b"2", b"offered", b"0.30000000000000004", b"z_new", b"-1"]
    got = names.flat(flat)
    assert list(got.items()) == [("wa0", 2.0), ("offered", 0.30000000000000004), ("z_new", -1.0)]
    assert names.flat([]) == {}
    # Decoded once: the same str object for a name in every reply.
    a, b = names.floats({b"offered": b"1"}), names.flat([b"offered", b"2"])
    assert next(iter(a)) is next(iter(b))


def test_a_malformed_reply_is_an_error_not_a_silent_drop() -> None:
    names = _FieldNames()
    with pytest.raises(ValueError):
        names.flat([b"offered", b"1", b"dangling"])
    with pytest.raises(ValueError):
        names.floats({b"offered": b"not a number"})


#: Replies as Redis gives them: legacy and exact fields, scaled sums with and without a
#: breakdown mark, a legacy field that a scaled one adds to, multisets (count 0 left out,
#: a legacy max_ beside them), edge numbers.
PRESENT_CASES = [
    {},
    {b"offered": b"3", b"asa_sum_ms": b"1500", b"asa_sum": b"0.25", b"wait_ms@c:chat": b"7"},
    {b"mx:wait:3000": b"1", b"mx:wait:12000": b"2", b"mx:wait:99000": b"0", b"max_wait": b"5.5"},
    {b"max_wait": b"50", b"mx:wait:3000": b"1", b"mx:talk:0": b"1", b"mx:talk:-5": b"3"},
    {b"x_ms_total": b"4", b"a@c:b_ms": b"9", b"talk_ms@p:1": b"1e300", b"n": b"5e-324", b"z": b"-0"},
    {"\u00fcn_ms@c:\u00e9".encode(): b"2.5", b"offered": b"9007199254740993", b"mx:w:1": b"-1"},
    {b"mx:odd:notanumber": b"0", b"plain": b"1"},  # a malformed multiset field at 0: ignored
]


@pytest.mark.parametrize("raw", PRESENT_CASES)
def test_presented_replies_equal_present_of_the_plain_parse(raw: dict[bytes, bytes]) -> None:
    """One pass with each name classified once, against kpi_core.state.present of the parse
    the store's own reads use: same keys, same order, same bits; twice (names known)."""
    names = _FieldNames()
    flat = [part for pair in raw.items() for part in pair]
    for _ in range(2):
        want = present(_floats(raw))
        for got in (names.presented(raw), names.presented_flat(flat)):
            assert list(got) == list(want)
            assert [repr(v) for v in got.values()] == [repr(v) for v in want.values()]


def test_presented_errors_like_present() -> None:
    names = _FieldNames()
    bad = {b"mx:odd:notanumber": b"2"}
    with pytest.raises(ValueError):
        present(_floats(bad))
    with pytest.raises(ValueError):
        names.presented(bad)
    with pytest.raises(ValueError):
        names.presented_flat([b"offered", b"1", b"dangling"])
    with pytest.raises(ValueError):
        names.presented({b"offered": b"not a number"})
