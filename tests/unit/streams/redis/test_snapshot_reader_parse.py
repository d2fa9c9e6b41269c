"""The SnapshotReader's reply parsing (streams.redis.read._FieldNames): field names decoded
once per scrape, the result equal to the plain per-field parse, order included."""

from __future__ import annotations

import pytest

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
