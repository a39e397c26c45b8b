"""Signed, expiring, scoped review links (pure).

A Teams card cannot carry a function key, so the link carries a token instead: the scope it opens
(`episode:<id>` or `squad:<name>`) and an expiry, signed with HMAC-SHA256 under REVIEW_LINK_SECRET.
`<base64url(scope|expiry)>.<base64url(mac)>`; verified in constant time; any change to the scope or
the expiry breaks the signature. Nothing secret is in the token: it only proves we minted it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from shared.errors import ForbiddenActionError, UnauthorizedError

VERSION = "v1"
MAX_TOKEN_LENGTH = 1024


def episode_scope(episode_id: str) -> str:
    return f"episode:{episode_id}"


def squad_scope(squad: str) -> str:
    return f"squad:{squad.strip().lower()}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, VERSION.encode() + b"|" + message, hashlib.sha256).digest()


def sign(secret: bytes, scope: str, expires_at: datetime) -> str:
    """A token for `scope` valid until `expires_at` (UTC)."""
    if not secret:
        raise ValueError("an empty secret signs nothing")
    message = f"{scope}|{int(expires_at.timestamp())}".encode()
    return f"{_b64(message)}.{_b64(_mac(secret, message))}"


def mint(secret: bytes, scope: str, days: int, now: datetime | None = None) -> str:
    return sign(secret, scope, (now or datetime.now(UTC)) + timedelta(days=days))


def verify(secret: bytes, token: str, scope: str, now: datetime | None = None) -> datetime:
    """The token's expiry when it is ours, unexpired and for `scope`.

    UnauthorizedError when it is missing, malformed, forged or expired; ForbiddenActionError when it is
    valid but opens another scope (a link of one episode used for another)."""
    if not token:
        raise UnauthorizedError("this page needs the signed link from the Teams card (?t=...)")
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise UnauthorizedError("the review link is malformed: open it again from the Teams card")
    body, mac = token.split(".")
    try:
        message, given = _unb64(body), _unb64(mac)
        text_scope, _, expiry_text = message.decode().rpartition("|")
        expires_at = datetime.fromtimestamp(int(expiry_text), UTC)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise UnauthorizedError("the review link is malformed: open it again from the Teams card") from None
    if not hmac.compare_digest(given, _mac(secret, message)):
        raise UnauthorizedError("the review link's signature does not match (changed, or the secret was rotated)")
    if (now or datetime.now(UTC)) >= expires_at:
        raise UnauthorizedError(
            f"this review link expired on {expires_at:%Y-%m-%d %H:%M} UTC: use a newer card, or ask for a new link"
        )
    if text_scope != scope:
        raise ForbiddenActionError("this review link opens another anomaly or squad, not this one")
    return expires_at
