"""The OTLP/HTTP protobuf span exporter `OTEL_TRACES_EXPORTER=otlp` uses: the SDK's SpanExporter interface,
encoding hand-written.

The stock exporter (opentelemetry-exporter-otlp-proto-http) builds a protobuf message object per span, per
attribute and per value, then serialises them: about 20 µs per span on the bench machine, on the export thread
but in the service's process (and under its GIL). The wire format of `ExportTraceServiceRequest` is small and
fixed (opentelemetry-proto's trace.proto), so this writes its bytes directly: ids and timestamps packed,
each distinct attribute (key, value), span name and the resource/scope encoded once and reused. What a
collector receives is the same message (tests decode it with opentelemetry-proto's classes); unlike the stock
encoder it also fills the low 8 bits of `Span.flags` with the W3C trace flags, as trace.proto says.

The transport is what the standard OTEL_EXPORTER_OTLP_[TRACES_]* variables describe (endpoint, headers,
timeout in seconds as the Python SDK reads it, gzip or deflate compression, certificate files), POST with
`Content-Type: application/x-protobuf`, retried with backoff on the codes the OTLP spec calls retryable, over
one HTTP/1.1 connection kept from export to export (as the stock exporter's requests.Session keeps its own).
Exports run where the SDK's BatchSpanProcessor runs them: its worker thread (and a force_flush or shutdown
caller's), never the event loop.
The stock exporters stay selectable: `OTEL_TRACES_EXPORTER=otlp_proto_http` (their entry point name) or
`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import http.client
import logging
import math
import os
import random
import select
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import Link, SpanContext, StatusCode
from opentelemetry.util.re import parse_env_headers

_logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://localhost:4318/"
TRACES_PATH = "v1/traces"
DEFAULT_TIMEOUT = 10.0  # seconds
RETRYABLE = frozenset({429, 502, 503, 504})
# OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION values, each the Content-Encoding it sends (the stock exporter's
# Compression enum: none, deflate, gzip)
COMPRESSIONS = ("none", "deflate", "gzip")
# the stock exporter's (its version is the SDK's): collectors and proxies that tell exporters apart see one
USER_AGENT = f"OTel-OTLP-Exporter-Python/{sdk_version}"
# Span.flags bits (trace.proto SpanFlags): the W3C trace flags in bits 0-7, then whether the parent's
# remoteness is known and whether it is remote.
HAS_IS_REMOTE = 0x100
IS_REMOTE = 0x200
# bounds of the per-exporter caches of encoded names and attributes (values may be unbounded: messages)
CACHE_LIMIT = 4096

_TIMES = struct.Struct("<BQBQ")  # Span fields 7 and 8, fixed64 start and end
_FLAGS = struct.Struct("<BBI")  # Span field 16 (fixed32): a two-byte tag, then the value
_DOUBLE = struct.Struct("<d")
_EVENT_TIME = struct.Struct("<BQ")


# --- protobuf wire format ------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, embedded messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _uint(number: int, value: int) -> bytes:
    """A varint field (wire type 0); int64 negatives as their 64-bit two's complement."""
    return _varint(number << 3) + _varint(value & 0xFFFFFFFFFFFFFFFF)


def _any_value(value: Any) -> bytes:
    """common.proto AnyValue (what the SDK keeps: str, bool, int, float, bytes and sequences of them)."""
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return _uint(2, int(value))
    if isinstance(value, int):
        return _uint(3, value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    if value is None:
        return b""
    raise TypeError(f"attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(1, key.encode()) + _field(2, _any_value(value))


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue field `number` (uncached: events, links, the resource)."""
    if not attributes:
        return b""
    return b"".join(_field(number, _key_value(k, v)) for k, v in attributes.items())


def _span_id(span_id: int) -> bytes:
    return span_id.to_bytes(8, "big")


def _flags(context: SpanContext | None, own: SpanContext) -> int:
    flags = int(own.trace_flags) | HAS_IS_REMOTE
    if context is not None and context.is_remote:
        flags |= IS_REMOTE
    return flags


class SpanEncoder:
    """ReadableSpans → the bytes of an ExportTraceServiceRequest. Not thread-safe: one per exporter (the
    batch processor exports from one thread at a time)."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[str, type, Any], bytes] = {}
        self._names: dict[str, bytes] = {}
        # resource and scope objects → (the object, kept so its id stays its own; its encoding)
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes]] = {}

    def encode(self, spans: Iterable[ReadableSpan]) -> bytes:
        grouped: dict[int, dict[int, list[bytes]]] = {}
        for span in spans:
            resource = self._resource(span.resource)
            scope = self._scope(span.instrumentation_scope)
            grouped.setdefault(resource, {}).setdefault(scope, []).append(self.span(span))
        out = []
        for resource, scopes in grouped.items():
            _, resource_bytes = self._resources[resource]
            scope_spans = b"".join(
                _field(2, self._scopes[scope][1] + b"".join(_field(2, s) for s in encoded))
                for scope, encoded in scopes.items()
            )
            out.append(_field(1, resource_bytes + scope_spans))
        return b"".join(out)

    def _resource(self, resource: Any) -> int:
        key = id(resource)
        if key not in self._resources:
            # ResourceSpans: 1 resource (here), 2 scope_spans (appended after), 3 schema_url: order is free
            encoded = _field(1, _attributes(1, resource.attributes))
            if resource.schema_url:
                encoded += _field(3, resource.schema_url.encode())
            self._resources[key] = (resource, encoded)
        return key

    def _scope(self, scope: Any) -> int:
        key = id(scope)
        if key not in self._scopes:
            encoded = b""
            if scope is not None:
                body = _field(1, scope.name.encode())
                if scope.version:
                    body += _field(2, scope.version.encode())
                body += _attributes(3, scope.attributes)
                encoded = _field(1, body)
                if scope.schema_url:
                    encoded += _field(3, scope.schema_url.encode())
            self._scopes[key] = (scope, encoded)
        return key

    def _attribute(self, key: str, value: Any) -> bytes:
        cache_key = (key, type(value), value) if not isinstance(value, (list, dict)) else None
        if cache_key is None:
            return _field(9, _key_value(key, value))
        encoded = self._attributes.get(cache_key)
        if encoded is None:
            if len(self._attributes) >= CACHE_LIMIT:
                self._attributes.clear()
            encoded = self._attributes[cache_key] = _field(9, _key_value(key, value))
        return encoded

    def span(self, span: ReadableSpan) -> bytes:
        """trace.proto Span (fields in number order, as protobuf writers put them)."""
        context = span.get_span_context()
        assert context is not None  # an SDK span always has one
        parent = span.parent
        name = self._names.get(span.name)
        if name is None:
            if len(self._names) >= CACHE_LIMIT:
                self._names.clear()
            name = self._names[span.name] = _field(5, span.name.encode())
        parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"), b"\x12\x08", _span_id(context.span_id)]
        if context.trace_state:
            parts.append(_field(3, context.trace_state.to_header().encode()))
        if parent is not None:
            parts += (b"\x22\x08", _span_id(parent.span_id))
        parts += (
            name,
            b"\x30",
            _KINDS[span.kind.value],
            _TIMES.pack(0x39, span.start_time or 0, 0x41, span.end_time or 0),
        )
        attributes = span.attributes
        if attributes:
            attribute = self._attribute
            parts += [attribute(k, v) for k, v in attributes.items()]
        if span.dropped_attributes:
            parts.append(_uint(10, span.dropped_attributes))
        for event in span.events:
            body = _EVENT_TIME.pack(0x09, event.timestamp) + _field(2, event.name.encode())
            body += _attributes(3, event.attributes)
            if event.dropped_attributes:
                body += _uint(4, event.dropped_attributes)
            parts.append(_field(11, body))
        if span.dropped_events:
            parts.append(_uint(12, span.dropped_events))
        for link in span.links:
            parts.append(_field(13, _link(link)))
        if span.dropped_links:
            parts.append(_uint(14, span.dropped_links))
        status = span.status
        if status.status_code is StatusCode.UNSET and not status.description:
            parts.append(b"\x7a\x00")  # an empty Status (UNSET), which the stock encoder writes too
        else:
            body = _field(2, status.description.encode()) if status.description else b""
            parts.append(_field(15, body + _uint(3, status.status_code.value)))
        parts.append(_FLAGS.pack(0x85, 0x01, _flags(parent, context)))
        return b"".join(parts)


# SpanKind (the API's INTERNAL=0 … CONSUMER=4) → trace.proto's (INTERNAL=1 … CONSUMER=5), as varint bytes
_KINDS = tuple(bytes((value + 1,)) for value in range(5))


def _link(link: Link) -> bytes:
    context = link.context
    body = b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + _span_id(context.span_id)
    if context.trace_state:
        body += _field(3, context.trace_state.to_header().encode())
    body += _attributes(4, link.attributes)
    if link.dropped_attributes:
        body += _uint(5, link.dropped_attributes)
    flags = int(context.trace_flags) | HAS_IS_REMOTE | (IS_REMOTE if context.is_remote else 0)
    return body + struct.pack("<BI", 0x35, flags)


# --- the exporter ---------------------------------------------------------------------------------------


def _env(name: str, environ: Mapping[str, str]) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name> ("" when neither is set)."""
    return environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or environ.get(f"OTEL_EXPORTER_OTLP_{name}") or ""


def retry_after(value: str | None) -> float | None:
    """A Retry-After header's wait in seconds (delay-seconds or an HTTP-date, RFC 9110), None when absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
            when = when.replace(tzinfo=datetime.UTC)
        return max(when.timestamp() - time.time(), 0.0)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def traces_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The URL spans are POSTed to: the traces endpoint as given, else the base endpoint + v1/traces."""
    env = os.environ if environ is None else environ
    own = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if own:
        return own
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    return f"{base.removesuffix('/')}/{TRACES_PATH}"


class OtlpHttpSpanExporter(SpanExporter):
    """OTLP/HTTP with protobuf bodies, encoded by `SpanEncoder`; configured by the OTEL_EXPORTER_OTLP_* variables."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.endpoint = traces_endpoint(env)
        try:
            self.timeout = float(_env("TIMEOUT", env) or DEFAULT_TIMEOUT)
        except ValueError:
            _logger.warning("OTEL_EXPORTER_OTLP_TIMEOUT is not a number of seconds: using %s", DEFAULT_TIMEOUT)
            self.timeout = DEFAULT_TIMEOUT
        compression = _env("COMPRESSION", env).strip().lower() or "none"
        if compression not in COMPRESSIONS:
            _logger.warning(
                "OTEL_EXPORTER_OTLP_COMPRESSION %r is not none, deflate or gzip: sending uncompressed", compression
            )
            compression = "none"
        self.compression = compression
        # the variable may set its own user-agent, as the stock exporter lets it
        self.headers = {"user-agent": USER_AGENT}
        self.headers.update((k.lower(), v) for k, v in parse_env_headers(_env("HEADERS", env), liberal=True).items())
        self.headers["content-type"] = "application/x-protobuf"
        if compression != "none":
            self.headers["content-encoding"] = compression
        # scheme, host, port and the request's target; or why the endpoint cannot be used (each export fails)
        self._target: tuple[str, str, int] | None = None
        self._target_path = "/"
        self._target_error = ""
        # the proxy http_proxy/https_proxy name (unless no_proxy covers the host), as urllib (what exported
        # before) and the stock exporter's requests read them: its host, port and Proxy-Authorization
        self._proxy: tuple[str, int, dict[str, str]] | None = None
        try:
            url = urllib.parse.urlsplit(self.endpoint)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError("not an http:// or https:// URL with a host")
            # the port always given: http.client reads a bare IPv6 host's last ':' as a port separator
            self._target = (url.scheme, url.hostname, url.port or (443 if url.scheme == "https" else 80))
            self._target_path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            self._proxy = _proxy_for(url.scheme, url.hostname)
            if self._proxy is not None and url.scheme == "http":  # the absolute URL, to the proxy itself
                self._target_path = urllib.parse.urlunsplit((url.scheme, url.netloc, url.path or "/", url.query, ""))
                self.headers.update(self._proxy[2])
        except ValueError as exc:  # also a port that is no number, the endpoint's or the proxy's
            self._target_error = str(exc)
        # the connection kept between exports (made at the first, again after the server closes it) and the
        # lock that gives it to one export at a time
        self._connection: http.client.HTTPConnection | None = None
        self._connection_pid = os.getpid()  # a forked child must not write to its parent's connection
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        # certificate files are read at the first https export, not here: one missing fails the exports with a
        # logged error (as the stock exporter's do), not the service's start; and one put in place later works
        self._tls_files = (_env("CERTIFICATE", env), _env("CLIENT_CERTIFICATE", env), _env("CLIENT_KEY", env))
        self._encoder = SpanEncoder()
        self._shutdown = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown.is_set():
            return SpanExportResult.FAILURE
        try:
            body = self._encoder.encode(spans)
        except Exception:  # a value the SDK let through that OTLP cannot carry: this batch is lost, not the rest
            _logger.exception("OTLP: could not encode %d spans", len(spans))
            return SpanExportResult.FAILURE
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif self.compression == "deflate":
            body = zlib.compress(body)  # the zlib format, as HTTP's deflate is (and the stock exporter sends)
        if self._target is None:
            _logger.warning("OTLP: export to %s failed (%s)", self.endpoint, self._target_error)
            return SpanExportResult.FAILURE
        if self._target[0] == "https" and self._tls is None and not self._load_tls():
            return SpanExportResult.FAILURE
        with self._lock:
            try:
                return SpanExportResult.SUCCESS if self._post(body) else SpanExportResult.FAILURE
            finally:
                if self._shutdown.is_set():
                    self._close()

    def _load_tls(self) -> bool:
        """The TLS context from the certificate variables; False (logged) when a file cannot be used."""
        cafile, client_cert, client_key = self._tls_files
        try:
            tls = ssl.create_default_context(cafile=cafile or None)
            if client_cert:
                tls.load_cert_chain(client_cert, client_key or None)
        except (OSError, ssl.SSLError) as exc:  # missing, unreadable, not PEM, key not the certificate's
            files = ", ".join(f for f in self._tls_files if f)
            _logger.error(
                "OTLP: export to %s failed: certificate files %s cannot be used (%s)", self.endpoint, files, exc
            )
            return False
        self._tls = tls
        return True

    def _post(self, body: bytes) -> bool:
        """POST with jittered exponential backoff on the retryable codes and connection errors, within the
        timeout."""
        deadline = time.monotonic() + self.timeout
        delay = 1.0
        while True:
            status: int | None = None
            retryable = True
            asked: float | None = None
            try:
                status, reason, retry_after_header = self._exchange(body, deadline)
                if 200 <= status < 300:
                    return True
                retryable = status in RETRYABLE
                # the endpoint's own wait (429, 503) instead of the backoff; past the deadline, the batch fails
                asked = retry_after(retry_after_header) if retryable else None
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, unknown host, bad reply
                reason = str(exc) or type(exc).__name__
            except ValueError as exc:  # a host IDNA cannot encode, a header value with a line break: never passes
                reason, retryable = str(exc), False
            # at least the backoff: a Retry-After of 0 (or a past date) would re-POST without pause
            backoff = delay * random.uniform(0.8, 1.2)
            retry_in = backoff if asked is None else max(asked, backoff)
            if not retryable or time.monotonic() + retry_in >= deadline:
                later = f", retry after {asked:g} s: past the export timeout" if asked is not None else ""
                _logger.warning("OTLP: export to %s failed (%s %s%s)", self.endpoint, status or "", reason, later)
                return False
            if self._shutdown.wait(retry_in):
                return False
            delay *= 2

    def _exchange(self, body: bytes, deadline: float) -> tuple[int, str, str | None]:
        """One request and its whole response (status, reason, Retry-After) on the kept connection, or on a new
        one when there is none or the server has closed it. A kept connection that fails as the request goes
        out (the server closed it meanwhile: its idle timeout) is replaced at once, once, as the stock
        exporter does, rather than after a backoff."""
        connection, kept = self._open(deadline)
        try:
            return _send(connection, self._target_path, body, self.headers)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            if not kept or isinstance(exc, TimeoutError):  # a server too slow to answer is not a closed one
                raise
        connection, _ = self._open(deadline)
        try:
            return _send(connection, self._target_path, body, self.headers)
        except (OSError, http.client.HTTPException):
            connection.close()
            raise

    def _open(self, deadline: float) -> tuple[http.client.HTTPConnection, bool]:
        """The connection for the next request, its timeout what is left of the export's; whether it is one
        kept from an earlier request (else http.client connects at the request)."""
        assert self._target is not None  # export checks it first
        scheme, host, port = self._target
        timeout = max(deadline - time.monotonic(), 0.1)
        connection = self._connection
        if connection is not None and self._connection_pid != os.getpid():
            connection = None  # the parent process's (fork): this one makes its own
        if connection is None:
            self._connection_pid = os.getpid()
            to_host, to_port = (host, port) if self._proxy is None else self._proxy[:2]
            if scheme == "https":
                connection = http.client.HTTPSConnection(to_host, to_port, timeout=timeout, context=self._tls)
                if self._proxy is not None:  # CONNECT, then TLS to the endpoint through the tunnel
                    connection.set_tunnel(host, port, headers=self._proxy[2])
            else:
                connection = http.client.HTTPConnection(to_host, to_port, timeout=timeout)
            self._connection = connection
        if connection.sock is not None and _closed_or_unasked(connection.sock):
            connection.close()
        if connection.sock is None:
            connection.timeout = timeout
            return connection, False
        connection.sock.settimeout(timeout)
        return connection, True

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def shutdown(self) -> None:
        self._shutdown.set()
        # an export under way (the batch processor's thread, past its join timeout) closes it when it ends
        if self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is held here: the batch processor holds the spans


def _proxy_for(scheme: str, host: str) -> tuple[str, int, dict[str, str]] | None:
    """The host, port and Proxy-Authorization of the proxy the environment names for `scheme` URLs, None when
    it names none or no_proxy covers `host` (urllib's reading of the variables)."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not url.hostname:
        raise ValueError(f"{scheme}_proxy {proxy!r} has no host")
    headers = {}
    if url.username is not None:
        credentials = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
        headers["proxy-authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return url.hostname, url.port or 80, headers


def _send(
    connection: http.client.HTTPConnection, target: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, str, str | None]:
    connection.request("POST", target, body, headers)
    # http.client closes the connection itself when the response says it will (Connection: close, HTTP/1.0)
    response = connection.getresponse()
    response.read()
    return response.status, response.reason, response.getheader("Retry-After")


def _closed_or_unasked(sock: socket.socket) -> bool:
    """Whether an idle kept connection has something to read: the server's EOF (it closed the connection) or
    bytes no request asked for; either way it cannot carry the next request."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


__all__ = ["OtlpHttpSpanExporter", "SpanEncoder", "retry_after", "traces_endpoint"]
