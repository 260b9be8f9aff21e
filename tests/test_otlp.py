"""booking_rpc.otlp: the OTLP/HTTP protobuf exporter `otlp` selects, against a real HTTP endpoint that decodes
what it receives with opentelemetry-proto's classes (what a collector does)."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import logging
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from booking_rpc.otlp import OtlpHttpSpanExporter, SpanEncoder, traces_endpoint
from booking_rpc.tracing import TracingConfig, _exporter

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@dataclass
class Collector:
    """What the endpoint received: each request's headers and decoded body; answers `statuses` in turn, then 200
    (an error with the Retry-After header `retry_after` when it is set; status 0: the connection closed with no
    answer). HTTP/1.1, connections kept unless `close_after_each` (Connection: close); `connections` counts
    those accepted."""

    port: int
    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    close_after_each: bool = False
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    connections: int = 0
    open: list[socket.socket] = field(default_factory=list)

    def spans(self) -> list[Any]:
        return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def close_connections(self) -> None:
        """Close every open connection from the server's side (as a collector's idle timeout does)."""
        for connection in list(self.open):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.wait_closed()

    def wait_closed(self) -> None:
        """Wait until no connection is open (their handlers have ended)."""
        deadline = time.monotonic() + 5
        while self.open and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.open, f"{len(self.open)} connections still open"


@pytest.fixture
def collector() -> Iterator[Collector]:
    seen = Collector(0)

    class Endpoint(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            seen.connections += 1
            seen.open.append(self.connection)

        def finish(self) -> None:
            super().finish()
            seen.open.remove(self.connection)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.headers.append({k.lower(): v for k, v in self.headers.items()})
            seen.paths.append(self.path)
            status = seen.statuses.pop(0) if seen.statuses else 200
            if status == 0:
                self.close_connection = True
                return
            if status == 200:
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                elif self.headers.get("Content-Encoding") == "deflate":
                    body = zlib.decompress(body)  # the zlib format (RFC 9110's deflate), not a raw deflate stream
                seen.requests.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(status)
            if status != 200 and seen.retry_after is not None:
                self.send_header("Retry-After", seen.retry_after)
            if seen.close_after_each:
                self.send_header("Connection", "close")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    seen.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        seen.close_connections()
        server.server_close()


def make_spans(provider: TracerProvider) -> None:
    """A continued remote trace (with tracestate), a child statement span that failed with an exception, and
    a span of a trace of its own linked to the first: every field the encoder writes."""
    tracer = provider.get_tracer("booking_rpc", "1.2.3")
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=x,other=y"}
    )
    attributes = {"rpc.system": "nestjs", "n": -5, "ratio": 0.25, "ok": True, "tags": ("a", "b"), "ids": (1, 2)}
    server = tracer.start_span("booking.slots.find", parent, SpanKind.SERVER, attributes)
    statement = tracer.start_span("slots.find", set_span_in_context(server), SpanKind.CLIENT, {"db.system.name": "pg"})
    try:
        raise ValueError("no such slot: ü")
    except ValueError as exc:
        statement.record_exception(exc)
    statement.set_status(Status(StatusCode.ERROR, "NOT_FOUND"))
    statement.end()
    server.end()
    tracer.start_span("relay", None, SpanKind.PRODUCER, links=[Link(server.get_span_context(), {"rows": 3})]).end()


def recorded_spans() -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "booking-rpc-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    make_spans(provider)
    return memory.get_finished_spans()


def test_the_encoding_decodes_to_what_the_stock_encoder_builds() -> None:
    spans = recorded_spans()
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    stock = encode_spans(spans)
    decoded = [s for rs in ours.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in decoded] == ["slots.find", "booking.slots.find", "relay"]
    statement, server, relay = decoded
    # beyond the stock encoder: the W3C trace flags in Span.flags' low byte (sampled; a new root: random id)
    assert [s.flags for s in decoded] == [0x101, 0x301, 0x103]
    assert relay.links[0].trace_state == "vendor=x,other=y" and relay.links[0].flags == 0x101
    for span in decoded:
        span.flags &= ~0xFF
        for link in span.links:
            link.flags &= ~0xFF
            link.trace_state = ""
    assert ours == stock
    # and what the stock one builds is what the spans say (so ours is too)
    assert server.trace_id.hex() == TRACE_ID and server.parent_span_id.hex() == PARENT_ID
    assert statement.parent_span_id == server.span_id and statement.trace_id == server.trace_id
    assert server.trace_state == "vendor=x,other=y"
    assert statement.status.code == StatusCode.ERROR.value and statement.status.message == "NOT_FOUND"
    assert statement.events[0].name == "exception"
    assert server.start_time_unix_nano <= statement.start_time_unix_nano <= statement.end_time_unix_nano
    assert statement.end_time_unix_nano <= server.end_time_unix_nano
    assert {a.key: a.value.WhichOneof("value") for a in server.attributes} == {
        "rpc.system": "string_value",
        "n": "int_value",
        "ratio": "double_value",
        "ok": "bool_value",
        "tags": "array_value",
        "ids": "array_value",
    }
    assert [a.value.int_value for a in server.attributes if a.key == "n"] == [-5]


def test_the_same_spans_encode_to_the_same_bytes_with_the_caches_warm() -> None:
    spans = recorded_spans()
    encoder = SpanEncoder()
    assert encoder.encode(spans) == encoder.encode(spans) == SpanEncoder().encode(spans)


def test_a_batch_processor_exports_to_a_real_endpoint(collector: Collector) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
    }
    provider = TracerProvider(resource=Resource.create({"service.name": "booking-rpc-test"}))
    provider.add_span_processor(BatchSpanProcessor(OtlpHttpSpanExporter(env)))
    make_spans(provider)
    provider.shutdown()  # flushes
    assert collector.headers[0]["api-key"] == "s3cret"
    assert collector.headers[0]["content-type"] == "application/x-protobuf"
    assert collector.headers[0]["content-encoding"] == "gzip"
    by_name = {s.name: s for s in collector.spans()}
    assert sorted(by_name) == ["booking.slots.find", "relay", "slots.find"]
    assert by_name["booking.slots.find"].trace_id.hex() == TRACE_ID
    assert by_name["booking.slots.find"].parent_span_id.hex() == PARENT_ID
    assert by_name["slots.find"].parent_span_id == by_name["booking.slots.find"].span_id
    resource = collector.requests[0].resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "booking-rpc-test"
    assert collector.requests[0].resource_spans[0].scope_spans[0].scope.version == "1.2.3"


def test_a_retryable_answer_is_retried_and_a_refusal_is_not(collector: Collector) -> None:
    spans = recorded_spans()
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/x"})
    collector.statuses = [503]
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(collector.headers) == 2 and len(collector.spans()) == 3
    collector.statuses = [400]
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(collector.headers) == 3 and len(collector.spans()) == 3


def test_a_retry_after_answer_is_waited_for_within_the_timeout(collector: Collector) -> None:
    spans = recorded_spans()
    exporter = OtlpHttpSpanExporter(
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/x",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
        }
    )
    exporter._shutdown = waits = CountedWaits()
    collector.statuses, collector.retry_after = [429], "3"
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert waits.waits == [3.0]  # the endpoint's wait, not the 1 s backoff
    collector.statuses, collector.retry_after = (
        [503],
        format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True),
    )
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(waits.waits) == 2 and 1.5 < waits.waits[1] <= 3.0  # an HTTP-date: until then (whole seconds)
    collector.statuses, collector.retry_after = [503], "60"  # more than the 5 s timeout leaves
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(waits.waits) == 2 and len(collector.headers) == 5  # failed at once, not retried after 60 s
    collector.statuses, collector.retry_after = [400], "1"  # no retry on a refusal, whatever it says
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(waits.waits) == 2 and len(collector.headers) == 6
    collector.statuses, collector.retry_after = [503], "0"  # no wait asked: the backoff, not a re-POST at once
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(waits.waits) == 3 and 0.8 <= waits.waits[2] <= 1.2


def test_an_ipv6_endpoint_without_a_port_is_its_scheme_default_port() -> None:
    # http.client takes a bare "::1" with no port as host ":" port 1 (urllib put the brackets back)
    traces = "v1/traces"  # a bracket then /v1: tests/test_checkout.py would take it for a machine path
    for url, target in [
        (f"http://[::1]/{traces}", ("http", "::1", 80)),
        (f"https://[::1]/{traces}", ("https", "::1", 443)),
        (f"http://[::1]:4318/{traces}", ("http", "::1", 4318)),
    ]:
        exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url})
        assert exporter._target == target
        connection = http.client.HTTPConnection(*target[1:])
        assert (connection.host, connection.port) == target[1:]


def test_requests_carry_the_stock_exporters_user_agent(collector: Collector) -> None:
    from opentelemetry.exporter.otlp.proto.http import _OTLP_HTTP_HEADERS

    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/x"})
    assert exporter.export(recorded_spans()) is SpanExportResult.SUCCESS
    assert collector.headers[0]["user-agent"] == _OTLP_HTTP_HEADERS["User-Agent"]
    assert collector.headers[0]["user-agent"].startswith("OTel-OTLP-Exporter-Python/")


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE"])
def test_a_missing_certificate_file_fails_the_exports_not_the_start(
    collector: Collector, variable: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """As the stock exporter: it is made (the service starts), and each export fails with a logged error."""
    missing = str(tmp_path / "nowhere.pem")
    exporter = OtlpHttpSpanExporter(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"https://127.0.0.1:{collector.port}/x", variable: missing}
    )
    exporter._shutdown = waits = CountedWaits()
    with caplog.at_level(logging.ERROR, logger="booking_rpc.otlp"):
        assert exporter.export(recorded_spans()) is SpanExportResult.FAILURE
    assert [r.levelno for r in caplog.records] == [logging.ERROR] and missing in caplog.text
    assert waits.waits == [] and collector.headers == []  # not retried: nothing could be sent


class CountedWaits(threading.Event):
    """The exporter's shutdown event, counting the retry waits (and not waiting them out)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return super().wait(0)


@pytest.mark.parametrize("endpoint", ["collector:4318/v1/traces", "http//collector:4318", "http://c:4318x/", "http://"])
def test_an_endpoint_that_is_no_url_fails_the_batch_at_once(endpoint: str) -> None:
    """A misconfigured endpoint (no scheme, a bad port, no host) can never succeed: export returns FAILURE at
    once, neither raising (into the batch processor's thread or a force_flush caller) nor retrying it for the
    whole timeout."""
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint})
    exporter._shutdown = waits = CountedWaits()
    assert exporter.export(recorded_spans()) is SpanExportResult.FAILURE
    assert waits.waits == []


def test_a_refused_connection_is_retried_with_backoff_within_the_timeout() -> None:
    exporter = OtlpHttpSpanExporter(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces", "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5"}
    )
    exporter._shutdown = waits = CountedWaits()
    assert exporter.export(recorded_spans()) is SpanExportResult.FAILURE
    # 1 s then 2 s (each ±20%; not waited here); 4 s would pass the 2.5 s deadline
    assert len(waits.waits) == 2 and 0.8 <= waits.waits[0] <= 1.2 and 1.6 <= waits.waits[1] <= 2.4


def test_endpoints_per_the_otlp_variables() -> None:
    assert traces_endpoint({}) == "http://localhost:4318/v1/traces"
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/p"}
    assert traces_endpoint(both) == "http://t/p"  # the signal's own endpoint is used as given


def test_otlp_selects_ours_and_the_stock_exporters_stay_selectable() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    assert isinstance(_exporter("otlp", "http/protobuf"), OtlpHttpSpanExporter)
    assert isinstance(_exporter("otlp_proto_http", "http/protobuf"), HttpExporter)
    assert isinstance(_exporter("otlp", "grpc"), GrpcExporter)
    assert isinstance(_exporter("otlp_proto_grpc", "http/protobuf"), GrpcExporter)
    with pytest.raises(ValueError, match="http/json"):
        _exporter("otlp", "http/json")
    env = {"OTEL_TRACES_EXPORTER": "otlp"}
    assert "# exporter otlp: booking_rpc.otlp.OtlpHttpSpanExporter" in "\n".join(
        TracingConfig.from_env(env).describe(env)
    )
    env = {"OTEL_TRACES_EXPORTER": "otlp_proto_http"}
    assert "the stock OTLP/HTTP protobuf exporter" in "\n".join(TracingConfig.from_env(env).describe(env))


@pytest.mark.parametrize(
    ("variable", "compression", "encoding"),
    [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "deflate", "deflate"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", " Deflate ", "deflate"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", "gzip"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none", None),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", None),  # unknown: uncompressed, as the stock exporter does
    ],
)
def test_compression_is_the_stock_exporters(
    collector: Collector, variable: str, compression: str, encoding: str | None
) -> None:
    """The variables and values the stock exporter reads, each sent with its Content-Encoding; what the
    endpoint decompresses is the message uncompressed."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    spans = recorded_spans()
    endpoint = f"http://127.0.0.1:{collector.port}/v1/traces"
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, variable: compression})
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert collector.headers[0].get("content-encoding") == encoding
    assert collector.requests == [ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))]
    if encoding is not None:  # the stock exporter, told the same, sends the same header
        stock = HttpExporter(endpoint=endpoint, compression=Compression(encoding))
        assert stock.export(spans) is SpanExportResult.SUCCESS
        stock.shutdown()
        assert collector.headers[1]["content-encoding"] == encoding


def test_exports_share_one_connection_until_the_server_closes_it(collector: Collector) -> None:
    spans = recorded_spans()
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/x"})
    exporter._shutdown = waits = CountedWaits()
    for _ in range(3):
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert collector.connections == 1 and len(collector.requests) == 3
    collector.close_connections()  # idle: the collector's idle timeout
    for _ in range(2):
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    # a new connection, seen closed before the request went out: no request was lost on the closed one
    assert collector.connections == 2 and len(collector.headers) == len(collector.requests) == 5
    assert waits.waits == []
    exporter.shutdown()
    collector.wait_closed()  # the exporter closed it


def test_a_connection_the_server_closes_as_the_request_goes_out_is_replaced_at_once(collector: Collector) -> None:
    """The export is not lost: sent again on a new connection at once, not after a backoff; on a new
    connection the same close is an error like any other (retried after the backoff)."""
    spans = recorded_spans()
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/x"})
    exporter._shutdown = waits = CountedWaits()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    collector.statuses = [0]  # the kept connection: read, then closed unanswered
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert collector.connections == 2 and len(collector.headers) == 3 and len(collector.requests) == 2
    assert waits.waits == []
    collector.close_connections()
    collector.statuses = [0]  # now on a new connection
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert collector.connections == 4 and len(collector.headers) == 5 and len(collector.requests) == 3
    assert len(waits.waits) == 1 and 0.8 <= waits.waits[0] <= 1.2


def test_a_server_that_closes_after_each_answer_gets_a_new_connection_each_export(collector: Collector) -> None:
    collector.close_after_each = True  # Connection: close
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/x"})
    exporter._shutdown = waits = CountedWaits()
    for _ in range(3):
        assert exporter.export(recorded_spans()) is SpanExportResult.SUCCESS
    assert collector.connections == 3 and len(collector.headers) == 3 and waits.waits == []


def test_the_proxy_variables_are_read_as_urllib_reads_them(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http_proxy (the collector stands in for the proxy: a request to it names the whole URL), and no_proxy."""
    monkeypatch.setenv("http_proxy", f"http://user:p%40ss@127.0.0.1:{collector.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector.invalid:4318/v1/traces"})
    assert exporter.export(recorded_spans()) is SpanExportResult.SUCCESS
    assert collector.paths == ["http://collector.invalid:4318/v1/traces"]
    assert collector.headers[0]["host"] == "collector.invalid:4318"
    assert collector.headers[0]["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # refused, if it were used
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    exporter = OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/x"})
    assert exporter.export(recorded_spans()) is SpanExportResult.SUCCESS
    assert collector.paths[1] == "/x" and "proxy-authorization" not in collector.headers[1]
