"""TLS from the first byte, like NestJS `tlsOptions`; a client CA turns on mutual TLS."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None, *, check_hostname: bool = True
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key) if key else None)
    return ctx


def client_subject(peercert: Any) -> str | None:
    """The commonName of a verified client certificate (`ssl.SSLSocket.getpeercert()` form), or None."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None
