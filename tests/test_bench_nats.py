"""The NATS bench's verdicts: each issue-16 target met or not, from the rounds' medians."""

from __future__ import annotations

from bench.nats import Round, target_lines


def round_of(target: str, processes: int, rps: float, cpu_us: float, shares: list[float]) -> Round:
    return Round(target, processes, 1000, rps, 1.0, 2.0, 1.0, cpu_us, shares)


def test_targets_from_the_medians() -> None:
    rounds = [
        round_of("booking-rpc", 1, 6000, 45, [1.0]),
        round_of("booking-rpc", 1, 8000, 50, [1.0]),
        round_of("nestjs 12", 1, 5000, 90, []),
        round_of("nestjs 12", 1, 5000, 100, []),
        round_of("booking-rpc", 2, 7000, 60, [0.45, 0.55]),
    ]
    lines = target_lines(rounds)
    assert lines[0].startswith("echo over NATS, 1 process: 1.40x NestJS req/s") and lines[0].endswith(": met")
    assert "0.50x NestJS CPU per request" in lines[1] and lines[1].endswith(": met")
    assert "45%, 55%" in lines[2] and lines[2].endswith(": met")
    assert "+26% over 1" in lines[3] and lines[3].endswith(": not met")


def test_an_uneven_spread_is_not_met() -> None:
    rounds = [
        round_of("booking-rpc", 1, 4000, 100, [1.0]),
        round_of("nestjs 12", 1, 5000, 100, []),
        round_of("booking-rpc", 2, 4000, 100, [0.7, 0.3]),
    ]
    lines = target_lines(rounds)
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["not met", "not met", "not met", "met"]


def test_nestjs_with_two_processes_is_context_beside_the_targets() -> None:
    rounds = [
        round_of("booking-rpc", 1, 6000, 50, [1.0]),
        round_of("nestjs 12", 1, 5000, 100, []),
        round_of("booking-rpc", 2, 6000, 54, [0.5, 0.5]),
        round_of("nestjs 12", 2, 5000, 136, []),
    ]
    lines = target_lines(rounds)
    assert len(lines) == 5
    assert "+8% over 1" in lines[3] and lines[3].endswith(": met")
    assert lines[4] == "NestJS 12, 2 processes: CPU per request +36% over 1 (context, no target)"
