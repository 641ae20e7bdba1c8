"""Access tokens: JWT-shaped, signed by the simulator, remembered until they expire. Pure.

A token is ``header.payload.signature``, each part base64url without padding; header and
payload are JSON, like the real RS256 token of MESSAGING.md 2.2 (claims as there). The
simulator signs with HMAC-SHA256 over a per-simulator secret and says so (``alg: HS256``):
a client must not verify it, only decode ``exp`` from the payload (4.1). The ``exp`` claim
is whole seconds rounded up; the simulator checks the exact expiry it remembers, so tests
can use lifetimes below a second.

A continuation token (2.3) has the same ``sub`` and ``exp`` and a new ``clientId``: it is
not a renewal. A token request always makes a new ``sub``, which has no access to an older
token's conversations (403, 2.3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import uuid
from typing import Any

import msgspec

__all__ = ["SUBJECT_PREFIX", "Token", "TokenBook", "TokenProblem", "decode_part"]

SUBJECT_PREFIX = "v2/iamessage/UNAUTH/NA/uid:"


class Token(msgspec.Struct, kw_only=True):
    """One issued access token and what the simulator knows about it.

    Attributes:
        raw: The JWT text.
        jwt_id: The ``jwtId`` claim, the token's own id.
        client_id: The ``clientId`` claim (a continuation token gets a new one).
        subject: The ``sub`` claim: the end user.
        org_id: The ``orgId`` claim (15 characters).
        deployment: The deployment the token was issued for (``esDeveloperName``).
        device_id: The ``deviceId`` claim.
        issued_at: Wall-clock seconds of issue.
        expires_at: Wall-clock seconds after which it is refused (``Jwt is expired``).
        continuation_of: The ``jwtId`` of the token it continues, None for a first token.
    """

    raw: str
    jwt_id: str
    client_id: str
    subject: str
    org_id: str
    deployment: str
    device_id: str
    issued_at: float
    expires_at: float
    continuation_of: str | None = None

    def expired(self, now: float) -> bool:
        """True from ``expires_at`` on."""
        return now >= self.expires_at


class TokenProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Why a bearer token was refused (always a 401)."""

    message: str


_MALFORMED = TokenProblem(message="Invalid token: not a JWT")
_BAD_SIGNATURE = TokenProblem(message="Invalid token: signature does not match")
_EXPIRED = TokenProblem(message="Jwt is expired")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_part(part: str) -> Any:
    """Decode one base64url JSON part of a JWT (padding optional).

    Raises:
        ValueError: Not base64url JSON.
    """
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return msgspec.json.decode(raw)
    except (binascii.Error, msgspec.DecodeError) as exc:
        raise ValueError(f"not a base64url JSON part: {exc}") from None


class TokenBook:
    """Mints tokens and checks bearer tokens against the ones it minted.

    Args:
        org_id: The 15-character org id every token carries.
        channel_address_id: The ``channelAddId`` claim.
        max_tokens: Most tokens held; :meth:`full` says when no more may be minted.
    """

    def __init__(self, org_id: str, channel_address_id: str, max_tokens: int) -> None:
        self.org_id = org_id
        self.channel_address_id = channel_address_id
        self.max_tokens = max_tokens
        self.tokens: dict[str, Token] = {}
        self._secret = secrets.token_bytes(32)
        self._kid = hashlib.sha256(self._secret).hexdigest()[:40]

    def __len__(self) -> int:
        return len(self.tokens)

    def full(self) -> bool:
        """True when ``max_tokens`` tokens are held."""
        return len(self.tokens) >= self.max_tokens

    def mint(
        self,
        *,
        deployment: str,
        now: float,
        lifetime_s: float,
        capabilities_version: str = "1",
        platform: str = "Web",
        device_id: str | None = None,
        continues: Token | None = None,
    ) -> Token:
        """Issue a token: a new subject, or ``continues``'s subject and expiry."""
        jwt_id = str(uuid.uuid4())
        client_id = str(uuid.uuid4())
        if continues is not None:
            subject = continues.subject
            device = continues.device_id
            expires_at = continues.expires_at
            deployment = continues.deployment
        else:
            subject = SUBJECT_PREFIX + str(uuid.uuid4())
            device = device_id or str(uuid.uuid4())
            expires_at = now + lifetime_s
        header = {"alg": "HS256", "typ": "JWT", "kid": self._kid}
        claims = {
            "sub": subject,
            "clientId": client_id,
            "clientSessionId": str(uuid.uuid4()),
            "deviceId": device,
            "orgId": self.org_id,
            "channelAddId": self.channel_address_id,
            "platform": platform,
            "capabilitiesVersion": capabilities_version,
            "esDeploymentType": "API",
            "apiVersion": "v2",
            "aud": "USER",
            "iss": "iamessage",
            "scope": "public",
            "evtKey": secrets.token_hex(8),
            "jwtId": jwt_id,
            "iat": int(now),
            "exp": math.ceil(expires_at),
        }
        signing_input = (
            _b64(msgspec.json.encode(header)) + "." + _b64(msgspec.json.encode(claims))
        )
        raw = signing_input + "." + self._sign(signing_input)
        token = Token(
            raw=raw,
            jwt_id=jwt_id,
            client_id=client_id,
            subject=subject,
            org_id=self.org_id,
            deployment=deployment,
            device_id=device,
            issued_at=now,
            expires_at=expires_at,
            continuation_of=continues.jwt_id if continues is not None else None,
        )
        self.tokens[jwt_id] = token
        return token

    def _sign(self, signing_input: str) -> str:
        digest = hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256)
        return _b64(digest.digest())

    def check(self, raw: str, now: float) -> Token | TokenProblem:
        """The token a bearer string names, or why it is refused."""
        parts = raw.split(".")
        if len(parts) != 3 or not all(parts):
            return _MALFORMED
        try:
            header = decode_part(parts[0])
            claims = decode_part(parts[1])
        except ValueError:
            return _MALFORMED
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return _MALFORMED
        expected = self._sign(parts[0] + "." + parts[1])
        if not hmac.compare_digest(expected, parts[2]):
            return _BAD_SIGNATURE
        token = self.tokens.get(str(claims.get("jwtId")))
        if token is None or token.raw != raw:
            # Signed by this book, so minted here: a token is forgotten only once it has
            # expired (reap), so it is still an expired one.
            return _EXPIRED
        if token.expired(now):
            return _EXPIRED
        return token

    def expire(self, token: Token, now: float) -> None:
        """Make ``token`` expired from ``now`` on (a fault: "token expiry now")."""
        token.expires_at = min(token.expires_at, now)

    def of_subject(self, subject: str) -> list[Token]:
        """Every token held for ``subject``."""
        return [token for token in self.tokens.values() if token.subject == subject]

    def reap(self, now: float, retention_s: float) -> list[Token]:
        """Forget tokens expired more than ``retention_s`` ago; returns them."""
        gone = [t for t in self.tokens.values() if now - t.expires_at > retention_s]
        for token in gone:
            del self.tokens[token.jwt_id]
        return gone
