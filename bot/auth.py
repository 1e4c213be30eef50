"""Channel-to-bot authentication (inbound) and the bot's own Bot Connector token (outbound).

Inbound, every request to ``/api/messages`` in production mode carries ``Authorization: Bearer <JWT>`` signed by
the Bot Framework (teams-platform.md §13). :class:`ChannelTokenValidator` checks it completely — the Agents SDK's
``JwtTokenValidator`` checks the issuer only on request, does not bind ``serviceurl`` and hard-codes its key
locations:

- RS256 only, signed with a key from the OpenID metadata's ``jwks_uri`` (``BOTFRAMEWORK_OPENID_METADATA``);
  keys are fetched asynchronously over one reused HTTP client that trusts ``SSL_CERT_FILE`` /
  ``REQUESTS_CA_BUNDLE``, cached, and refreshed when an unknown ``kid`` arrives (at most once per
  :data:`KEY_REFRESH_INTERVAL`) or when older than :data:`KEYS_MAX_AGE`;
- a key that lists ``endorsements`` must endorse the activity's ``channelId`` (as botbuilder does);
- ``iss`` on the allow-list (``BOTFRAMEWORK_ISSUERS``), ``aud`` = the bot's app id, ``exp`` required,
  :data:`LEEWAY` seconds of clock skew;
- the ``serviceurl`` claim equals the activity's ``serviceUrl`` (case-insensitive, trailing slash ignored).

Any failure raises :class:`AuthError` with a short reason for the log; the caller answers 401.
Also here: the ``serviceUrl`` host allow-list (``ALLOWED_SERVICE_URL_HOSTS``) and :class:`ConnectorTokenProvider`,
the Agents SDK's MSAL provider with the bot's authority, CA bundle and no blocking on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt.algorithms import RSAAlgorithm
from microsoft_agents.authentication.msal import MsalAuth
from microsoft_agents.hosting.core import AgentAuthConfiguration, AuthTypes, ClaimsIdentity

from bot.graph import ssl_context
from bot.logs import safe
from bot.settings import LOOPBACK_HOSTS, Settings

log = logging.getLogger("bot.auth")

#: Clock skew allowed on ``exp`` / ``nbf``, in seconds (botbuilder allows five minutes; one is plenty with NTP).
LEEWAY = 60
#: An unknown ``kid`` triggers a key refresh at most this often (seconds), so junk tokens cannot hammer the JWKS.
KEY_REFRESH_INTERVAL = 30.0
#: Keys are re-read at least this often (seconds) even when every ``kid`` is known (key rotation, revocation).
KEYS_MAX_AGE = 24 * 3600.0
#: Longer bearer values are refused before any parsing (Bot Framework tokens are about 1-2 KB).
MAX_TOKEN_LENGTH = 4 * 1024
#: Metadata and key documents larger than this are refused.
MAX_DOCUMENT_BYTES = 512 * 1024
ALGORITHM = "RS256"


class AuthError(Exception):
    """The token (or the request's binding to it) is not acceptable; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SigningKey:
    key: Any
    endorsements: tuple[str, ...] | None


def normalise_service_url(url: str) -> str:
    return url.strip().rstrip("/").casefold()


def service_url_allowed(url: object, hosts: tuple[str, ...]) -> bool:
    """Is ``url`` an https URL (http only for loopback) whose host is on ``hosts`` (``*.`` = any subdomain)?"""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower().rstrip(".")
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    if not host or parts.username or parts.password:
        return False
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return False
    for pattern in hosts:
        allowed = pattern.lower().strip("[]")
        if allowed.startswith("*."):
            if host.endswith(allowed[1:]) and len(host) > len(allowed) - 1:
                return True
        elif host == allowed:
            return True
    return False


class ChannelTokenValidator:
    """Validates Bot Framework channel tokens against the published keys (one per process, closed at shutdown)."""

    def __init__(self, settings: Settings, *, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._app_id = settings.bot_client_id or ""
        self._issuers = {i.rstrip("/").casefold() for i in settings.botframework_issuers}
        self._http = http
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._attempted_at: float | None = None  # monotonic time of the last attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=5.0),
                verify=ssl_context(self._settings.ca_file),
                trust_env=False,
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": "chromeos-deprovision-bot/0.1"},
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- keys --------------------------------------------------------------------------------------------------

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._client().get(url)
        if response.status_code != 200:
            raise AuthError(f"HTTP {response.status_code} from {safe(url, 200)}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise AuthError(f"document too large at {safe(url, 200)}")
        document = json.loads(response.content)
        if not isinstance(document, dict):
            raise AuthError(f"not a JSON object at {safe(url, 200)}")
        return document

    async def _fetch(self) -> None:
        self._attempted_at = time.monotonic()
        self.fetches += 1
        try:
            metadata = await self._get_json(self._settings.botframework_openid_metadata)
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                raise AuthError("OpenID metadata has no https jwks_uri")
            document = await self._get_json(jwks_uri)
        except (httpx.HTTPError, ValueError) as exc:
            raise AuthError(f"signing keys unavailable ({type(exc).__name__})") from exc
        keys: dict[str, SigningKey] = {}
        for item in document.get("keys") or []:
            if not isinstance(item, dict) or item.get("kty") != "RSA" or not isinstance(item.get("kid"), str):
                continue
            if item.get("use", "sig") != "sig":
                continue
            try:
                key = RSAAlgorithm.from_jwk(json.dumps(item))
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
            raw = item.get("endorsements")
            endorsements = tuple(str(e).casefold() for e in raw) if isinstance(raw, list) else None
            keys[item["kid"]] = SigningKey(key, endorsements)
        if not keys:
            raise AuthError("signing keys unavailable (no usable RSA keys in the JWKS)")
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("channel signing keys loaded", extra={"keys": len(keys)})

    async def load_keys(self) -> int:
        """Fetch the metadata and keys now (``doctor``); the number of usable keys, or :class:`AuthError`."""
        async with self._lock:
            await self._fetch()
        return len(self._keys)

    async def signing_key(self, kid: str) -> SigningKey:
        now = time.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at > KEYS_MAX_AGE
        if not stale and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = time.monotonic()
            stale = self._fetched_at is None or now - self._fetched_at > KEYS_MAX_AGE
            recently = self._attempted_at is not None and now - self._attempted_at < KEY_REFRESH_INTERVAL
            if (stale or kid not in self._keys) and not recently:
                try:
                    await self._fetch()
                except AuthError as exc:
                    log.warning("channel signing keys could not be loaded", extra={"error": exc.reason})
                    if not self._keys:
                        raise
            elif stale and not self._keys:
                raise AuthError("signing keys unavailable (retrying shortly)")
        found = self._keys.get(kid)
        if found is None:
            raise AuthError("unknown signing key")
        return found

    # -- tokens ------------------------------------------------------------------------------------------------

    async def validate(self, authorization: str | None, activity: dict[str, Any]) -> ClaimsIdentity:
        """The verified identity for ``activity``, or :class:`AuthError`."""
        token = bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            raise AuthError(f"algorithm {safe(header.get('alg'), 20)!s} not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise AuthError("token has no key id (kid)")
        signing = await self.signing_key(kid)
        channel = activity.get("channelId")
        if signing.endorsements is not None and (
            not isinstance(channel, str) or channel.casefold() not in signing.endorsements
        ):
            raise AuthError(f"signing key not endorsed for channel {safe(channel, 40)}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing.key,
                algorithms=[ALGORITHM],
                audience=self._app_id,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token not yet valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token audience is not this bot") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no {exc.claim} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("bad signature") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})") from exc
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer.rstrip("/").casefold() not in self._issuers:
            raise AuthError(f"issuer {safe(issuer, 120)} not allowed")
        claimed_url = claims.get("serviceurl")
        service_url = activity.get("serviceUrl")
        if not isinstance(claimed_url, str) or not claimed_url:
            raise AuthError("token has no serviceurl claim")
        if not isinstance(service_url, str) or normalise_service_url(claimed_url) != normalise_service_url(service_url):
            raise AuthError("serviceurl claim does not match the activity's serviceUrl")
        return ClaimsIdentity(claims, authentication_type="Bearer", security_token=token)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("no Authorization header")
    if len(authorization) > MAX_TOKEN_LENGTH:
        raise AuthError("Authorization header too long")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise AuthError("Authorization header is not 'Bearer <token>'")
    if token.count(".") != 2:
        raise AuthError("malformed token")
    return token


# -- outbound ------------------------------------------------------------------------------------------------


class ConnectorTokenProvider(MsalAuth):
    """The SDK's MSAL provider for the bot's Bot Connector token, from ``AZURE_AUTHORITY_HOST``.

    Differences from the stock ``MsalAuth``: the client application is built in a worker thread (msal performs
    OIDC discovery in its constructor, which would block the event loop), trusts the configured CA bundle, and
    does instance discovery only for Microsoft's own hosts (a simulated Entra is not in Microsoft's list).
    Managed identities and other credential types keep the stock behaviour.
    """

    def __init__(self, configuration: AgentAuthConfiguration, settings: Settings) -> None:
        super().__init__(configuration)
        self._settings = settings
        self._build_lock = asyncio.Lock()

    def _create_client_application(self, tenant_id: str | None = None) -> Any:
        config = self._msal_configuration
        if AuthTypes.client_secret != config.AUTH_TYPE:
            return super()._create_client_application(tenant_id)
        import msal
        import requests

        from bot.graph_auth import MICROSOFT_AUTHORITY_HOSTS

        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would silently win over verify
        session.verify = self._settings.ca_file or True
        host = self._settings.authority_host.split(":")[0].lower()
        return msal.ConfidentialClientApplication(
            config.CLIENT_ID,
            client_credential=config.CLIENT_SECRET,
            authority=MsalAuth._resolve_authority(config, tenant_id),
            instance_discovery=host in MICROSOFT_AUTHORITY_HOSTS,
            http_client=session,
        )

    async def _get_access_token(self, resource_url: str, scopes: list[str], force_refresh: bool = False) -> Any:
        rep = self._client_rep()
        if rep not in self._msal_auth_client_map:
            async with self._build_lock:
                if rep not in self._msal_auth_client_map:
                    client = await asyncio.to_thread(self._create_client_application)
                    self._msal_auth_client_map[rep] = client
        return await super()._get_access_token(resource_url, scopes, force_refresh)
