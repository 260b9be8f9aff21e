"""Reference codes: unambiguous alphabet, format, randomness."""

from __future__ import annotations

from booking_rpc.domain.reference_codes import ALPHABET, is_valid, new_reference_code, normalize


def test_alphabet_has_no_ambiguous_symbols() -> None:
    assert not set("ILOU01") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET) == 30


def test_format_and_uniqueness() -> None:
    codes = {new_reference_code() for _ in range(5000)}
    assert len(codes) == 5000
    for c in codes:
        assert is_valid(c) and len(c) <= 20 and c == normalize(c.lower())
    assert not is_valid("BK-0000-1111") and not is_valid("XX-2345-6789") and not is_valid("BK-23456789")
