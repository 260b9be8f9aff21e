"""Every setting of the service in one typed object.

Values come from environment variables named `BOOKING_RPC_<FIELD>` (`DATABASE_URL` for the database),
with CLI flags on top. A bad value stops the start with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

ENV_PREFIX = "BOOKING_RPC_"
# Settings read from a variable without the prefix (the conventional name).
UNPREFIXED = {"database_url": "DATABASE_URL"}


class SettingsError(Exception):
    """A setting has a value that cannot be used; the message names the variable."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- transport
    host: str = Field("127.0.0.1", description="Address the TCP listener binds ('localhost' binds IPv4 and IPv6)")
    port: int = Field(3000, ge=0, le=65535, description="NestJS TCP (JSON) port")
    msgpack_port: int = Field(0, ge=0, le=65535, description="Second listener with msgpack frames; 0 = off")
    max_frame_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Largest declared frame length accepted")
    incomplete_message_timeout: float = Field(30.0, ge=0, description="Seconds a peer may stall mid-frame; 0 = off")
    max_send_buffer: int = Field(128 * 1024 * 1024, gt=0, description="Unread reply bytes before a peer is dropped")
    max_in_flight: int = Field(256, gt=0, description="Requests in flight per connection before reading pauses")
    max_requests_in_flight: int = Field(
        1024, gt=0, description="Requests in flight in the process (all TCP connections) before new ones get OVERLOADED"
    )
    idle_timeout: float = Field(0.0, ge=0, description="Close connections idle this long (seconds); 0 = never")
    max_connections: int = Field(0, ge=0, description="Open connections accepted at once; 0 = unlimited")
    tls_cert: Path | None = Field(None, description="PEM certificate: serve TLS from the first byte")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert")
    tls_ca: Path | None = Field(None, description="PEM CA bundle: require client certificates (mTLS)")
    shutdown_timeout: float = Field(10.0, ge=0, description="Seconds in-flight requests get on SIGTERM")
    request_timeout: float = Field(
        10.0, gt=0, description="Seconds a request may take before TIMEOUT (504); metadata `timeout` (ms) asks less"
    )
    nats_url: str = Field(
        "", description="NATS server URL(s), comma-separated: serve every pattern over NATS too; empty = off"
    )
    nats_queue: str = Field("booking-rpc", min_length=1, description="NATS queue group of the pattern subscriptions")
    nats_max_in_flight: int = Field(
        1024, gt=0, description="NATS requests in flight in this process before new ones get OVERLOADED"
    )
    nats_user: str = Field("", description="User to connect to NATS as (with nats_password); or in the URL")
    nats_password: SecretStr | None = Field(None, description="Password of nats_user")
    nats_token: SecretStr | None = Field(None, description="Token to connect to NATS with (instead of a user)")
    workers: int = Field(
        1, ge=1, le=256, description="Worker processes on one port (SO_REUSEPORT, Linux); 1 = this process serves"
    )

    # --- callers (authentication)
    auth: Literal["none", "jwt"] = Field(
        "none", description="none = trust the payload's actor (local development); jwt = verify the caller's token"
    )
    jwt_secret: SecretStr | None = Field(None, description="HS256 shared secret of caller tokens (auth=jwt)")
    jwt_public_key: Path | None = Field(None, description="PEM public key of caller tokens: RS256, ES256 or EdDSA")
    jwt_jwks_file: Path | None = Field(
        None, description="JWKS file of caller token keys (chosen by kid, re-read on change)"
    )
    jwt_issuer: str = Field("", description="Required `iss` of caller tokens; empty = not checked")
    jwt_audience: str = Field("", description="Required `aud` of caller tokens; empty = not checked")
    jwt_leeway: float = Field(30.0, ge=0, description="Seconds of clock skew allowed on exp/nbf/iat")
    jwt_id_claim: str = Field("sub", min_length=1, description="Claim holding the caller's user id (a UUID)")
    jwt_role_claim: str = Field("role", min_length=1, description="Claim holding the caller's role")
    jwt_clinic_claim: str = Field("clinic_id", min_length=1, description="Claim holding a staff member's clinic id")
    auth_data_field: str = Field(
        "",
        description="Key in data where gateways without packet metadata put the token; removed before "
        "validation; empty = off",
    )
    auth_service_subjects: str = Field(
        "", description="mTLS client certificate subjects (CN), comma-separated, accepted as role service"
    )

    # --- database
    database_url: SecretStr | None = Field(None, description="PostgreSQL URL; unset = embedded PostgreSQL")
    data_dir: Path | None = Field(None, description="Embedded PostgreSQL data folder (default: per-user data dir)")
    sql_dir: Path | None = Field(None, description="Folder holding migrations/ and queries/ (default: the repo's sql/)")
    db_pool_min_size: int = Field(
        2, ge=1, description="Connections the pool keeps open (at least 1, opened at start: a bad DSN stops the start)"
    )
    # 20, not 10: with PostgreSQL on a core of its own, 10 left it idle at times at concurrency 32
    # (bench.reservations --split-cores: slots.find 0.78-0.92x pgbench with 10, 0.97-1.06x with 20 or 32)
    db_pool_max_size: int = Field(20, gt=0, description="Most connections the pool opens (opened as load needs them)")
    db_conn_max_lifetime: float = Field(
        600.0, gt=0, description="Seconds a pooled connection serves before it is replaced (renews cached plans)"
    )
    db_connect_timeout: float = Field(5.0, gt=0, description="Seconds opening one database connection may take")
    db_acquire_timeout: float = Field(
        2.0, gt=0, description="Seconds a request waits for a free pool connection before SERVICE_UNAVAILABLE"
    )
    db_command_timeout: float = Field(
        60.0, ge=0, description="Longest one statement may run (s), background jobs included; 0 = no limit"
    )
    migrate_on_start: bool = Field(True, description="Apply pending migrations when serving starts")
    database_read_url: SecretStr | None = Field(
        None, description="PostgreSQL streaming replica for read-only patterns; unset = every read on the primary"
    )
    read_max_lag: float = Field(
        5.0, gt=0, description="Seconds the replica may lag before reads fall back to the primary"
    )
    read_check_interval: float = Field(1.0, gt=0, description="Seconds between checks of the replica's lag")

    # --- booking rules
    hold_ttl_seconds: int = Field(600, gt=0, description="How long a reservation holds a unit of capacity")
    max_active_holds_per_user: int = Field(
        3, gt=0, description="Pending holds one user may have at once (TOO_MANY_HOLDS)"
    )
    max_active_holds_per_pet: int = Field(
        3, gt=0, description="Pending holds one pet may have at once (TOO_MANY_HOLDS)"
    )
    hold_rate_per_minute: float = Field(
        60.0, ge=0, description="reservation.create calls per user per minute, per process (RATE_LIMITED); 0 = off"
    )
    hold_rate_burst: int = Field(
        20, gt=0, description="reservation.create calls a user may make at once before the rate applies"
    )
    reschedule_cutoff_hours: float = Field(
        24.0, ge=0, description="Owners may not reschedule closer than this to the current slot's start (staff may)"
    )
    max_reschedules: int = Field(3, ge=0, description="How many times one booking may be rescheduled")
    waitlist_hold_ttl: int = Field(
        900, gt=0, description="Seconds a waiter's offered hold lasts before the next waiter is offered"
    )
    currency: str = Field("IDR", min_length=3, max_length=3, description="Currency of prices and payments")
    platform_fee_percent: Decimal = Field(Decimal("10"), ge=0, le=100, description="Platform fee, % of the price")
    tax_percent: Decimal = Field(Decimal("11"), ge=0, le=100, description="Tax, % of the price (inclusive)")
    full_refund_hours: float = Field(24.0, ge=0, description="Cancelling this many hours ahead refunds in full")
    late_refund_percent: Decimal = Field(Decimal("50"), ge=0, le=100, description="Refund % when cancelled later")

    # --- ops
    metrics_enabled: bool = Field(True, description="Serve /metrics, /healthz and /readyz over HTTP")
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="HTTP port of /metrics, /healthz, /readyz (0 = any free port)"
    )
    metrics_host: str = Field("127.0.0.1", description="Address the metrics HTTP server binds")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged")
    log_format: Literal["auto", "json", "console"] = Field("auto", description="auto = console on a TTY, else JSON")
    trace_data_field: str = Field(
        "",
        description="Key in data where gateways older than NestJS 12.0.4 put {traceparent, tracestate}; "
        "removed before validation; empty = off",
    )

    # --- events and jobs
    subscribers: str = Field("", description="Static subscribers: name=host:port:pattern,pattern;...")
    outbox_batch_size: int = Field(500, gt=0, description="Outbox rows claimed per relay batch")
    outbox_poll_interval: float = Field(
        2.0, gt=0, description="Relay poll fallback when no commit or NOTIFY wakes it (s)"
    )
    outbox_max_attempts: int = Field(10, gt=0, description="Delivery attempts before an event is parked as dead")
    outbox_backoff_base: float = Field(0.5, gt=0, description="First retry delay (s), doubled per attempt")
    outbox_backoff_max: float = Field(300.0, gt=0, description="Longest retry delay (s)")
    expiry_interval: float = Field(5.0, gt=0, description="Seconds between reservation expiry sweeps")
    reminder_interval: float = Field(30.0, gt=0, description="Seconds between due-reminder sweeps")
    views_refresh_interval: float = Field(300.0, gt=0, description="Seconds between materialized view refreshes")
    jobs_enabled: bool = Field(True, description="Run background jobs and the outbox relay in this process")
    events_nats: bool = Field(False, description="Publish every outbox event to JetStream (needs nats_url)")
    nats_stream: str = Field(
        "BOOKING_EVENTS", min_length=1, description="JetStream stream of the events (created if missing)"
    )
    nats_duplicate_window: float = Field(
        120.0, ge=120.0, description="JetStream duplicate window (s) for Nats-Msg-Id deduplication"
    )

    @classmethod
    def env_name(cls, field: str) -> str:
        return UNPREFIXED.get(field, ENV_PREFIX + field.upper())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, with `overrides` (CLI flags) on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(cls.env_name(name))
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False):
                field = str(err["loc"][0]) if err["loc"] else "?"
                source = cls.env_name(field) if field in values and field not in overrides else f"--{field}"
                problems.append(f"{source}: {err['msg']}")
            raise SettingsError("invalid configuration: " + "; ".join(problems)) from exc

    def nats_servers(self) -> list[str]:
        """BOOKING_RPC_NATS_URL: one URL or several, comma-separated (a cluster's seed servers)."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    def nats_credentials(self) -> dict[str, str]:
        """What nats-py's connect() takes to log in (user/password or token); empty: none, or the URLs' own."""
        if self.nats_token:
            return {"token": self.nats_token.get_secret_value()}
        if self.nats_user:
            return {
                "user": self.nats_user,
                "password": self.nats_password.get_secret_value() if self.nats_password else "",
            }
        return {}

    @model_validator(mode="after")
    def _one_nats_login(self) -> Settings:
        if self.nats_token and (self.nats_user or self.nats_password):
            raise ValueError("BOOKING_RPC_NATS_TOKEN or BOOKING_RPC_NATS_USER/_PASSWORD, not both")
        if self.nats_password and not self.nats_user:
            raise ValueError("BOOKING_RPC_NATS_PASSWORD needs BOOKING_RPC_NATS_USER")
        return self

    @model_validator(mode="after")
    def _events_nats_needs_a_server(self) -> Settings:
        if self.events_nats and not self.nats_servers():
            raise ValueError("BOOKING_RPC_EVENTS_NATS=true needs BOOKING_RPC_NATS_URL")
        return self

    @model_validator(mode="after")
    def _jwt_needs_a_key(self) -> Settings:
        if self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key or self.jwt_jwks_file):
            raise ValueError(
                "auth=jwt needs a key: BOOKING_RPC_JWT_SECRET, BOOKING_RPC_JWT_PUBLIC_KEY or BOOKING_RPC_JWT_JWKS_FILE"
            )
        if self.auth == "jwt" and self.jwt_secret and (self.jwt_public_key or self.jwt_jwks_file):
            # one key family: a public key next to a secret is how algorithm confusion starts
            raise ValueError("auth=jwt takes a shared secret or public keys, not both")
        return self

    def database_dsn(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None

    def read_dsn(self) -> str | None:
        return self.database_read_url.get_secret_value() if self.database_read_url else None
