"""Who is calling: the caller's token verified, the payload's `actor` taken from it (BOOKING_RPC_AUTH=jwt).

With `auth=none` (local development) nothing here runs and handlers trust the payload's `actor`, as the
gateway sets it. With `auth=jwt` every message and event passes `authentication_middleware` first:

- the token comes from the NestJS 12 packet metadata or the NATS headers (`authorization: Bearer <jwt>`),
  or, for gateways older than 12.0.4, from a configured key inside `data` (removed before validation, so
  strict payload models still refuse unknown fields); a TLS client certificate whose subject CN is on
  BOOKING_RPC_AUTH_SERVICE_SUBJECTS stands for a sibling service's token;
- PyJWT verifies it with exactly one key family: a shared HS256 secret, or public keys (a PEM file, or a
  JWKS file chosen by `kid` and re-read when it changes) for RS256/ES256/EdDSA. `alg: none` and an HMAC
  token checked against a public key (algorithm confusion) are refused because the accepted algorithms
  follow from the key, never from the token's header. `exp` is required; `exp`/`nbf`/`iat` get the
  configured leeway; `iss` and `aud` are checked when configured;
- the actor is read from the claims (names configurable) and put into the payload of every pattern that
  takes one; a payload `actor` that disagrees is refused (403), never silently replaced;
- consumed events (`user.updated`, `payment.status_changed` …) are accepted only from `role: service`.

Refusals are `UNAUTHENTICATED` 401 (`details.reason`: missing, malformed, invalid, expired, audience,
issuer, claims) or `FORBIDDEN` 403. No token or key is ever logged or put in an error.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt
import structlog
from jwt.algorithms import get_default_algorithms
from jwt.types import Options

from booking_rpc.config import Settings
from booking_rpc.errors import RpcError
from booking_rpc.models.common import Actor, Role
from booking_rpc.router import CALLER, CLIENT_SUBJECT, Call, Middleware, Next, Route, Router

log = structlog.get_logger(__name__)

# Patterns that need no caller: liveness probes, which touch no data.
PUBLIC_ROUTES = frozenset({"ping", "echo"})
HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# How often (s) the JWKS file's modification time is looked at.
JWKS_RECHECK_SECONDS = 1.0


def unauthenticated(reason: str, message: str) -> RpcError:
    return RpcError("UNAUTHENTICATED", message, {"reason": reason})


class JwksFile:
    """The keys of a JWKS file by `kid`, re-read when the file changes (key rotation without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, jwt.PyJWK] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        keys: dict[str, jwt.PyJWK] = {}
        for key in jwt.PyJWKSet.from_json(self.path.read_text(encoding="utf-8")).keys:
            if key.key_id and key.algorithm_name in PUBLIC_KEY_ALGORITHMS:
                keys[key.key_id] = key
        self._keys, self._stamp = keys, stamp
        log.info("JWKS loaded", path=str(self.path), keys=len(keys))

    def key(self, kid: str, now: float) -> jwt.PyJWK | None:
        if kid not in self._keys or now - self._checked >= JWKS_RECHECK_SECONDS:
            with self._lock:
                self._checked = now
                try:
                    self._load()
                except (OSError, jwt.PyJWTError, ValueError) as exc:
                    # a half-written file during rotation: keep the keys we had
                    log.warning("JWKS file could not be read, keeping the previous keys", error=str(exc))
        return self._keys.get(kid)


@dataclass(slots=True)
class Claims:
    id_claim: str
    role_claim: str
    clinic_claim: str

    def actor(self, claims: dict[str, Any]) -> Actor:
        try:
            user_id = UUID(str(claims[self.id_claim]))
            role = Role(str(claims[self.role_claim]))
            clinic = claims.get(self.clinic_claim)
            clinic_id = UUID(str(clinic)) if clinic is not None else None
        except (KeyError, ValueError, TypeError) as exc:
            raise unauthenticated(
                "claims",
                f"The token's claims name no valid caller ({self.id_claim}: a UUID, {self.role_claim}: "
                f"one of {', '.join(r.value for r in Role)})",
            ) from exc
        return Actor(id=user_id, role=role, clinic_id=clinic_id)


class TokenVerifier:
    """Verifies a compact JWT with the configured key and returns the caller it names."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer or None
        self.audience = settings.jwt_audience or None
        self.leeway = settings.jwt_leeway
        self.claims = Claims(settings.jwt_id_claim, settings.jwt_role_claim, settings.jwt_clinic_claim)
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.public_key: Any = None
        self.public_algorithms: tuple[str, ...] = ()
        if settings.jwt_public_key is not None:
            pem = settings.jwt_public_key.read_bytes()
            self.public_algorithms = tuple(
                name for name in PUBLIC_KEY_ALGORITHMS if _key_fits(get_default_algorithms()[name], pem)
            )
            if not self.public_algorithms:
                raise ValueError(f"{settings.jwt_public_key}: not an RSA, EC P-256 or Ed25519 public key")
            self.public_key = pem
        self.jwks = JwksFile(settings.jwt_jwks_file) if settings.jwt_jwks_file is not None else None
        required = ["exp"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        self.options: Options = {"require": required, "verify_aud": self.audience is not None}

    def _key_for(self, header: dict[str, Any], now: float) -> tuple[Any, list[str]]:
        alg = header.get("alg")
        if self.secret is not None:
            if alg not in HMAC_ALGORITHMS:
                raise unauthenticated("invalid", f"Tokens must be signed with {', '.join(HMAC_ALGORITHMS)}")
            return self.secret, list(HMAC_ALGORITHMS)
        if self.jwks is not None:
            kid = header.get("kid")
            key = self.jwks.key(kid, now) if isinstance(kid, str) else None
            if key is not None:
                if alg != key.algorithm_name:
                    raise unauthenticated("invalid", "The token's algorithm is not its key's")
                return key.key, [key.algorithm_name]
            if self.public_key is None:
                raise unauthenticated("invalid", "The token's key id is not known")
        if alg not in self.public_algorithms:
            raise unauthenticated("invalid", f"Tokens must be signed with {', '.join(self.public_algorithms)}")
        return self.public_key, [alg]

    def verify(self, token: str, now: float) -> Actor:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthenticated("malformed", "The token is not a JWT") from exc
        key, algorithms = self._key_for(header, now)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=self.options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthenticated("expired", "The token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise unauthenticated("audience", "The token is not for this service") from exc
        except jwt.InvalidIssuerError as exc:
            raise unauthenticated("issuer", "The token's issuer is not trusted") from exc
        except jwt.ImmatureSignatureError as exc:
            raise unauthenticated("invalid", "The token is not valid yet") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise unauthenticated("claims", f"The token lacks the `{exc.claim}` claim") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise unauthenticated("invalid", "The token's signature or claims are not valid") from exc
        return self.claims.actor(claims)


def _key_fits(algorithm: Any, pem: bytes) -> bool:
    try:
        key = algorithm.prepare_key(pem)
    except Exception:
        return False
    # prepare_key also takes the other curve sizes/kinds; ES256 must be P-256
    return getattr(getattr(key, "curve", None), "name", "secp256r1") == "secp256r1"


def bearer(value: Any) -> str | None:
    """The token of an `authorization: Bearer <token>` value, or None."""
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authentication_middleware(settings: Settings, verifier: TokenVerifier | None = None) -> Middleware:
    verifier = verifier or TokenVerifier(settings)
    data_field = settings.auth_data_field
    service_subjects = frozenset(s.strip() for s in settings.auth_service_subjects.split(",") if s.strip())
    service_actor = Actor(id=UUID(int=0), role=Role.SERVICE)

    async def authenticate(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        raw: Any = call.header("authorization")
        if data_field and isinstance(data, dict) and data_field in data:
            data = dict(data)
            carried = data.pop(data_field)
            if raw is None:
                raw = carried if isinstance(carried, str) and " " in carried else f"Bearer {carried}"
        if route.route in PUBLIC_ROUTES:
            return await call_next(data)
        token = bearer(raw)
        if token is not None:
            actor = verifier.verify(token, time.monotonic())
        elif raw is not None:
            raise unauthenticated("malformed", "The authorization value must be `Bearer <token>`")
        elif call.attrs.get(CLIENT_SUBJECT) in service_subjects:
            actor = service_actor
        else:
            raise unauthenticated("missing", "This service needs the caller's token (authorization: Bearer …)")
        if route.kind == "event" and actor.role != Role.SERVICE:
            raise RpcError("FORBIDDEN", "Only platform services may emit this event", {"pattern": route.route})
        call.attrs[CALLER] = actor
        return await call_next(_with_actor(route, data, actor))

    return authenticate


def _with_actor(route: Route, data: Any, actor: Actor) -> Any:
    """`data` with the token's caller as its `actor` (for patterns that take one); a different one is refused."""
    model = route.model
    if model is None or "actor" not in model.model_fields or not isinstance(data, dict):
        return data
    claimed = data.get("actor")
    if claimed is not None:
        try:
            same = Actor.model_validate(claimed) == actor
        except ValueError:
            same = False
        if not same:
            raise RpcError("FORBIDDEN", "The payload's actor is not the token's caller", {"field": "actor"})
        return data
    return {**data, "actor": actor.model_dump(mode="json")}


def loopback_only(host: str) -> bool:
    """Whether a listener on `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install(router: Router, settings: Settings) -> None:
    """What `auth` asks for: nothing for `none`; the authentication middleware for `jwt`."""
    if settings.auth == "jwt":
        router.use(authentication_middleware(settings))
