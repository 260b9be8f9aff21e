"""BOOKING_RPC_AUTH=jwt: only verified callers act; every forged or broken token is refused and changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from booking_rpc import jsonutil
from booking_rpc.app import build_context, service_router
from booking_rpc.authentication import loopback_only
from booking_rpc.client import Client, RemoteError
from booking_rpc.config import Settings, SettingsError
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.errors import RpcError
from booking_rpc.router import Call, Router
from booking_rpc.server.nats import NatsTransport
from booking_rpc.server.server import Server
from tests.fixtures.app import serving
from tests.fixtures.tokens import (
    SECRET,
    KeyPair,
    bearer,
    claims,
    hmac_with_public_key,
    hs256,
    jwt_settings,
    unsigned,
    write_jwks,
)
from tests.helpers import book, fetch, fetchrow, hold_body, make_service, make_slot


async def invoke(router: Router, ctx: Context | None, pattern: str, data: Any, metadata: Any = None) -> Any:
    route = router.lookup(pattern)
    assert route is not None
    return await route.invoke(data, ctx, Call("tcp", metadata))


async def refused(router: Router, ctx: Context | None, pattern: str, data: Any, metadata: Any = None) -> RpcError:
    with pytest.raises(RpcError) as info:
        await invoke(router, ctx, pattern, data, metadata)
    return info.value


@pytest.fixture
async def jwt_ctx(pool: Pool) -> Context:
    return build_context(jwt_settings(), pool)


@pytest.fixture
def jwt_router() -> Router:
    return service_router(jwt_settings())


# --- settings -------------------------------------------------------------------------------------------


def test_jwt_needs_exactly_one_key_family(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="needs a key"):
        Settings.from_env({"BOOKING_RPC_AUTH": "jwt"})
    pem = tmp_path / "key.pem"
    pem.write_bytes(KeyPair("ES256").public_pem)
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env(
            {"BOOKING_RPC_AUTH": "jwt", "BOOKING_RPC_JWT_SECRET": SECRET, "BOOKING_RPC_JWT_PUBLIC_KEY": str(pem)}
        )
    assert Settings.from_env({}).auth == "none"


def test_loopback_hosts() -> None:
    assert loopback_only("127.0.0.1") and loopback_only("::1") and loopback_only("localhost")
    assert not loopback_only("0.0.0.0") and not loopback_only("10.1.2.3") and not loopback_only("example.org")


# --- the caller comes from the token --------------------------------------------------------------------


async def test_a_verified_caller_acts_with_the_tokens_actor(jwt_router: Router, jwt_ctx: Context, pool: Pool) -> None:
    cat = await make_service(jwt_ctx)
    slot = await make_slot(pool, cat.service_id)
    user = uuid.uuid4()
    body = hold_body(cat, slot, user)
    del body["actor"]  # the gateway need not repeat it: the token says who calls
    held = await invoke(jwt_router, jwt_ctx, "booking.reservation.create", body, bearer(hs256(claims(user_id=user))))
    assert jsonutil.loads(jsonutil.dumps(held))["user_id"] == str(user)  # the reply as the wire carries it
    # the same actor written out in the payload as well is fine
    again = hold_body(cat, await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=3)), user)
    await invoke(jwt_router, jwt_ctx, "booking.reservation.create", again, bearer(hs256(claims(user_id=user))))
    assert len(await fetch(pool, "SELECT 1 FROM reservations WHERE user_id = $1", user)) == 2


async def test_a_forged_actor_is_refused_and_nothing_changes(jwt_router: Router, jwt_ctx: Context, pool: Pool) -> None:
    cat = await make_service(jwt_ctx)
    slot = await make_slot(pool, cat.service_id)
    victim, attacker = uuid.uuid4(), uuid.uuid4()
    body = hold_body(cat, slot, victim)  # actor: the victim
    err = await refused(
        jwt_router, jwt_ctx, "booking.reservation.create", body, bearer(hs256(claims(user_id=attacker)))
    )
    assert (err.code, err.status_code, err.details) == ("FORBIDDEN", 403, {"field": "actor"})
    as_admin = {**body, "actor": {"id": str(attacker), "role": "admin"}}
    err = await refused(
        jwt_router, jwt_ctx, "booking.reservation.create", as_admin, bearer(hs256(claims(user_id=attacker)))
    )
    assert err.code == "FORBIDDEN"
    assert await fetch(pool, "SELECT 1 FROM reservations") == []
    assert (await fetchrow(pool, "SELECT count(*) AS n FROM booking_events_outbox"))["n"] == 0


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, "missing"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        (bearer("not.a.jwt"), "malformed"),
        (bearer(hs256(claims(), secret="another-secret-of-at-least-32-bytes!!")), "invalid"),
        (bearer(hs256(claims(exp=int(time.time()) - 3600))), "expired"),
        (bearer(hs256(claims(nbf=int(time.time()) + 3600))), "invalid"),
        (bearer(hs256(claims(aud="another-service"))), "audience"),
        (bearer(hs256(claims(iss="someone-else"))), "issuer"),
        (bearer(hs256(claims(exp=None))), "claims"),
        (bearer(hs256(claims(role="superuser"))), "claims"),
        (bearer(hs256(claims(sub="not-a-uuid"))), "claims"),
        (bearer(unsigned(claims(role="admin"))), "invalid"),
    ],
)
async def test_bad_tokens_are_unauthenticated_with_a_reason(
    jwt_router: Router, jwt_ctx: Context, pool: Pool, metadata: Any, reason: str
) -> None:
    cat = await make_service(jwt_ctx)
    slot = await make_slot(pool, cat.service_id)
    body = hold_body(cat, slot)
    del body["actor"]
    err = await refused(jwt_router, jwt_ctx, "booking.reservation.create", body, metadata)
    assert (err.code, err.status_code, err.details) == ("UNAUTHENTICATED", 401, {"reason": reason})
    assert SECRET not in err.message
    assert await fetch(pool, "SELECT 1 FROM reservations") == []


async def test_liveness_patterns_need_no_token(jwt_router: Router) -> None:
    assert await invoke(jwt_router, None, "ping", {}) == "pong"


# --- keys: public keys, algorithm confusion, JWKS rotation ----------------------------------------------


@pytest.mark.parametrize("kind", ["RS256", "ES256", "EdDSA"])
async def test_public_key_tokens_and_algorithm_confusion(tmp_path: Path, kind: str) -> None:
    keys = KeyPair(kind)
    pem = tmp_path / "gateway.pem"
    pem.write_bytes(keys.public_pem)
    router = service_router(jwt_settings(jwt_public_key=pem))
    actor = claims(role="admin")
    # a pattern that needs no database: the token is checked before the handler runs
    assert await invoke(router, None, "ping", {}, bearer(keys.sign(actor))) == "pong"
    err = await refused(
        router, None, "booking.notifications.find", {}, bearer(hmac_with_public_key(actor, keys.public_pem))
    )
    assert (err.code, err.details) == ("UNAUTHENTICATED", {"reason": "invalid"})
    err = await refused(router, None, "booking.notifications.find", {}, bearer(KeyPair(kind).sign(actor)))
    assert (err.code, err.details) == ("UNAUTHENTICATED", {"reason": "invalid"})
    err = await refused(router, None, "booking.notifications.find", {}, bearer(unsigned(actor)))
    assert err.code == "UNAUTHENTICATED"


async def test_jwks_rotation_by_kid(tmp_path: Path, jwt_ctx: Context) -> None:
    old, new = KeyPair("ES256", "k-old"), KeyPair("RS256", "k-new")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, old)
    router = service_router(jwt_settings(jwt_jwks_file=jwks))
    user = uuid.uuid4()
    find = {"user_id": str(user)}
    assert (
        await invoke(router, jwt_ctx, "booking.notifications.find", find, bearer(old.sign(claims(user_id=user))))
    ) is not None
    err = await refused(router, jwt_ctx, "booking.notifications.find", find, bearer(new.sign(claims(user_id=user))))
    assert err.details == {"reason": "invalid"}
    write_jwks(jwks, new)  # rotation: the new key in, the old one out
    assert (
        await invoke(router, jwt_ctx, "booking.notifications.find", find, bearer(new.sign(claims(user_id=user))))
        is not None
    )
    await asyncio.sleep(1.1)  # the file is looked at again at most once a second
    err = await refused(router, jwt_ctx, "booking.notifications.find", find, bearer(old.sign(claims(user_id=user))))
    assert err.details == {"reason": "invalid"}
    err = await refused(
        router, jwt_ctx, "booking.notifications.find", find, bearer(new.sign(claims(user_id=user), with_kid=False))
    )
    assert err.code == "UNAUTHENTICATED"


# --- consumed events only from services -----------------------------------------------------------------


def payment_success(ref: str) -> dict[str, Any]:
    return {
        "event_type": "payment.status_changed",
        "payment_id": str(uuid.uuid4()),
        "external_reference": ref,
        "previous_status": "pending",
        "new_status": "success",
        "changed_at": "2030-01-01T10:00:00Z",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2030-01-01T10:00:00Z",
    }


async def payment_status(pool: Pool, ref: str) -> str:
    return str((await fetchrow(pool, "SELECT status FROM payments WHERE external_reference = $1", ref))["status"])


@pytest.fixture
async def jwt_server(jwt_ctx: Context) -> AsyncIterator[Server]:
    async with serving(jwt_ctx) as server:
        yield server


async def test_a_forged_payment_event_never_marks_a_payment_paid(
    jwt_server: Server, jwt_ctx: Context, pool: Pool
) -> None:
    ref = f"ext-{uuid.uuid4()}"
    plain_ctx = build_context(Settings(port=0, metrics_enabled=False, jobs_enabled=False), pool)
    await book(plain_ctx, pool, payment={"method": "va", "external_reference": ref, "status": "pending"})
    async with Client("127.0.0.1", jwt_server.port) as client:
        await client.emit("payment.status_changed", payment_success(ref))  # no token
        await client.emit("payment.status_changed", payment_success(ref), metadata=bearer(hs256(claims(role="admin"))))
        await client.emit(
            "payment.status_changed", payment_success(ref), metadata=bearer(unsigned(claims(role="service")))
        )
        assert await client.send("ping", {}) == "pong"  # the events before it were read and handled (refused)
        await asyncio.sleep(0.2)
        assert await payment_status(pool, ref) == "pending"
        assert jwt_server.stats.events_failed == 3
        await client.emit(
            "payment.status_changed", payment_success(ref), metadata=bearer(hs256(claims(role="service")))
        )
        for _ in range(100):
            if await payment_status(pool, ref) == "success":
                break
            await asyncio.sleep(0.02)
    assert await payment_status(pool, ref) == "success"


async def test_over_the_socket_errors_have_the_one_shape(jwt_server: Server) -> None:
    async with Client("127.0.0.1", jwt_server.port) as client:
        with pytest.raises(RemoteError) as info:
            await client.send("booking.notifications.find", {"user_id": str(uuid.uuid4())})
        assert info.value.err == {
            "status": "error",
            "statusCode": 401,
            "code": "UNAUTHENTICATED",
            "message": "This service needs the caller's token (authorization: Bearer …)",
            "details": {"reason": "missing"},
        }
        user = uuid.uuid4()
        page = await client.send(
            "booking.notifications.find", {"user_id": str(user)}, metadata=bearer(hs256(claims(user_id=user)))
        )
        assert page["items"] == []


async def test_a_token_in_a_data_field_for_older_gateways(pool: Pool) -> None:
    settings = jwt_settings(auth_data_field="auth_token")
    ctx = build_context(settings, pool)
    router = service_router(settings)
    user = uuid.uuid4()
    page = await invoke(
        router, ctx, "booking.notifications.find", {"user_id": str(user), "auth_token": hs256(claims(user_id=user))}
    )
    assert page.items == []
    err = await refused(router, ctx, "booking.notifications.find", {"user_id": str(user), "auth_token": "garbage"})
    assert err.code == "UNAUTHENTICATED"


# --- fuzzing: tokens and actors never make a 500 --------------------------------------------------------


AUTH_CODES = {"UNAUTHENTICATED", "FORBIDDEN", "VALIDATION_FAILED", "NOT_FOUND", "BAD_REQUEST"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    authorization=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.builds(lambda t: f"Bearer {t}", st.text(max_size=200)),
        st.builds(lambda p: f"Bearer {p[0]}.{p[1]}.{p[2]}", st.tuples(*[st.text("abcXYZ-_019", max_size=40)] * 3)),
        st.integers(),
    )
)
async def test_fuzzed_tokens_never_fail_inside(jwt_router: Router, authorization: Any) -> None:
    metadata = None if authorization is None else {"authorization": authorization}
    err = await refused(jwt_router, None, "booking.notifications.find", {"user_id": str(uuid.uuid4())}, metadata)
    assert err.code == "UNAUTHENTICATED"


role = st.sampled_from(["user", "clinic_staff", "admin", "service", "root", ""])
maybe_uuid = st.one_of(st.uuids().map(str), st.text(max_size=10), st.none())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token_role=role,
    token_sub=maybe_uuid,
    actor=st.one_of(st.none(), st.fixed_dictionaries({"id": maybe_uuid, "role": role})),
)
async def test_fuzzed_claims_and_actors_never_fail_inside(
    jwt_router: Router, jwt_ctx: Context, token_role: str, token_sub: Any, actor: Any
) -> None:
    body: dict[str, Any] = {"user_id": str(uuid.uuid4())}
    if actor is not None:
        body["actor"] = actor
    token = hs256(claims(role=token_role, sub=token_sub or "x"))
    try:
        await invoke(jwt_router, jwt_ctx, "booking.notifications.find", body, bearer(token))
    except RpcError as err:
        assert err.code in AUTH_CODES, err.to_wire()


# --- mTLS: a sibling service's client certificate -------------------------------------------------------


def _certificates(tmp_path: Path) -> dict[str, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test-ca"))
        .issuer_name(name("test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths: dict[str, Path] = {}

    def leaf(cn: str, san: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        paths[f"{cn}.crt"] = tmp_path / f"{cn}.crt"
        paths[f"{cn}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{cn}.key"] = tmp_path / f"{cn}.key"
        paths[f"{cn}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    paths["ca.crt"] = tmp_path / "ca.crt"
    paths["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf("localhost", True)
    leaf("payments-service", False)
    leaf("someone-else", False)
    return paths


async def test_an_allowlisted_client_certificate_acts_as_a_service(tmp_path: Path, pool: Pool) -> None:
    certs = _certificates(tmp_path)
    settings = jwt_settings(
        tls_cert=certs["localhost.crt"],
        tls_key=certs["localhost.key"],
        tls_ca=certs["ca.crt"],
        auth_service_subjects="payments-service",
    )
    ctx = build_context(settings, pool)
    plain_ctx = build_context(Settings(port=0, metrics_enabled=False, jobs_enabled=False), pool)
    async with serving(ctx) as server:
        refs = {}
        for cn in ("someone-else", "payments-service"):
            refs[cn] = f"ext-{uuid.uuid4()}"
            await book(plain_ctx, pool, payment={"method": "va", "external_reference": refs[cn], "status": "pending"})
            tls = ssl.create_default_context(cafile=str(certs["ca.crt"]))
            tls.load_cert_chain(str(certs[f"{cn}.crt"]), str(certs[f"{cn}.key"]))
            async with Client("localhost", server.port, ssl=tls) as client:
                await client.emit("payment.status_changed", payment_success(refs[cn]))
                assert await client.send("ping", {}) == "pong"
                for _ in range(50):  # stay connected while the event is handled
                    if await payment_status(pool, refs[cn]) == "success":
                        break
                    await asyncio.sleep(0.02)
        assert await payment_status(pool, refs["payments-service"]) == "success"
        assert await payment_status(pool, refs["someone-else"]) == "pending"


# --- over NATS: the token in the message headers --------------------------------------------------------


async def test_over_nats_the_token_travels_in_the_headers(nats_url: str, jwt_ctx: Context) -> None:
    transport = NatsTransport(
        service_router(jwt_ctx.settings), jwt_ctx, servers=[nats_url], queue=f"auth-{uuid.uuid4()}"
    )
    await transport.start()
    peer = await nats.connect(nats_url)
    try:
        await transport.wait_ready()
        user = uuid.uuid4()
        body = orjson.dumps({"pattern": "booking.notifications.find", "data": {"user_id": str(user)}, "id": "n1"})
        refused_reply = await peer.request("booking.notifications.find", body, timeout=5)
        assert orjson.loads(refused_reply.data)["err"]["details"] == {"reason": "missing"}
        served = await peer.request(
            "booking.notifications.find", body, timeout=5, headers=bearer(hs256(claims(user_id=user)))
        )
        assert orjson.loads(served.data) == {
            "response": {"items": [], "next_cursor": None, "unread_count": 0},
            "isDisposed": True,
            "id": "n1",
        }
    finally:
        await peer.close()
        await transport.shutdown(1.0)
