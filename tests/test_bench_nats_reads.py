"""bench.nats_reads: the split of a read's cost into a part per read and a part per request."""

from __future__ import annotations

from bench.nats_reads import fit, read_of


def test_fit_gives_the_cost_per_read_and_per_request() -> None:
    fixed, per_request = fit([(n, 40.0 + 12.5 * n) for n in (1, 2, 4, 8, 16, 32, 64)])
    assert round(fixed, 6) == 40.0 and round(per_request, 6) == 12.5


def test_a_read_holds_whole_msg_frames_as_the_server_sends_them() -> None:
    data = read_of(7, 3, 10)
    frames = data.split(b"\r\n")
    assert len(frames) == 7 and frames[-1] == b""
    assert frames[0].startswith(b"MSG echo 7 _INBOX.") and frames[0].endswith(b" %d" % len(frames[1]))
    assert b'"pattern":"echo"' in frames[1] and b'"id":"0000000a-' in frames[1]
