"""The fast canonical encoder is RFC 8785 on the ledger's domain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import MAX_SAFE_INTEGER, NotCanonicalizable, canonical, canonical_reference

keys = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,20}", fullmatch=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


@given(values)
def test_fast_path_equals_reference(value: object) -> None:
    assert canonical(value) == canonical_reference(value)


def test_rfc8785_string_escapes_and_order() -> None:
    value = {"b": "\u20ac$\u000f\nA'B\"\\\\\"/", "a": [1, True, None], "aa": {}}
    expected = b'{"a":[1,true,null],"aa":{},"b":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonical_reference(value) == expected
    assert canonical(value) == expected


def test_keys_sort_by_utf16_code_units() -> None:
    # U+1F600 (surrogates D83D..) sorts before U+FB33 in UTF-16, after it in code points.
    value = {"\ufb33": 1, "\U0001f600": 2}
    assert canonical_reference(value).index("\U0001f600".encode()) < canonical_reference(
        value
    ).index("\ufb33".encode())


@pytest.mark.parametrize(("bad", "why"), [
    (1.5, "floating-point numbers are not allowed in the ledger"),
    ({"x": [0.1]}, "floating-point numbers are not allowed in the ledger"),
    (2**53, "integer outside the interoperable range"),
    (-(2**53), "integer outside the interoperable range"),
    ({1: "a"}, "object keys must be strings"),
    ({"x": {1, 2}}, "cannot canonicalize a set"),
])
def test_reference_refuses_what_the_ledger_never_hashes(bad: object, why: str) -> None:
    with pytest.raises(NotCanonicalizable) as refused:
        canonical_reference(bad)
    assert str(refused.value) == why


def test_the_largest_interoperable_integers_are_canonical() -> None:
    """RFC 8785 numbers are IEEE doubles: +/-(2**53 - 1) is the last exact integer, in."""
    for n in (MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER):
        assert canonical_reference([n]) == canonical([n]) == f"[{n}]".encode()


def test_only_control_characters_are_escaped_as_code_points() -> None:
    """U+001F is the last control character (escaped as \\u001f); the space after it is
    written as itself, like every other character without a short escape."""
    value = "\x00\x1f \x7f\u2028"
    expected = '"\\u0000\\u001f \x7f\u2028"'.encode()
    assert canonical_reference(value) == canonical(value) == expected
