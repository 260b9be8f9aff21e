"""What the benches share: percentiles, CPU time of a process, starting servers that print their port."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "tests" / "interop"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ')' field 3 is state; utime, stime, cutime, cstime are fields 14-17 (1-based) overall
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


@dataclass
class Spawned:
    process: subprocess.Popen[bytes]
    info: dict[str, object]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn_printing_port(cmd: list[str], *, cwd: Path | None = None, timeout: float = 30.0) -> Spawned:
    """Start a server that prints one JSON line with its port first; return it with that line."""
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        try:
            info = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(info, dict) and "port" in info:
            return Spawned(process, info)
    process.kill()
    raise RuntimeError(f"{cmd[0]} did not print its port")


def ensure_node_modules() -> None:
    if not (INTEROP / "node_modules" / "@nestjs" / "microservices").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=INTEROP, check=True)
