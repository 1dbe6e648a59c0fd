"""The console's browser session: cookies, CSRF tokens, the purpose and where to go next.

A person signs in with the API's own login (:class:`api.auth.sessions.Sessions`: password,
TOTP, lockout); the session token it issues is kept in a cookie the page's script could
not read even if there were script (``HttpOnly``), that no other site can make the browser
send (``SameSite=Strict``) and that travels only over TLS (``Secure``, and the ``__Host-``
prefix, when the request came over HTTPS). Over plain HTTP the console signs in only a
browser on the same machine (a loopback address), for development; its cookies then lack
``Secure``, which a browser would refuse on ``http://``.

Every state-changing request carries a CSRF token derived from the session secret
(HMAC-SHA256), so the server keeps nothing extra and a token is worth nothing without the
cookie; before sign-in, a random pre-session cookie plays that part (double submit).

The purpose of use (why the person is looking) is kept for the session in a cookie bound
to the session's id: a new session asks again.

Everything here but :func:`cookie_header` inputs is pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

SESSION = "phl_session"
PURPOSE = "phl_purpose"
PRESESSION = "phl_signin"
HOST_PREFIX = "__Host-"
CSRF_FIELD = "csrf"
HOME = "/console"


def cookie_name(base: str, secure: bool) -> str:
    """``__Host-`` names over TLS: the browser then insists on Secure, Path=/ and no
    Domain, so no sibling host can plant or shadow the cookie."""
    return HOST_PREFIX + base if secure else base


def csrf_token(secret: str) -> str:
    """The CSRF token of the session (or pre-session) whose secret is ``secret``."""
    mac = hmac.new(secret.encode(), b"phi-ledger console csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def csrf_ok(secret: str | None, presented: str | None) -> bool:
    if not secret or not presented:
        return False
    return hmac.compare_digest(csrf_token(secret), presented)


def new_presession() -> str:
    return secrets.token_urlsafe(32)


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a local console path only (no scheme, no host, no
    ``//`` or backslash tricks), else the home page."""
    if not target or len(target) > 2000 or not target.startswith("/console"):
        return HOME
    if "\\" in target or any(ord(c) < 0x20 for c in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console"):
        return HOME
    if parts.path != "/console" and not parts.path.startswith("/console/"):
        return HOME
    return target


def purpose_value(session_id: str, purpose: str) -> str:
    return f"{session_id}.{purpose}"


def purpose_of(value: str | None, session_id: str, allowed: frozenset[str]) -> str | None:
    """The purpose a cookie holds, if it was chosen in this session and is a known code."""
    if not value:
        return None
    owner, _, purpose = value.rpartition(".")
    if owner != session_id or purpose not in allowed:
        return None
    return purpose


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Cookie:
    """A cookie to set (``value`` None: delete it)."""

    name: str
    value: str | None
    secure: bool
    max_age: int | None = None

    def header(self) -> str:
        parts = [f"{self.name}={self.value or ''}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if self.secure:
            parts.append("Secure")
        if self.value is None:
            parts.append("Max-Age=0")
        elif self.max_age is not None:
            parts.append(f"Max-Age={self.max_age}")
        return "; ".join(parts)


def cookie_header(base: str, value: str | None, secure: bool, max_age: int | None = None
                  ) -> str:
    return Cookie(cookie_name(base, secure), value, secure, max_age).header()
