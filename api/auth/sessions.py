"""Sessions for people: a login (password, then TOTP) gives a short-lived bearer token.

A login decides on a snapshot of the identity's row outside the write lock (argon2 is
slow) and applies only if the row is still at the revision it read (compare and set); a
login that lost a race is decided again. Two logins racing with the same TOTP code
therefore cannot both succeed. Every attempt on a known identity is appended to its
ledger in the same transaction as the row change (``login``, ``login_failed``,
``account_locked``); so is every ``logout``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from api.auth.caller import Caller
from api.auth.credentials import (
    LoginState,
    LoginVerdict,
    accepted_totp_step,
    format_time,
    is_locked,
    judge_login,
    new_id,
    new_session_token,
    password_matches,
    secret_digest,
    session_expiry,
)
from api.auth.identities import ACCOUNT_LOCKED, AccessError, Identities
from ledger.entry import Receipt

log = structlog.get_logger(__name__)

MAX_ADDRESS = 100


@dataclass(frozen=True)
class LoginResult:
    verdict: LoginVerdict | None  # None: no such identity
    token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    caller: Caller | None = None


class Raced(Exception):
    """The identity's row changed between the decision and the write: decide again."""


def failure_address(ip: str | None) -> str:
    """The key failed logins are counted under: the client's address as the server saw
    it (X-Forwarded-For only from a configured proxy), bounded in length."""
    return (ip or "unknown")[:MAX_ADDRESS]


def _ip_or_none(ip: str | None) -> str | None:
    if not ip:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, ip)
            return ip
        except OSError:
            continue
    return None


class Sessions:
    """Logins and logouts over the identity tables.

    Guarantees: a token is issued only for a person whose password and a fresh TOTP code
    (newer than any accepted before) both matched while the account was not locked; the
    attempt, whatever its outcome, is in the person's ledger before the answer."""

    def __init__(self, identities: Identities) -> None:
        self.identities = identities

    def login(self, name: str, password: str, code: str, ip: str | None) -> LoginResult:
        """One login attempt by a person: password, then TOTP, then a session token.
        Every attempt on a known identity is recorded (``login`` or ``login_failed``,
        plus ``account_locked`` when this failure locks it)."""
        for _ in range(5):
            try:
                return self._login_once(name, password, code, ip)
            except Raced:
                continue
        raise AccessError("too many concurrent logins for this identity")

    def _login_once(self, name: str, password: str, code: str, ip: str | None
                    ) -> LoginResult:
        ident = self.identities.by_name(name)
        if ident is None or ident.kind != "user":
            password_matches(None, password)  # as slow as a real check
            return LoginResult(None)
        now = self.identities.clock()
        # Failures count per client address: wrong passwords from one address lock that
        # address out of the account, never its owner at another (issue 17).
        where = failure_address(ip)
        failures, locked_until = self.identities.login_failures(ident.id, where)
        state = LoginState(failures, locked_until, ident.totp_last_step)
        if is_locked(state, now):
            verdict = judge_login(state, now, enrolled=True, password_ok=False, totp_step=None)
        else:
            enrolled = ident.password_hash is not None and ident.totp_secret is not None
            password_ok = password_matches(ident.password_hash, password)
            step = None
            if enrolled and password_ok:
                seed = self.identities.seed_seal().open(ident.id, ident.totp_secret or "")
                step = accepted_totp_step(seed, code, now, ident.totp_last_step)
            verdict = judge_login(state, now, enrolled=enrolled, password_ok=password_ok,
                                  totp_step=step)
        actor: dict[str, Any] = {"id": ident.id, "kind": "user"}
        if (address := _ip_or_none(ip)) is not None:
            actor["ip"] = address
        token = session_id = expires = None
        if verdict.outcome == "success":
            token, session_id = new_session_token(), new_id("ses")
            expires = session_expiry(now, self.identities.session_minutes)
            events = [self.identities.event("login", now, {
                **actor, "role": "+".join(sorted(ident.roles)), "mfa": True,
                "session_id": session_id})]
        else:
            events = [self.identities.event(
                "login_failed", now, actor,
                outcome="denied" if verdict.outcome == "locked" else "failure",
                resource={"type": "login_factor", "id": verdict.factor})]
            if verdict.locked_now:
                events.append(self.identities.event(
                    ACCOUNT_LOCKED, now, actor, resource={"type": "identity", "id": ident.id},
                    data={"locked_until": format_time(verdict.state.locked_until or now)}))
        new = verdict.state
        # What the admin listing shows: the latest lock on any address.
        shown = ident.locked_until
        if new.locked_until is not None and (shown is None or shown < new.locked_until):
            shown = new.locked_until

        def change(tx: Any) -> None:
            if new != state:
                # The identity's revision serialises every login of this identity (compare
                # and set), the failure counts of all its addresses included.
                cursor = self.identities.execute(
                    tx, "UPDATE identities SET locked_until = %s, totp_last_step = %s,"
                    " revision = revision + 1 WHERE id = %s AND revision = %s",
                    (None if shown is None else format_time(shown), new.totp_last_step,
                     ident.id, ident.revision))
                if cursor.rowcount != 1:
                    raise Raced()
                self.identities.set_login_failures(
                    tx, ident.id, where, new.failed_logins, new.locked_until, now)
            if token is not None and expires is not None:
                self.identities.execute(
                    tx, "INSERT INTO credentials (id, identity_id, kind, secret_hash, name,"
                    " created_at, expires_at, revoked_at) VALUES (%s, %s, 'session', %s, NULL,"
                    " %s, %s, NULL)",
                    (session_id, ident.id, secret_digest(token), format_time(now),
                     format_time(expires)))
                # Sessions are short-lived: each login clears this identity's expired ones.
                self.identities.execute(
                    tx, "DELETE FROM credentials WHERE identity_id = %s AND kind = 'session'"
                    " AND expires_at < %s", (ident.id, format_time(now)))

        self.identities.record(ident.ledger, now, events, change)
        log.info("auth.login", identity=ident.id, outcome=verdict.outcome,
                 factor=verdict.factor, locked=verdict.locked_now)
        caller = ident.caller(session_id) if token is not None else None
        return LoginResult(verdict, token, expires, caller)

    def logout(self, caller: Caller) -> Receipt:
        """End the caller's login session and record it."""
        if caller.credential is None or not caller.credential.startswith("ses-"):
            raise AccessError("only a login session can log out; API keys are revoked")
        now = self.identities.clock()

        def change(tx: Any) -> None:
            self.identities.execute(
                tx, "UPDATE credentials SET revoked_at = %s WHERE id = %s"
                " AND revoked_at IS NULL", (format_time(now), caller.credential))

        event = self.identities.event(
            "logout", now, {"id": caller.id, "kind": "user", "session_id": caller.credential})
        return self.identities.record(caller.ledger, now, [event], change)[0]
