"""`<len>#<json>` framing: lengths in UTF-16 units, splits anywhere, lenient prefixes, limits."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from booking_rpc.wire.errors import FrameError
from booking_rpc.wire.json_codec import MAX_PREFIX_BYTES, JsonFrameDecoder, encode_frame, frame_json
from booking_rpc.wire.utf16 import js_parse_int, utf16_units

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def js_length(text: str) -> int:
    """JS `string.length`, straight from the definition."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def js_stringify(value: Any) -> str:
    """Reference JSON.stringify for plain values (no floats: orjson and JS format some differently)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)


def as_js(value: Any) -> Any:
    """The value a JS peer sees: a high + low surrogate held as two code points is one character."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [as_js(v) for v in value]
    if isinstance(value, dict):
        return {as_js(k): as_js(v) for k, v in value.items()}
    return value


def split_frame(frame: bytes) -> tuple[int, bytes]:
    prefix, _, body = frame.partition(b"#")
    return int(prefix), body


def feed_all(decoder: JsonFrameDecoder, chunks: list[bytes]) -> list[Any]:
    messages: list[Any] = []
    for chunk in chunks:
        messages += decoder.feed(chunk)
    return messages


# --- encoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "units"),
    [("abc", 3), ("é", 1), ("中", 1), ("😀", 2), ("é😀中", 4), ("a\U0010ffffb", 4), ("", 0)],
)
def test_utf16_units_counts_code_units(text: str, units: int) -> None:
    assert utf16_units(text.encode("utf-8")) == units == js_length(text)


def test_encode_counts_utf16_units_not_bytes() -> None:
    frame = encode_frame({"data": "é😀中"})
    length, body = split_frame(frame)
    assert body == '{"data":"é😀中"}'.encode()
    assert length == 4 + len('{"data":""}') == js_length(body.decode())
    assert len(body) == 9 + len('{"data":""}')


def test_lone_surrogate_is_escaped_and_counted_as_six_units() -> None:
    frame = encode_frame({"data": "a\ud83db"})
    assert frame == b'19#{"data":"a\\ud83db"}'
    length, body = split_frame(frame)
    assert length == len(body) == len('{"data":"a') + 6 + len('b"}')


def test_surrogate_pair_held_as_two_code_points_is_written_as_one_character() -> None:
    # JS sees "\ud83d\ude00" as 😀 and writes it raw.
    assert encode_frame(["\ud83d\ude00", "\udc00"]) == '15#["😀","\\udc00"]'.encode()


def test_lone_surrogate_fallback_keeps_other_types_like_orjson() -> None:
    class Fee(BaseModel):
        amount: Decimal
        note: str

    message = {
        "id": uuid.UUID(int=1),
        "at": dt.date(2024, 3, 31),
        "fee": Fee(amount=Decimal("12.50"), note="\udfff"),
        "nan": float("nan"),
        3: (1, 2),
    }
    _, body = split_frame(encode_frame(message))
    assert body == (
        b'{"id":"00000000-0000-0000-0000-000000000001","at":"2024-03-31",'
        b'"fee":{"amount":"12.50","note":"\\udfff"},"nan":null,"3":[1,2]}'
    )


def test_money_leaves_as_a_string() -> None:
    assert encode_frame({"response": Decimal("12.50")}) == b'20#{"response":"12.50"}'


def test_control_characters_and_line_separators_like_json_stringify() -> None:
    value = 'q"b\\s\n\x01\u2028\x7f'
    _, body = split_frame(encode_frame(value))
    assert body.decode() == js_stringify(value) == '"q\\"b\\\\s\\n\\u0001\u2028\x7f"'


def test_unserialisable_message_raises_type_error() -> None:
    with pytest.raises(TypeError):
        encode_frame({"x": object()})


def test_frame_json_prefixes_existing_text() -> None:
    assert frame_json('{"a":"猫"}'.encode()) == '9#{"a":"猫"}'.encode()


# --- decoding: the basics -----------------------------------------------------------------------------


def test_several_frames_in_one_chunk() -> None:
    stream = b"".join(encode_frame({"n": i, "s": "é😀" * i}) for i in range(5))
    assert JsonFrameDecoder().feed(stream) == [{"n": i, "s": "é😀" * i} for i in range(5)]


def test_partial_frames_are_buffered_and_reported() -> None:
    decoder = JsonFrameDecoder()
    assert not decoder.has_partial
    assert decoder.feed(b"") == []
    assert not decoder.has_partial
    assert decoder.feed(b" ") == []
    assert decoder.has_partial and decoder.buffered_bytes == 1
    assert decoder.feed(b"9#{") == []
    assert decoder.feed(b'"a":"b"}2') == [{"a": "b"}]
    assert decoder.has_partial and decoder.buffered_bytes == 1
    assert decoder.feed(b"#{}") == [{}]
    assert not decoder.has_partial and decoder.buffered_bytes == 0


@pytest.mark.parametrize("body", [b"null", b"false", b"0", b'""', b"  null "])
def test_falsy_body_becomes_empty_object(body: bytes) -> None:
    assert JsonFrameDecoder().feed(b"%d#%b" % (len(body), body)) == [{}]


@pytest.mark.parametrize("body", [b"[]", b"{}", b"true", b"1", b'"x"'])
def test_truthy_body_is_kept(body: bytes) -> None:
    assert JsonFrameDecoder().feed(b"%d#%b" % (len(body), body)) == [json.loads(body)]


def test_lone_surrogate_escape_is_accepted_like_json_parse() -> None:
    raw = b'{"data":"\\ud83d","k\\udc00":1}'
    [message] = JsonFrameDecoder().feed(b"%d#%b" % (len(raw), raw))
    assert message == {"data": "\ud83d", "k\udc00": 1}
    assert encode_frame(message) == b"%d#%b" % (len(raw), raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"3#{x}",
        b"3#NaN",
        b"8#Infinity",
        b"2#{}3#{x}",
        b"4#\xff\xfe{}",
        b"3#\xef\xbb\xbf{}",
        b"4#{}{}",
        b"1#[",
    ],
)
def test_invalid_json_is_refused(raw: bytes) -> None:
    with pytest.raises(FrameError) as info:
        JsonFrameDecoder().feed(raw)
    assert info.value.kind == "invalid_json"
    assert info.value.message.startswith("Could not parse JSON: ")


def test_messages_before_a_failure_ride_on_the_error() -> None:
    with pytest.raises(FrameError) as info:
        JsonFrameDecoder().feed(b'2#{}7#{"a":1}3#{x}')
    assert info.value.messages == [{}, {"a": 1}]


@pytest.mark.parametrize("tail", [b'7#{"a":', '9#{"é":1}'.encode(), b" 2#{}", b"2#{}3#{x}"])
def test_whole_frames_then_any_other_in_one_read(tail: bytes) -> None:
    # whole ASCII frames from an empty buffer are cut from the read itself; what follows them in the same read
    # (a partial frame, non-ASCII, a lenient prefix, a bad frame) must come out as if fed on its own after them
    head = b'2#{}7#{"a":1}'
    expected = JsonFrameDecoder()
    try:
        wanted: list[Any] | FrameError = [{}, {"a": 1}, *expected.feed(tail)]
    except FrameError as exc:
        wanted = exc
    decoder = JsonFrameDecoder()
    if isinstance(wanted, FrameError):
        with pytest.raises(FrameError) as info:
            decoder.feed(head + tail)
        assert (info.value.kind, info.value.messages) == (wanted.kind, [{}, {"a": 1}, *wanted.messages])
        with pytest.raises(FrameError):
            decoder.feed(b"2#{}")  # dead, as after any broken stream
    else:
        assert decoder.feed(head + tail) == wanted
        assert decoder.buffered_bytes == expected.buffered_bytes
        partial = tail == b'7#{"a":'
        assert decoder.feed(b"1}" if partial else b"") == ([{"a": 1}] if partial else [])


@pytest.mark.parametrize("raw", [b"0#", b"0#{}", b"-3#{}", b"-0#{}"])
def test_zero_or_negative_length_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(FrameError) as info:
        JsonFrameDecoder().feed(raw)
    assert info.value.kind == "invalid_json"


# --- decoding: length prefixes ------------------------------------------------------------------------


PING = b'{"pattern":"ping","data":{},"id":"abc"}'  # 39 units


@pytest.mark.parametrize(
    "prefix",
    [
        b"39",
        b" +39",
        b"39abc",
        b"39.9",
        b"0039",
        b"\t\n39",
        b"\xc2\xa039",
        b"\xe2\x80\xa839",
        b"39 ",
        b"+39e5",
    ],
)
def test_lenient_length_prefix_like_parse_int(prefix: bytes) -> None:
    decoder = JsonFrameDecoder()
    assert decoder.feed(prefix + b"#" + PING + b"2#{}") == [json.loads(PING), {}]


@pytest.mark.parametrize("prefix", [b"abc", b"", b" ", b"+", b"-", b"x39", b"\xd9\xa3\xd9\xa8", b"Infinity"])
def test_prefix_that_parse_int_calls_nan_is_corrupted(prefix: bytes) -> None:
    with pytest.raises(FrameError) as info:
        JsonFrameDecoder().feed(prefix + b"#{}")
    assert info.value.kind == "corrupted_length"
    raw = prefix.decode("utf-8", "replace")
    assert info.value.message == f'Corrupted length value "{raw}" supplied in a packet'


def test_prefix_without_hash_is_refused_once_it_outgrows_the_bound() -> None:
    decoder = JsonFrameDecoder()
    assert decoder.feed(b"1" * MAX_PREFIX_BYTES) == []
    with pytest.raises(FrameError) as info:
        decoder.feed(b"1")
    assert info.value.kind == "corrupted_length"


def test_prefix_longer_than_the_bound_is_refused_even_with_a_hash() -> None:
    with pytest.raises(FrameError) as info:
        JsonFrameDecoder().feed(b" " * MAX_PREFIX_BYTES + b"2#{}")
    assert info.value.kind == "corrupted_length"


def test_declared_length_over_limit_is_refused_before_the_body() -> None:
    decoder = JsonFrameDecoder(max_frame_units=1000)
    assert decoder.feed(b"1001") == []  # no '#' yet: nothing to judge
    with pytest.raises(FrameError) as info:
        decoder.feed(b"#")
    assert info.value.kind == "frame_too_large"
    assert info.value.message == "The packet length (1001) exceeds the maximum allowed length"
    assert decoder.buffered_bytes == 0


def test_length_at_the_limit_is_accepted() -> None:
    body = json.dumps("x" * 998).encode()
    assert JsonFrameDecoder(max_frame_units=1000).feed(frame_json(body)) == ["x" * 998]


@given(st.integers(min_value=1001, max_value=10**30))
@settings(max_examples=30, deadline=None)
def test_any_length_over_the_limit_is_refused_at_the_hash(length: int) -> None:
    with pytest.raises(FrameError) as info:
        JsonFrameDecoder(max_frame_units=1000).feed(b"%d#{" % length)
    assert info.value.kind == "frame_too_large"


# --- decoding: one prefix parser, both ways a frame is read ---------------------------------------------
# A read of bytes with nothing buffered cuts its whole ASCII frames itself (the fast path); everything else (a
# bytearray or memoryview, a read after a partial one) goes the buffered way. Both read a prefix with the same
# parser: the same bytes must come out the same whichever way, and however they are split.

PREFIX_LIMIT = 1000  # max_frame_units of these decoders: an oversize length is a short prefix


@dataclass(frozen=True)
class Outcome:
    messages: list[Any]  # every message out, those riding on the error included
    error: tuple[str, str] | None  # the FrameError's kind and text
    buffered: int  # bytes held for a frame still incomplete


def decode_outcome(chunks: Sequence[bytes | bytearray]) -> Outcome:
    decoder = JsonFrameDecoder(max_frame_units=PREFIX_LIMIT)
    messages: list[Any] = []
    for chunk in chunks:
        try:
            messages += decoder.feed(chunk)
        except FrameError as exc:
            messages += exc.messages
            with pytest.raises(FrameError) as again:  # dead, whichever way it broke
                decoder.feed(b"2#{}")
            assert again.value is exc and again.value.messages == []
            return Outcome(messages, (exc.kind, exc.message), decoder.buffered_bytes)
    return Outcome(messages, None, decoder.buffered_bytes)


def every_way(stream: bytes, cuts: Sequence[int]) -> dict[str, Outcome]:
    """`stream` decoded: in one read of bytes (the fast path where it can), in one bytearray read (only ever
    the buffered way), split at `cuts` as bytes (the fast path for each read that finds nothing buffered) and
    as bytearrays, and one byte a read (a prefix split across reads)."""
    bounds = sorted({cut for cut in cuts if 0 < cut < len(stream)})
    pieces = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    return {
        "whole read, fast path": decode_outcome([stream]),
        "whole read, buffered way": decode_outcome([bytearray(stream)]),
        "split, fast path first": decode_outcome(pieces),
        "split, buffered way": decode_outcome([bytearray(piece) for piece in pieces]),
        "byte by byte": decode_outcome([stream[i : i + 1] for i in range(len(stream))]),
    }


def assert_one_outcome(stream: bytes, cuts: Sequence[int]) -> Outcome:
    outcomes = every_way(stream, cuts)
    reference = outcomes["whole read, buffered way"]
    assert {way: got for way, got in outcomes.items() if got != reference} == {}, reference
    return reference


@pytest.mark.parametrize(
    ("prefix", "outcome"),
    [
        (b"2", [{}]),
        (b"002", [{}]),  # leading zeros: a plain decimal
        (b"0" * (MAX_PREFIX_BYTES - 1) + b"2", [{}]),  # the longest prefix taken
        (b"0" * MAX_PREFIX_BYTES + b"2", "corrupted_length"),  # one byte longer, with its '#'
        (b"+2", [{}]),  # sign, whitespace, trailing junk: as parseInt reads them
        (b" 2", [{}]),
        (b"\t\n2", [{}]),
        (b"\xc2\xa02", [{}]),
        (b"2 ", [{}]),
        (b"2.9", [{}]),
        (b"2e3", [{}]),
        (b"2_0", [{}]),  # Python's int() takes "2_0" as 20; parseInt stops at the underscore
        (b"-2", "invalid_json"),
        (b"-0", "invalid_json"),
        (b"0", "invalid_json"),
        (b"000", "invalid_json"),
        (b"", "corrupted_length"),
        (b"+", "corrupted_length"),
        (b" ", "corrupted_length"),
        (b"x2", "corrupted_length"),
        (b"\xd9\xa3", "corrupted_length"),  # an Arabic-Indic digit: not a digit to parseInt
        (b"%d" % (PREFIX_LIMIT + 1), "frame_too_large"),
        (b"0%d" % (PREFIX_LIMIT + 1), "frame_too_large"),
        (b"9" * MAX_PREFIX_BYTES, "frame_too_large"),
    ],
)
def test_a_prefix_reads_the_same_on_the_fast_path_and_the_buffered_way(prefix: bytes, outcome: Any) -> None:
    # frames after it: a prefix misread as longer than it is (2_0 as 20) would cut them otherwise
    got = assert_one_outcome(prefix + b"#{}" + b'7#{"a":1}' * 3, cuts=[1, len(prefix), len(prefix) + 1])
    if isinstance(outcome, list):
        assert (got.messages, got.error) == ([*outcome, {"a": 1}, {"a": 1}, {"a": 1}], None)
    else:
        assert got.error is not None and got.error[0] == outcome
        # the same error after whole frames in the same read: they ride on it, whichever way
        after = assert_one_outcome(b'2#{}7#{"a":1}' + prefix + b"#{}", cuts=[1, 4, 13, 14])
        assert (after.messages, after.error) == ([{}, {"a": 1}], got.error)


@pytest.mark.parametrize(
    "stream",
    [
        b"1" * MAX_PREFIX_BYTES,  # no '#' yet, at the bound: waits
        b"1" * (MAX_PREFIX_BYTES + 1),  # beyond it: refused without a '#'
        b" " * MAX_PREFIX_BYTES,
        b'2#{}7#{"a":',  # a whole frame, then a partial one
        b"2#{}" + b"9" * 4,  # a whole frame, then a partial prefix
        b"#",
        b"##",
    ],
)
def test_a_prefix_without_its_hash_reads_the_same_both_ways(stream: bytes) -> None:
    assert_one_outcome(stream, cuts=[1, 4, 5])


_prefix_bytes = st.lists(
    st.sampled_from([*(b"%d" % d for d in range(10)), b" ", b"\t", b"+", b"-", b".", b"e", b"_", b"x", b"#"]),
    max_size=MAX_PREFIX_BYTES + 3,
).map(b"".join)
_lengths = st.integers(min_value=0, max_value=PREFIX_LIMIT + 2).map(b"%d".__mod__)
_bodies = st.sampled_from([b"{}", b'{"a":1}', b"null", b"[1,2,3]", b"{x}", '"é"'.encode(), b'"\xf0\x9f\x98\x80"'])


@PROPERTY
@given(
    st.lists(st.tuples(st.one_of(_lengths, _prefix_bytes), _bodies), min_size=1, max_size=3),
    st.lists(st.integers(min_value=1, max_value=60), max_size=4),
)
def test_any_prefix_reads_the_same_both_ways_however_split(frames: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    # declared lengths that miss their body's too: a frame then ends early, overreads or waits, alike
    assert_one_outcome(b"".join(prefix + b"#" + body for prefix, body in frames), cuts)


# --- decoding: where frames end in UTF-16 units ---------------------------------------------------------


def test_frame_ending_on_a_multibyte_character() -> None:
    frames = encode_frame("é") + encode_frame("中") + encode_frame("😀") + encode_frame(["中😀"])
    assert JsonFrameDecoder().feed(frames) == ["é", "中", "😀", ["中😀"]]


def test_frame_cut_between_the_halves_of_a_surrogate_pair_is_invalid() -> None:
    # '"😀"' is 4 units; a length of 2 ends after the high surrogate, as JS substring would.
    with pytest.raises(FrameError) as info:
        JsonFrameDecoder().feed('2#"😀"'.encode())
    assert info.value.kind == "invalid_json"


def test_utf8_byte_count_prefix_overreads_into_the_next_frame() -> None:
    body = '"猫"'.encode()  # 3 units, 5 bytes
    decoder = JsonFrameDecoder()
    with pytest.raises(FrameError) as info:
        decoder.feed(b"%d#%b" % (len(body), body) + b"2#{}")
    assert info.value.kind == "invalid_json"


def test_waits_for_the_continuation_bytes_of_the_last_character() -> None:
    decoder = JsonFrameDecoder()
    raw = '3#"中"'.encode()  # 1 + 3 + 1 bytes of body
    assert decoder.feed(raw[:-2]) == []  # the lead byte of 中 and part of it
    assert decoder.feed(raw[-2:-1]) == []
    assert decoder.feed(raw[-1:]) == ["中"]


def test_many_small_reads_of_a_large_frame_are_linear() -> None:
    # 64k reads of 16 bytes: quadratic rescanning would take far longer than the test timeout.
    message = {"data": "é😀中x" * 50_000}
    frame = encode_frame(message)
    decoder = JsonFrameDecoder()
    messages: list[Any] = []
    for i in range(0, len(frame), 16):
        messages += decoder.feed(frame[i : i + 16])
    assert messages == [message]


# --- properties --------------------------------------------------------------------------------------

# Text with everything JS strings can hold: astral characters and lone surrogates included.
_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
        st.sampled_from('"\\#\n\x00\u2028é中0123456789'),
    ),
    max_size=12,
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_messages = st.dictionaries(_text, _json_values, min_size=1, max_size=4)


@PROPERTY
@given(_messages)
def test_encode_is_json_stringify_and_decode_inverts_it(message: dict[str, Any]) -> None:
    frame = encode_frame(message)
    length, body = split_frame(frame)
    text = body.decode("utf-8")
    assert text == js_stringify(message)
    assert length == js_length(text)
    assert JsonFrameDecoder().feed(frame) == [as_js(message)]


@PROPERTY
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip(value: float) -> None:
    assert JsonFrameDecoder().feed(encode_frame({"v": value})) == [{"v": value}]


@PROPERTY
@given(st.lists(_messages, min_size=1, max_size=4), st.data())
def test_any_chunking_yields_the_same_messages(messages: list[dict[str, Any]], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=len(stream) - 1), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = JsonFrameDecoder()
    assert feed_all(decoder, chunks) == as_js(messages)
    assert not decoder.has_partial


@settings(max_examples=15, deadline=None)
@given(st.lists(_messages, min_size=1, max_size=3))
def test_split_at_every_byte_yields_the_same_messages(messages: list[dict[str, Any]]) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = JsonFrameDecoder()
    assert feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == as_js(messages)


@PROPERTY
@given(st.text(max_size=8))
def test_js_parse_int_matches_a_reference(text: str) -> None:
    # Reference: strip JS whitespace, optional sign, then the longest run of ASCII digits.
    js_space = "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(
        chr(c) for c in range(0x2000, 0x200B)
    )
    rest = text.lstrip(js_space)
    sign = -1 if rest[:1] == "-" else 1
    if rest[:1] in "+-" and rest:
        rest = rest[1:]
    digits = ""
    for char in rest:
        if char not in "0123456789":
            break
        digits += char
    assert js_parse_int(text) == (sign * int(digits) if digits else None)
