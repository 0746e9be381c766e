"""Who is connecting and what they may do: JWTs (pyjwt), their carriers, scopes, origins.

Auth is off until a key is configured. With ``auth_jwt_secret`` the only algorithm is
HS256; with ``auth_jwt_public_key`` it is RS256 or ES256, by the key's type. The key pins
the algorithm, so ``alg: none``, an HS256 token "signed" with the public key and any other
algorithm are refused by pyjwt before a claim is read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from graphwire._generated.messages import CloseCode
from graphwire.settings import Settings

__all__ = ["SUBPROTOCOL", "Authenticator", "Principal", "TokenRefused", "origin_allowed", "presented_token"]

# What a browser offers beside ``bearer.<token>``; the gateway selects it.
SUBPROTOCOL = "graphwire.v1"
_BEARER_SUBPROTOCOL = "bearer."


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified token: the user, what it may do, and until when."""

    sub: str
    scopes: frozenset[str]
    expires_at: float  # seconds since the epoch

    def may(self, scope: str) -> bool:
        """``scope`` exactly, or ``admin``, which grants everything."""
        return "admin" in self.scopes or scope in self.scopes

    def may_with(self, prefix: str, name: str) -> bool:
        """``<prefix>:*`` or ``<prefix>:<name>`` (``groups:join``, ``topics:subscribe``)."""
        return self.may(f"{prefix}:*") or self.may(f"{prefix}:{name}")

    def may_start(self, workflow: str) -> bool:
        return self.may("workflows:start") or self.may(f"workflows:start:{workflow}")


class TokenRefused(Exception):
    """The token cannot be used; ``code`` is the close code that tells the client why."""

    def __init__(self, code: CloseCode, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        # What graphwire_auth_failures_total counts it as: missing, invalid, expired, forbidden, origin.
        self.kind = kind or _KINDS.get(code, "invalid")


_KINDS = {CloseCode.token_expired: "expired", CloseCode.forbidden: "forbidden", CloseCode.policy_violation: "origin"}


class Authenticator:
    """Verifies tokens with the configured key; ``enabled`` is False when none is set."""

    def __init__(self, settings: Settings) -> None:
        self.audience = settings.auth_audience
        self.issuer = settings.auth_issuer
        self._key: Any = None
        self.algorithms: list[str] = []
        if settings.auth_jwt_secret is not None:
            self._key = settings.auth_jwt_secret.get_secret_value()
            self.algorithms = ["HS256"]
        elif settings.auth_jwt_public_key is not None:
            key = load_pem_public_key(settings.auth_jwt_public_key.get_secret_value().encode())
            if isinstance(key, rsa.RSAPublicKey):
                self.algorithms = ["RS256"]
            elif isinstance(key, ec.EllipticCurvePublicKey):
                self.algorithms = ["ES256"]
            else:
                raise ValueError("GRAPHWIRE_AUTH_JWT_PUBLIC_KEY must be an RSA or EC (P-256) public key")
            self._key = key

    @property
    def enabled(self) -> bool:
        return bool(self.algorithms)

    def verify(self, token: str) -> Principal:
        """The token's principal, or ``TokenRefused`` (4002 when only its time is up)."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused(CloseCode.token_expired, "token expired: get a fresh token and reconnect") from None
        except jwt.InvalidTokenError as exc:
            # pyjwt's messages name the failed check, never the token or the key.
            raise TokenRefused(CloseCode.unauthorized, f"invalid token: {exc}") from None
        sub = claims.get("sub")
        scope = claims.get("scope", "")
        if not isinstance(sub, str) or not sub:
            raise TokenRefused(CloseCode.unauthorized, "invalid token: sub must be a non-empty string")
        if not isinstance(scope, str):
            raise TokenRefused(CloseCode.unauthorized, "invalid token: scope must be a space-separated string")
        return Principal(sub, frozenset(scope.split()), float(claims["exp"]))

    def mint(self, sub: str, scopes: Iterable[str], ttl: float) -> str:
        """A development token signed with the configured secret (``graphwire token``)."""
        if self.algorithms != ["HS256"]:
            raise ValueError("minting needs GRAPHWIRE_AUTH_JWT_SECRET (HS256); a public key cannot sign")
        claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), "iat": int(time.time())}
        if scopes:
            claims["scope"] = " ".join(scopes)
        if self.audience is not None:
            claims["aud"] = self.audience
        if self.issuer is not None:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self._key, algorithm="HS256")


def presented_token(headers: Mapping[str, str], query_string: bytes, subprotocols: Iterable[str]) -> str | None:
    """The token a handshake carries: ``Authorization: Bearer``, ``bearer.<t>``, or ``?token=``."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    for offered in subprotocols:
        if offered.startswith(_BEARER_SUBPROTOCOL) and len(offered) > len(_BEARER_SUBPROTOCOL):
            return offered[len(_BEARER_SUBPROTOCOL) :]
    values = parse_qs(query_string.decode("latin-1")).get("token")
    return values[-1] if values else None


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """No ``Origin`` (not a browser) or ``*`` passes; otherwise an exact scheme://host[:port]."""
    if origin is None or "*" in allowed:
        return True
    return origin.rstrip("/").lower() in {a.rstrip("/").lower() for a in allowed}
