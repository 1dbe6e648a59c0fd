"""The rules of credentials, as plain functions: API keys and session tokens, passwords,
TOTP codes, lockout. No I/O here; :mod:`api.auth.identities` stores what these decide.

* **API keys and session tokens** are 256 random bits (``secrets.token_bytes``), shown
  once, prefixed so secret scanners and people can tell them apart (``phk_`` keys,
  ``pht_`` tokens). Only their SHA-256 is stored. A slow password hash (argon2) buys
  nothing for a uniformly random 256-bit secret -- there is no dictionary to try and
  2^256 guesses to make -- while it would cost every request tens of milliseconds and
  rule out finding the credential by an indexed lookup of its digest.
* **Passwords** are hashed with argon2id (argon2-cffi's defaults: RFC 9106's second
  recommended parameter set, 64 MiB, 3 passes) and must be 12 characters or more.
* **TOTP** (RFC 6238: SHA-1, 6 digits, 30 s). A code is accepted for the current time
  step or one either side (clock drift), and only for a step newer than the last one
  accepted: each code works once.
* **Lockout**: :data:`LOCKOUT_FAILURES` failures in a row lock the account for
  :data:`LOCKOUT_MINUTES`; while locked every attempt is refused unchecked.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

SECRET_BYTES: Final = 32  # 256 bits
KEY_PREFIX: Final = "phk_"
TOKEN_PREFIX: Final = "pht_"
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024  # argon2 takes anything; a megabyte "password" is a DoS
TOTP_INTERVAL: Final = 30
TOTP_DIGITS: Final = 6
TOTP_WINDOW: Final = 1  # steps accepted either side of the current one
LOCKOUT_FAILURES: Final = 5
LOCKOUT_MINUTES: Final = 15
SESSION_MINUTES: Final = 15

_HASHER = PasswordHasher()  # argon2id


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the named identity does not exist, so an unknown name costs
    as long as a wrong password and the timing does not tell which names exist."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def _random_secret(prefix: str) -> str:
    raw = secrets.token_bytes(SECRET_BYTES)
    return prefix + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_api_key() -> str:
    """A fresh API key: ``phk_`` + 43 characters of base64url (256 random bits)."""
    return _random_secret(KEY_PREFIX)


def new_session_token() -> str:
    """A fresh bearer token for a login session (256 random bits)."""
    return _random_secret(TOKEN_PREFIX)


def secret_digest(secret: str) -> str:
    """What is stored of a key or token: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    """A public identifier (``key-1a2b3c4d5e``): names a key, never opens anything."""
    return f"{prefix}-{secrets.token_hex(5)}"


# -- passwords ------------------------------------------------------------------------


class WeakPassword(ValueError):
    """The password is not acceptable (the message says why, never quoting it)."""


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"a password may have at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return _HASHER.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the stored argon2 hash; with no stored hash, a dummy
    verification runs anyway (same cost) and the answer is no."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# -- TOTP -----------------------------------------------------------------------------


def new_totp_secret() -> str:
    """A fresh TOTP seed, base32 (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32()


def totp_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app enrols from (often as a QR code)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL).provisioning_uri(
        name=account, issuer_name=issuer)


def totp_step(now: datetime) -> int:
    return int(now.timestamp()) // TOTP_INTERVAL


def totp_code(secret: str, step: int) -> str:
    """The code of one time step (what an authenticator shows)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL).generate_otp(step)


def accepted_totp_step(secret: str, code: str, now: datetime, last_step: int | None
                       ) -> int | None:
    """The time step ``code`` belongs to, if it is valid now and newer than
    ``last_step`` (the step of the last code accepted); None otherwise."""
    if not (len(code) == TOTP_DIGITS and code.isascii() and code.isdigit()):
        return None
    current = totp_step(now)
    found = None
    # Every candidate is compared (in constant time), so timing does not tell which matched.
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp_code(secret, step), code) and found is None:
            found = step
    if found is None or (last_step is not None and found <= last_step):
        return None
    return found


# -- lockout and login ----------------------------------------------------------------


@dataclass(frozen=True)
class LoginState:
    """What a login decision needs to know of an identity's row."""

    failed_logins: int
    locked_until: datetime | None
    totp_last_step: int | None


def is_locked(state: LoginState, now: datetime) -> bool:
    return state.locked_until is not None and now < state.locked_until


Outcome = Literal["success", "failure", "locked"]


@dataclass(frozen=True)
class LoginVerdict:
    """What one login attempt comes to, and the state it leaves behind.

    ``factor`` says what decided it: ``ok``, ``password``, ``totp``, ``not_enrolled``
    (no password or no TOTP yet) or ``locked``."""

    outcome: Outcome
    factor: str
    state: LoginState
    locked_now: bool = False


def judge_login(
    state: LoginState,
    now: datetime,
    *,
    enrolled: bool,
    password_ok: bool,
    totp_step: int | None,
) -> LoginVerdict:
    """Decide a login attempt. ``totp_step`` is what :func:`accepted_totp_step` found
    (None: wrong, expired or replayed). A locked account is refused whatever was sent."""
    if is_locked(state, now):
        return LoginVerdict("locked", "locked", state)
    if enrolled and password_ok and totp_step is not None:
        return LoginVerdict("success", "ok", LoginState(0, None, totp_step))
    factor = "not_enrolled" if not enrolled else "password" if not password_ok else "totp"
    failures = state.failed_logins + 1
    if failures >= LOCKOUT_FAILURES:
        until = now + timedelta(minutes=LOCKOUT_MINUTES)
        return LoginVerdict("failure", factor, LoginState(0, until, state.totp_last_step),
                            locked_now=True)
    return LoginVerdict("failure", factor, LoginState(failures, None, state.totp_last_step))


# -- expiry ---------------------------------------------------------------------------


def session_expiry(now: datetime, minutes: int = SESSION_MINUTES) -> datetime:
    return now + timedelta(minutes=minutes)


def still_valid(expires_at: datetime | None, revoked: bool, now: datetime) -> bool:
    """Whether a credential may be used at ``now``."""
    return not revoked and (expires_at is None or now < expires_at)


def format_time(moment: datetime) -> str:
    """Fixed-width UTC text, as the identity tables store times (text order = time order)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
