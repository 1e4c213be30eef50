"""Bot Framework (login.botframework.com) stand-in: OpenID metadata, signing keys, and channel-to-bot tokens.

Teams' Bot Connector signs every request it sends to a bot with a key published at
``https://login.botframework.com/v1/.well-known/openidconfiguration`` → ``jwks_uri``. The simulator serves the
same two documents under ``/botframework/v1/.well-known/`` and mints tokens with the same claims
(``iss = https://api.botframework.com``, ``aud`` = the bot's app id, ``serviceurl``, ``nbf``, ``exp``), so the
bot's production authentication can be tested end to end. Keys are RSA-2048, generated on first use.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://api.botframework.com"
METADATA_PATH = "/botframework/v1/.well-known/openidconfiguration"
KEYS_PATH = "/botframework/v1/.well-known/keys"
DEFAULT_ENDORSEMENTS = ("msteams", "webchat", "emulator")


@dataclass
class ChannelKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    endorsements: tuple[str, ...] | None
    published: bool = True

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        data.update(
            {
                "kid": self.kid,
                "use": "sig",
                "x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode(),  # noqa: S324
            }
        )
        if self.endorsements is not None:
            data["endorsements"] = list(self.endorsements)
        return data


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class BotFrameworkChannel:
    """The channel side: ``keys`` (published unless ``published=False``), request counters, a JWKS fault knob."""

    keys: dict[str, ChannelKey] = field(default_factory=dict)
    metadata_requests: int = 0
    jwks_requests: int = 0
    #: HTTP status for the key document (e.g. 503 to make the JWKS "unreachable").
    jwks_status: int = 200

    def _default(self) -> ChannelKey:
        if not self.keys:
            self.add_key(DEFAULT_ENDORSEMENTS)
        return next(iter(self.keys.values()))

    def add_key(self, endorsements: tuple[str, ...] | None = DEFAULT_ENDORSEMENTS, *, published: bool = True) -> str:
        """A new signing key; ``published=False`` makes a key the bot can never find (a forger's key)."""
        kid = secrets.token_urlsafe(12)
        self.keys[kid] = ChannelKey(kid, _new_rsa_key(), endorsements, published)
        return kid

    def openid_configuration(self, host: str) -> dict[str, Any]:
        self.metadata_requests += 1
        base = f"https://{host}"
        return {
            "issuer": ISSUER,
            "authorization_endpoint": "https://invalid.botframework.com",
            "jwks_uri": f"{base}{KEYS_PATH}",
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }

    def jwks(self) -> tuple[int, dict[str, Any]]:
        self.jwks_requests += 1
        self._default()
        if self.jwks_status != 200:
            return self.jwks_status, {"error": "unavailable"}
        return 200, {"keys": [k.jwk() for k in self.keys.values() if k.published]}

    def mint(
        self,
        audience: str,
        service_url: str | None,
        *,
        issuer: str = ISSUER,
        ttl: float = 3600,
        kid: str | None = None,
        exp: bool = True,
        extra: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """A signed channel token as the Bot Connector sends it (``service_url=None`` leaves the claim out)."""
        key = self.keys[kid] if kid else self._default()
        now = int(time.time())
        claims: dict[str, Any] = {"iss": issuer, "aud": audience, "nbf": now - 5}
        if exp:
            claims["exp"] = int(now + ttl)
        if service_url is not None:
            claims["serviceurl"] = service_url
        claims.update(extra or {})
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, **(headers or {})})
