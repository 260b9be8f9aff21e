"""The cheapest hop Python can make for `booking.slots.find`: the floor under the service's own figures.

`bench.reservations` compares booking-rpc with pgbench, which talks to PostgreSQL directly; the service is
one more process on the path. This relay measures what that hop costs before any design choice of ours:
one connection at a time on blocking sockets (no event loop, tasks, pool, validation or router), the
NestJS frames in and out with the service's own codec, and PostgreSQL's extended query protocol written
by hand (Bind/Execute/Sync of a statement parsed once, parameters as text). It answers the find with the
very bytes the service answers (tests/test_bench_floor.py holds it to that), so the difference between
its figures and the service's is what the service's design costs, and the difference between its figures
and pgbench's is what any Python hop costs on the machine measured.

It serves only what the bench sends: `booking.slots.find` with `service_id`, `date_from`, `date_to`,
`limit` and optionally `staff_id`, `only_available`; it has no error handling beyond stopping loudly.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import hmac
import os
import secrets
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from bench.common import Spawned, spawn_printing_port
from booking_rpc.db.queries import Queries
from booking_rpc.models.common import MIDNIGHT, NIL_UUID, encode_cursor
from booking_rpc.wire.json_codec import JsonFrameDecoder, encode_frame
from booking_rpc.wire.messages import response_reply

# the first page's "after" key, as the handler passes it, in the text form the floor binds
FIRST_PAGE_ID = str(NIL_UUID).encode()
FIRST_PAGE_TIME = MIDNIGHT.isoformat().encode()
RECV_SIZE = 1 << 18
PROTOCOL_3_0 = 196608
# Authentication request codes (PostgreSQL protocol, message 'R')
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 3, 5, 10, 11, 12


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


SYNC = message(b"S", b"")
EXECUTE_ALL = message(b"E", b"\0" + struct.pack("!i", 0))  # unnamed portal, no row limit


class PgWire:
    """One blocking PostgreSQL connection speaking the extended query protocol with text parameters."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        self.user = unquote(parts.username or "") or os.environ.get("PGUSER", "postgres")
        self.password = unquote(parts.password or "") or os.environ.get("PGPASSWORD", "")
        database = parts.path.lstrip("/") or self.user
        host = query["host"][0] if "host" in query else parts.hostname or "127.0.0.1"
        if host.startswith("/"):
            port = parts.port or query.get("port", ["*"])[0]
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(glob.glob(f"{host}/.s.PGSQL.{port}")[0])
        else:
            self.sock = socket.create_connection((host, parts.port or 5432))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        params = b"user\0" + self.user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        body = struct.pack("!i", PROTOCOL_3_0) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self._authenticate()
        self.until_ready()

    def _read_message(self) -> tuple[bytes, bytes]:
        while len(self.buffer) < 5 or len(self.buffer) < 1 + struct.unpack_from("!i", self.buffer, 1)[0]:
            chunk = self.sock.recv(RECV_SIZE)
            if not chunk:
                raise ConnectionError("PostgreSQL closed the connection")
            self.buffer += chunk
        end = 1 + struct.unpack_from("!i", self.buffer, 1)[0]
        kind, body, self.buffer = self.buffer[:1], self.buffer[5:end], self.buffer[end:]
        if kind == b"E":
            fields = dict((f[:1], f[1:].decode()) for f in body.split(b"\0") if f)
            raise RuntimeError(f"PostgreSQL: {fields.get(b'M', body)}")
        return kind, body

    def _authenticate(self) -> None:
        scram: tuple[str, str] | None = None  # (client-first-message-bare, client nonce) during SCRAM
        while True:
            kind, body = self._read_message()
            if kind != b"R":
                raise RuntimeError(f"unexpected message {kind!r} during authentication")
            code = struct.unpack_from("!i", body)[0]
            if code == AUTH_OK:
                return
            if code == AUTH_CLEARTEXT:
                self.sock.sendall(message(b"p", self.password.encode() + b"\0"))
            elif code == AUTH_MD5:
                inner = hashlib.md5((self.password + self.user).encode()).hexdigest().encode()
                digest = b"md5" + hashlib.md5(inner + body[4:8]).hexdigest().encode()
                self.sock.sendall(message(b"p", digest + b"\0"))
            elif code == AUTH_SASL:
                nonce = base64.b64encode(secrets.token_bytes(18)).decode()
                scram = (f"n=,r={nonce}", nonce)
                first = ("n,," + scram[0]).encode()
                self.sock.sendall(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
            elif code == AUTH_SASL_CONTINUE and scram is not None:
                self.sock.sendall(message(b"p", scram_proof(self.password, scram[0], scram[1], body[4:].decode())))
            elif code != AUTH_SASL_FINAL:
                raise RuntimeError(f"authentication method {code} is not supported by the floor relay")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(message(b"X", b""))  # Terminate
        self.sock.close()

    def until_ready(self) -> list[bytes]:
        """The DataRow bodies received before ReadyForQuery."""
        rows = []
        while True:
            kind, body = self._read_message()
            if kind == b"D":
                rows.append(body)
            elif kind == b"Z":
                return rows

    def prepare(self, name: str, statement: str) -> None:
        body = name.encode() + b"\0" + statement.encode() + b"\0" + struct.pack("!h", 0)
        self.sock.sendall(message(b"P", body) + SYNC)
        self.until_ready()

    def execute(self, name: str, params: list[bytes | None]) -> list[bytes]:
        """Run a prepared statement; its rows as DataRow bodies."""
        bind = b"\0" + name.encode() + b"\0" + struct.pack("!hh", 0, len(params))
        for p in params:
            bind += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
        self.sock.sendall(message(b"B", bind + struct.pack("!h", 0)) + EXECUTE_ALL + SYNC)
        return self.until_ready()


def scram_proof(password: str, client_first_bare: str, client_nonce: str, server_first: str) -> bytes:
    """SCRAM-SHA-256's client-final-message (RFC 5802/7677) for PostgreSQL's server-first-message."""
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    if not attrs["r"].startswith(client_nonce):
        raise RuntimeError("SCRAM: the server's nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def columns(row: bytes) -> list[bytes | None]:
    """A DataRow body's values as text (None for NULL)."""
    count = struct.unpack_from("!h", row)[0]
    values: list[bytes | None] = []
    at = 2
    for _ in range(count):
        size = struct.unpack_from("!i", row, at)[0]
        at += 4
        values.append(None if size < 0 else row[at : at + size])
        at += max(size, 0)
    return values


def find_page(pg: PgWire, data: dict[str, Any]) -> dict[str, Any]:
    """The `booking.slots.find` reply for a first page, from statement `slots.find` prepared as "find"."""
    date_from = data["date_from"].encode()
    staff = data.get("staff_id")
    params: list[bytes | None] = [
        data["service_id"].encode(),
        date_from,
        data["date_to"].encode(),
        None if staff is None else staff.encode(),
        b"t" if data.get("only_available") else b"f",
        date_from,
        FIRST_PAGE_TIME,
        FIRST_PAGE_ID,
        str(data["limit"]).encode(),
    ]
    items, has_more, last_date, last_time, last_id = columns(pg.execute("find", params)[0])
    assert items is not None
    next_cursor = None
    if has_more == b"t":
        assert last_date is not None and last_time is not None and last_id is not None
        next_cursor = encode_cursor([last_date.decode(), last_time.decode(), last_id.decode()])
    return {"items": orjson.Fragment(items), "next_cursor": next_cursor}


def serve(listener: socket.socket, dsn: str) -> None:
    """Answer connections one after another until the listener is shut down."""
    pg = PgWire(dsn)
    try:
        pg.prepare("find", Queries.load()["slots.find"])
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was shut down
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                decoder = JsonFrameDecoder()
                while chunk := conn.recv(RECV_SIZE):
                    for request in decoder.feed(chunk):
                        conn.sendall(encode_frame(response_reply(request["id"], find_page(pg, request["data"]))))
    finally:
        pg.close()


@contextlib.contextmanager
def floor_process(dsn: str) -> Iterator[Spawned]:
    """The relay in a process of its own (its CPU is measured like the service's); info["port"]."""
    spawned = spawn_printing_port([sys.executable, "-m", "bench.floor", dsn])
    try:
        yield spawned
    finally:
        spawned.stop()


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(orjson.dumps({"port": listener.getsockname()[1]}).decode(), flush=True)
    serve(listener, sys.argv[1])


if __name__ == "__main__":
    main()
