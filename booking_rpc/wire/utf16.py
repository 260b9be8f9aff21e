"""JavaScript string lengths measured over UTF-8 bytes.

A NestJS frame's length prefix is the JS `string.length` of its JSON text: UTF-16 code units. Over UTF-8,
every character starts with exactly one non-continuation byte and is one unit, except characters outside
the BMP (4-byte sequences), which are two. So

    units = (bytes that are not 0x80..0xBF) + (bytes that are 0xF0..0xF7)

The sum is additive over any split of the bytes (a continuation byte counts zero wherever it lands), which
lets the decoder count a frame block by block. Both counts are C-level `bytes.translate` calls, no Python
loop per character.
"""

from __future__ import annotations

import re

# Deleting these leaves one byte per character.
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))
# Deleting these leaves one byte per character outside the BMP (the lead of a 4-byte sequence).
_NOT_FOUR_BYTE_LEADS = bytes(b for b in range(256) if not 0xF0 <= b <= 0xF7)


def utf16_units(data: bytes | bytearray) -> int:
    """JS `.length` of the UTF-8 text `data` (ASCII costs one C-level scan)."""
    if data.isascii():
        return len(data)
    return len(data.translate(None, _CONTINUATION_BYTES)) + len(data.translate(None, _NOT_FOUR_BYTE_LEADS))


def sequence_length(lead: int) -> int:
    """Bytes in the UTF-8 sequence that starts with `lead` (1 for bytes that cannot start one)."""
    if lead < 0xC0:
        return 1
    if lead < 0xE0:
        return 2
    if lead < 0xF0:
        return 3
    if lead < 0xF8:
        return 4
    return 1


# JS parseInt(s, 10): skip leading StrWhiteSpaceChar (Unicode Zs, TAB, VT, FF, ZWNBSP and line
# terminators), an optional sign, then ASCII digits; anything after the digits is ignored.
_JS_PARSE_INT = re.compile("[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*([+-]?[0-9]+)")


def js_parse_int(text: str) -> int | None:
    """`parseInt(text, 10)`; None where JS gives NaN."""
    match = _JS_PARSE_INT.match(text)
    if match is None:
        return None
    return int(match.group(1))


__all__ = ["js_parse_int", "sequence_length", "utf16_units"]
