"""`booking-rpc` as a shell runs it: payloads from files and stdin, output into pipes that close early."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.server import RunningServer

# more than one shell argument may hold on Linux (MAX_ARG_STRLEN is 128 KiB)
LARGE = {"text": "猫" * 50_000 + "x" * 100_000}


async def cli(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "booking_rpc",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_call_reads_the_payload_from_a_file(transport_server: RunningServer, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(LARGE), encoding="utf-8")
    code, out, err = await cli("call", "echo", f"@{payload}", "--port", str(transport_server.port))
    assert (code, err) == (0, "")
    assert json.loads(out) == LARGE


async def test_call_reads_the_payload_from_stdin(transport_server: RunningServer) -> None:
    code, out, err = await cli(
        "call", "echo", "-", "--port", str(transport_server.port), stdin=json.dumps(LARGE).encode()
    )
    assert (code, err) == (0, "")
    assert json.loads(out) == LARGE


async def test_a_missing_payload_file_is_one_line(transport_server: RunningServer, tmp_path: Path) -> None:
    code, out, err = await cli("call", "echo", f"@{tmp_path / 'nope.json'}", "--port", str(transport_server.port))
    assert (code, out) == (1, "")
    assert err == f"booking-rpc: cannot read the payload file {tmp_path / 'nope.json'}: No such file or directory\n"


def test_config_into_a_pipe_closed_early_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line (what `| head` does, without the race)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "booking_rpc", "config"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env={**os.environ, "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"},
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""  # no BrokenPipeError traceback
    assert done.returncode == 141  # 128 + SIGPIPE, as a tool killed by SIGPIPE reports
