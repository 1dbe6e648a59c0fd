"""Identities and their credentials in the store, and the ledger entries recording them.

Every change that access control makes -- an identity created, a key issued or revoked,
a password or TOTP seed set, a lockout lifted, and (in :mod:`api.auth.sessions`) a login,
a failed login, a lockout, a logout -- is appended to the identity's own ledger *in the
same transaction* as the row change (the store's ``append(..., before=...)``, as
crypto-shredding does). So the ledger says a key exists exactly when it does, and a
lockout cannot happen without its entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from api.auth.caller import ROLES, Caller, IdentityKind, format_roles, parse_roles
from api.auth.credentials import (
    WeakPassword,
    format_time,
    hash_password,
    new_api_key,
    new_id,
    new_totp_secret,
    parse_time,
    secret_digest,
    still_valid,
    totp_uri,
)
from api.auth.sealing import SeedSeal
from ledger.admission import Accepted, Pending
from ledger.attestation import BY_SERVICE
from ledger.clock import Clock
from ledger.entry import Receipt
from ledger.event_ids import new_event_id
from ledger.store import LedgerStore
from ledger.store.base import LEDGER_NAME

log = structlog.get_logger(__name__)

IDENTITY_CREATED = "identity_created"
KEY_CREATED = "key_created"
KEY_REVOKED = "key_revoked"
PASSWORD_SET = "password_set"
TOTP_ENROLLED = "totp_enrolled"
ACCOUNT_LOCKED = "account_locked"
ACCOUNT_UNLOCKED = "account_unlocked"
STAFF_IDS_SET = "staff_ids_set"
MAX_STAFF_IDS = 20
MAX_STAFF_ID = 256
SOURCE = {"system": "phi-ledger"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
Fingerprint = Callable[[str, dict[str, Any]], str]

_IDENTITY_COLUMNS = (
    "id, ledger, kind, name, roles, password_hash, totp_secret, totp_last_step,"
    " failed_logins, locked_until, revision, created_at"
)


class AccessError(Exception):
    """An administrative request that cannot be done as asked (the message says why and
    quotes no secret)."""


class NotFound(AccessError):
    pass


class Withheld(AccessError):
    """The request would give roles the caller may not give (``roles``: their names)."""

    def __init__(self, roles: list[str]) -> None:
        super().__init__(f"withheld role(s): {', '.join(roles)}")
        self.roles = roles


@dataclass(frozen=True)
class Identity:
    """One person or application, confined to ``ledger``. Never holds a secret in the
    clear: ``password_hash`` is argon2id, ``totp_secret`` is sealed."""

    id: str
    ledger: str
    kind: IdentityKind
    name: str | None
    roles: frozenset[str]
    password_hash: str | None = field(repr=False)
    totp_secret: str | None = field(repr=False)
    totp_last_step: int | None
    failed_logins: int
    locked_until: datetime | None
    revision: int
    created_at: str

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Identity:
        return cls(
            id=row[0], ledger=row[1], kind=row[2], name=row[3], roles=parse_roles(row[4]),
            password_hash=row[5], totp_secret=row[6],
            totp_last_step=None if row[7] is None else int(row[7]),
            failed_logins=int(row[8]), locked_until=parse_time(row[9]),
            revision=int(row[10]), created_at=row[11],
        )

    def caller(self, credential: str | None) -> Caller:
        return Caller(self.id, self.kind, self.ledger, self.roles, self.name, credential)


@dataclass(frozen=True)
class CredentialInfo:
    """A key or session as administrators see it: never the secret, nor its digest."""

    id: str
    identity_id: str
    kind: str
    name: str | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "identity": self.identity_id, "kind": self.kind,
                "name": self.name, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at}


@dataclass(frozen=True)
class IssuedKey:
    """A key just made. ``secret`` is shown once and kept nowhere."""

    secret: str = field(repr=False)
    key_id: str
    identity: Identity
    expires_at: str | None
    receipt: Receipt | None


@dataclass(frozen=True)
class Enrolment:
    """A TOTP seed just set: ``uri`` (which holds the seed) is shown once."""

    uri: str = field(repr=False)
    seed: str = field(repr=False)
    receipt: Receipt


@dataclass(frozen=True)
class Actor:
    """Who makes an administrative change, as the ledger entry names them: the
    operator at the command line (``kind`` system), or an admin over HTTP."""

    id: str
    kind: str = "system"

    @classmethod
    def of(cls, caller: Caller) -> Actor:
        return cls(caller.id, caller.kind)

    def as_event(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind}


def check_roles(roles: Sequence[str] | frozenset[str]) -> frozenset[str]:
    wanted = frozenset(roles)
    if not wanted:
        raise AccessError("an identity needs at least one role")
    unknown = sorted(wanted - ROLES)
    if unknown:
        raise AccessError(  # the unknown names are the client's text: not repeated
            f"unknown role(s); roles are {', '.join(sorted(ROLES))}")
    return wanted


def check_ledger(ledger: str) -> str:
    if not LEDGER_NAME.fullmatch(ledger):
        raise AccessError("a ledger name is 1-63 of [a-z0-9_-], starting with a letter or digit")
    return ledger


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AccessError("a name is 1-64 of letters, digits, '.', '_', '@' or '-'")
    return name


def check_staff_ids(staff_ids: Sequence[str]) -> list[str]:
    """The staff ids a person acts as, sorted and without repeats. A staff id is what
    applications post as ``actor.id`` (the ``staff_id`` of ``staff_added``): 1-256
    characters without NUL, at most 20 per person."""
    wanted = sorted(set(staff_ids))
    if len(wanted) > MAX_STAFF_IDS:
        raise AccessError(f"at most {MAX_STAFF_IDS} staff ids per person")
    if any(not s or len(s) > MAX_STAFF_ID or "\x00" in s for s in wanted):
        raise AccessError(f"a staff id is 1-{MAX_STAFF_ID} characters without NUL")
    return wanted


def _password_hash(password: str) -> str:
    try:
        return hash_password(password)
    except WeakPassword as error:
        raise AccessError(str(error)) from None


class Identities:
    """The ``identities`` and ``credentials`` tables of a store, and the entries that
    record their changes.

    Guarantees: every change listed in the module docstring commits together with its
    ledger entry or not at all; secrets are returned once and stored only as SHA-256
    (keys, tokens), argon2id (passwords) or sealed (TOTP seeds).
    """

    def __init__(
        self, store: LedgerStore, clock: Clock, *, fingerprint: Fingerprint,
        seeds: SeedSeal | None = None, session_minutes: int = 15,
    ) -> None:
        self.store = store
        self.clock = clock
        self.fingerprint = fingerprint
        self.seeds = seeds
        self.session_minutes = session_minutes

    # -- the ledger side (also used by api.auth.sessions) ----------------------------

    def event(self, action: str, now: datetime, actor: dict[str, Any], **fields: Any
               ) -> dict[str, Any]:
        event = {
            "event_id": new_event_id(),
            "occurred_at": now.isoformat(timespec="microseconds"),
            "action": action,
            "outcome": fields.pop("outcome", "success"),
            "actor": actor,
            "source": SOURCE,
        }
        event.update({k: v for k, v in fields.items() if v is not None})
        return event

    def record(
        self, ledger: str, now: datetime, events: list[dict[str, Any]],
        change: Callable[[Any], None] | None,
    ) -> list[Receipt]:
        # Identity and key changes are the service's own records, whoever asked for them
        # (the event's actor names the admin or the CLI).
        members = BY_SERVICE.members()
        pending = [Pending(e["event_id"], self.fingerprint(ledger, e), e, members)
                   for e in events]
        outcome = self.store.append({ledger: [pending]}, now, before=change)[ledger][0]
        assert isinstance(outcome, Accepted)  # fresh event ids: never a replay or conflict
        return outcome.receipts

    def execute(self, tx: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        return self.store.execute(tx, statement, params)

    def login_failures(self, identity_id: str, address: str) -> tuple[int, datetime | None]:
        """Failed logins since the last success and the lock, of one identity from one
        client address (0 and None when there are none)."""
        with self.store.transaction() as tx:
            row = self.execute(tx, "SELECT failures, locked_until FROM login_failures"
                               " WHERE identity_id = %s AND address = %s",
                               (identity_id, address)).fetchone()
        return (0, None) if row is None else (int(row[0]), parse_time(row[1]))

    def set_login_failures(self, tx: Any, identity_id: str, address: str, failures: int,
                           locked_until: datetime | None, now: datetime) -> None:
        """Store one address's count (a row only while there is something to remember)
        and forget the identity's locks that have run out."""
        if failures == 0 and locked_until is None:
            self.execute(tx, "DELETE FROM login_failures WHERE identity_id = %s"
                         " AND address = %s", (identity_id, address))
        else:
            self.execute(tx, "INSERT INTO login_failures (identity_id, address, failures,"
                         " locked_until) VALUES (%s, %s, %s, %s) ON CONFLICT (identity_id,"
                         " address) DO UPDATE SET failures = excluded.failures,"
                         " locked_until = excluded.locked_until",
                         (identity_id, address, failures,
                          None if locked_until is None else format_time(locked_until)))
        self.execute(tx, "DELETE FROM login_failures WHERE identity_id = %s AND failures = 0"
                     " AND locked_until < %s", (identity_id, format_time(now)))

    # -- reading --------------------------------------------------------------------

    def _identity_where(self, tx: Any, where: str, value: str) -> Identity | None:
        row = self.execute(tx, f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE {where} = %s",
                        (value,)).fetchone()
        return None if row is None else Identity.of_row(row)

    def get(self, identity_id: str) -> Identity | None:
        with self.store.transaction() as tx:
            return self._identity_where(tx, "id", identity_id)

    def by_name(self, name: str) -> Identity | None:
        with self.store.transaction() as tx:
            return self._identity_where(tx, "name", name)

    def find(self, id_or_name: str) -> Identity:
        found = self.get(id_or_name) or self.by_name(id_or_name)
        if found is None:
            raise NotFound(f"no identity {id_or_name!r}")
        return found

    def staff_ids(self, identity_id: str) -> frozenset[str]:
        """The staff ids bound to a person (empty for an application or an unbound one)."""
        with self.store.transaction() as tx:
            rows = self.execute(tx, "SELECT staff_id FROM identity_staff"
                                " WHERE identity_id = %s", (identity_id,)).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def identities(self, ledger: str | None = None) -> list[Identity]:
        with self.store.transaction() as tx:
            if ledger is None:
                rows = self.execute(tx, f"SELECT {_IDENTITY_COLUMNS} FROM identities"
                                 " ORDER BY ledger, created_at, id").fetchall()
            else:
                rows = self.execute(tx, f"SELECT {_IDENTITY_COLUMNS} FROM identities"
                                 " WHERE ledger = %s ORDER BY created_at, id", (ledger,)
                                 ).fetchall()
        return [Identity.of_row(r) for r in rows]

    def credentials(self, identity_ids: Sequence[str], kind: str = "api_key"
                    ) -> list[CredentialInfo]:
        if not identity_ids:
            return []
        marks = ",".join(["%s"] * len(identity_ids))
        with self.store.transaction() as tx:
            rows = self.execute(
                tx, "SELECT id, identity_id, kind, name, created_at, expires_at, revoked_at"
                f" FROM credentials WHERE kind = %s AND identity_id IN ({marks})"
                " ORDER BY created_at, id", (kind, *identity_ids)).fetchall()
        return [CredentialInfo(*r) for r in rows]

    def holds_valid_key(self, identity_id: str) -> bool:
        """Whether the identity holds an API key neither revoked nor expired: what lets
        an application in at all. A syslog sender (known by its certificate's name, not
        a key) is refused once its keys are revoked (docs/standard-formats.md)."""
        with self.store.transaction() as tx:
            rows = self.execute(
                tx, "SELECT expires_at, revoked_at FROM credentials"
                " WHERE identity_id = %s AND kind = 'api_key'", (identity_id,)).fetchall()
        now = self.clock()
        return any(still_valid(parse_time(expires), revoked is not None, now)
                   for expires, revoked in rows)

    def authenticate(self, secret: str) -> tuple[Caller, datetime | None] | None:
        """The caller a key or token stands for, and when the credential expires; None
        when it is unknown, revoked or expired."""
        with self.store.transaction() as tx:
            row = self.execute(
                tx, "SELECT c.id, c.expires_at, c.revoked_at, i.id, i.kind, i.ledger, i.roles,"
                " i.name FROM credentials c JOIN identities i ON i.id = c.identity_id"
                " WHERE c.secret_hash = %s", (secret_digest(secret),)).fetchone()
        if row is None:
            return None
        credential, expires_text, revoked_at, ident, kind, ledger, roles, name = row
        expires = parse_time(expires_text)
        if not still_valid(expires, revoked_at is not None, self.clock()):
            return None
        granted = parse_roles(roles)
        if not granted:
            return None
        return Caller(ident, kind, ledger, granted, name, credential), expires

    # -- administration -----------------------------------------------------------------

    def _insert_identity(self, tx: Any, ident: Identity, created_by: str) -> None:
        self.execute(
            tx, "INSERT INTO identities (id, ledger, kind, name, roles, password_hash,"
            " totp_secret, totp_last_step, failed_logins, locked_until, revision, created_at,"
            " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, NULL, 0, %s, %s)",
            (ident.id, ident.ledger, ident.kind, ident.name, format_roles(ident.roles),
             ident.password_hash, ident.totp_secret, ident.totp_last_step, ident.created_at,
             created_by))

    def _insert_key(self, tx: Any, key_id: str, identity_id: str, secret: str,
                    name: str | None, now: str, expires: str | None) -> None:
        self.execute(
            tx, "INSERT INTO credentials (id, identity_id, kind, secret_hash, name,"
            " created_at, expires_at, revoked_at) VALUES (%s, %s, 'api_key', %s, %s, %s, %s,"
            " NULL)", (key_id, identity_id, secret_digest(secret), name, now, expires))

    def _check_name_free(self, name: str | None) -> None:
        if name is not None and self.by_name(name) is not None:
            raise AccessError(f"the name {name!r} is taken")

    def _new_identity(self, ledger: str, kind: IdentityKind, roles: frozenset[str],
                      name: str | None, now: datetime, password_hash: str | None = None
                      ) -> Identity:
        prefix = "usr" if kind == "user" else "app"
        return Identity(new_id(prefix), check_ledger(ledger), kind, name, check_roles(roles),
                        password_hash, None, None, 0, None, 0, format_time(now))

    def _identity_event(self, ident: Identity, now: datetime, actor: Actor) -> dict[str, Any]:
        return self.event(
            IDENTITY_CREATED, now, actor.as_event(),
            resource={"type": "identity", "id": ident.id},
            data={"identity": ident.id, "kind": ident.kind, "name": ident.name,
                  "roles": sorted(ident.roles)})

    def _key_event(self, ident: Identity, key_id: str, name: str | None,
                   expires: str | None, now: datetime, actor: Actor) -> dict[str, Any]:
        return self.event(
            KEY_CREATED, now, actor.as_event(), resource={"type": "api_key", "id": key_id},
            data={"identity": ident.id, "name": name, "roles": sorted(ident.roles),
                  "expires_at": expires})

    def issue_key(
        self, ledger: str, roles: Sequence[str] | frozenset[str], *, name: str | None = None,
        expires_at: datetime | None = None, actor: Actor, identity_id: str | None = None,
        record: bool = True, withhold: frozenset[str] = frozenset(),
    ) -> IssuedKey:
        """A new API key: for a new application identity holding ``roles`` in ``ledger``,
        or (``identity_id``) one more key for an existing application of that ledger.

        ``record=False`` writes the rows without ledger entries: only for test fixtures
        whose ledgers must start empty (no command or route passes it). A key whose
        identity would hold any role of ``withhold`` is refused (:class:`Withheld`) before
        anything is written: the admin routes withhold the PHI-reading roles."""
        now = self.clock()
        if name is not None:
            check_name(name)
        if expires_at is not None and expires_at <= now:
            raise AccessError("the expiry must be in the future")
        if identity_id is None:
            self._check_name_free(name)
            ident = self._new_identity(ledger, "application", frozenset(roles), name, now)
            fresh = True
        else:
            found = self.get(identity_id)
            if found is None or found.ledger != ledger or found.kind != "application":
                raise NotFound(f"no application {identity_id!r} in ledger {ledger!r}")
            ident, fresh = found, False
        held = sorted(ident.roles & withhold)
        if held:
            raise Withheld(held)
        secret, key_id = new_api_key(), new_id("key")
        expires = None if expires_at is None else format_time(expires_at)
        created = format_time(now)

        def change(tx: Any) -> None:
            if fresh:
                self._insert_identity(tx, ident, actor.id)
            self._insert_key(tx, key_id, ident.id, secret, name, created, expires)

        if not record:
            with self.store.transaction() as tx:
                change(tx)
            return IssuedKey(secret, key_id, ident, expires, None)
        events = [self._identity_event(ident, now, actor)] if fresh else []
        events.append(self._key_event(ident, key_id, name, expires, now, actor))
        receipts = self.record(ident.ledger, now, events, change)
        log.info("auth.key_created", key=key_id, identity=ident.id, ledger=ident.ledger)
        return IssuedKey(secret, key_id, ident, expires, receipts[-1])

    def create_user(self, ledger: str, name: str, roles: Sequence[str] | frozenset[str],
                    password: str, *, actor: Actor, staff_ids: Sequence[str] = ()
                    ) -> tuple[Identity, Enrolment]:
        """A person: password (argon2id) and a TOTP seed, enrolled at once, so no user
        ever exists without a second factor; bound to ``staff_ids`` (the ids applications
        post for them) when given. Returns the enrolment to show once."""
        now = self.clock()
        check_name(name)
        self._check_name_free(name)
        bound = check_staff_ids(staff_ids)
        self._check_staff_free(check_ledger(ledger), bound, None)
        ident = self._new_identity(ledger, "user", frozenset(roles), name, now,
                                   _password_hash(password))
        seed = new_totp_secret()
        sealed = self.seed_seal().seal(ident.id, seed)
        ident = replace(ident, totp_secret=sealed)

        def change(tx: Any) -> None:
            self._insert_identity(tx, ident, actor.id)
            self._bind_staff(tx, ident, bound)

        events = [self._identity_event(ident, now, actor),
                  self.event(TOTP_ENROLLED, now, actor.as_event(),
                              resource={"type": "identity", "id": ident.id})]
        if bound:
            events.append(self._staff_event(ident, bound, now, actor))
        receipts = self.record(ident.ledger, now, events, change)
        log.info("auth.user_created", identity=ident.id, ledger=ident.ledger)
        return ident, Enrolment(self._uri(ident, seed), seed, receipts[-1])

    def _check_staff_free(self, ledger: str, staff_ids: list[str], owner: str | None
                          ) -> None:
        """A staff id is one person's: refuse one bound to someone else in the ledger."""
        if not staff_ids:
            return
        marks = ",".join(["%s"] * len(staff_ids))
        with self.store.transaction() as tx:
            rows = self.execute(tx, "SELECT staff_id, identity_id FROM identity_staff"
                                f" WHERE ledger = %s AND staff_id IN ({marks})",
                                (ledger, *staff_ids)).fetchall()
        taken = sorted(str(r[0]) for r in rows if r[1] != owner)
        if taken:
            raise AccessError(f"staff id(s) {', '.join(taken)} already bound to another "
                              "person of this ledger")

    def _bind_staff(self, tx: Any, ident: Identity, staff_ids: list[str]) -> None:
        self.execute(tx, "DELETE FROM identity_staff WHERE identity_id = %s", (ident.id,))
        for staff_id in staff_ids:
            self.execute(tx, "INSERT INTO identity_staff (identity_id, ledger, staff_id)"
                         " VALUES (%s, %s, %s)", (ident.id, ident.ledger, staff_id))

    def _staff_event(self, ident: Identity, staff_ids: list[str], now: datetime,
                     actor: Actor) -> dict[str, Any]:
        return self.event(STAFF_IDS_SET, now, actor.as_event(),
                          resource={"type": "identity", "id": ident.id},
                          data={"identity": ident.id, "staff_ids": staff_ids})

    def set_staff_ids(self, id_or_name: str, staff_ids: Sequence[str], *, actor: Actor,
                      ledger: str | None = None) -> Receipt:
        """Bind a person to exactly ``staff_ids`` (none: unbound), recorded as
        ``staff_ids_set`` in their ledger together with the change; ``ledger`` confines
        it (an admin's own ledger)."""
        ident = self._user(id_or_name)
        if ledger is not None and ident.ledger != ledger:
            raise NotFound(f"no identity {id_or_name!r}")
        bound = check_staff_ids(staff_ids)
        self._check_staff_free(ident.ledger, bound, ident.id)
        now = self.clock()

        def change(tx: Any) -> None:
            # The revision guard: a concurrent change to the same person fails one of them.
            cursor = self.execute(tx, "UPDATE identities SET revision = revision + 1"
                                  " WHERE id = %s AND revision = %s",
                                  (ident.id, ident.revision))
            if cursor.rowcount != 1:
                raise AccessError("the identity changed meanwhile; try again")
            self._bind_staff(tx, ident, bound)

        receipt = self.record(ident.ledger, now, [self._staff_event(ident, bound, now, actor)],
                              change)[0]
        log.info("auth.staff_ids_set", identity=ident.id, count=len(bound))
        return receipt

    def seed_seal(self) -> SeedSeal:
        if self.seeds is None:
            raise AccessError("TOTP needs the key ring, and none is configured")
        return self.seeds

    @staticmethod
    def _uri(ident: Identity, seed: str) -> str:
        return totp_uri(seed, ident.name or ident.id, f"phi-ledger {ident.ledger}")

    def _update_user(self, ident: Identity, assignments: str, params: Sequence[Any],
                     event: dict[str, Any], now: datetime) -> Receipt:
        def change(tx: Any) -> None:
            cursor = self.execute(tx, f"UPDATE identities SET {assignments},"
                               " revision = revision + 1 WHERE id = %s AND revision = %s",
                               (*params, ident.id, ident.revision))
            if cursor.rowcount != 1:
                raise AccessError("the identity changed meanwhile; try again")

        return self.record(ident.ledger, now, [event], change)[0]

    def _user(self, id_or_name: str) -> Identity:
        ident = self.find(id_or_name)
        if ident.kind != "user":
            raise AccessError(f"{id_or_name!r} is an application: applications use keys")
        return ident

    def enroll_totp(self, id_or_name: str, *, actor: Actor) -> Enrolment:
        """A new TOTP seed for a person (the old one stops working)."""
        ident = self._user(id_or_name)
        now = self.clock()
        seed = new_totp_secret()
        receipt = self._update_user(
            ident, "totp_secret = %s, totp_last_step = NULL",
            (self.seed_seal().seal(ident.id, seed),),
            self.event(TOTP_ENROLLED, now, actor.as_event(),
                        resource={"type": "identity", "id": ident.id}), now)
        return Enrolment(self._uri(ident, seed), seed, receipt)

    def set_password(self, id_or_name: str, password: str, *, actor: Actor) -> Receipt:
        ident = self._user(id_or_name)
        now = self.clock()
        return self._update_user(
            ident, "password_hash = %s", (_password_hash(password),),
            self.event(PASSWORD_SET, now, actor.as_event(),
                        resource={"type": "identity", "id": ident.id}), now)

    def unlock(self, id_or_name: str, *, actor: Actor) -> Receipt:
        ident = self._user(id_or_name)
        now = self.clock()
        event = self.event(ACCOUNT_UNLOCKED, now, actor.as_event(),
                           resource={"type": "identity", "id": ident.id})

        def change(tx: Any) -> None:
            cursor = self.execute(tx, "UPDATE identities SET failed_logins = 0,"
                                  " locked_until = NULL, revision = revision + 1"
                                  " WHERE id = %s AND revision = %s", (ident.id, ident.revision))
            if cursor.rowcount != 1:
                raise AccessError("the identity changed meanwhile; try again")
            # Every address's lock and count: the unlock lifts them all.
            self.execute(tx, "DELETE FROM login_failures WHERE identity_id = %s", (ident.id,))

        return self.record(ident.ledger, now, [event], change)[0]

    def revoke(self, credential_id: str, *, actor: Actor, ledger: str | None = None
               ) -> Receipt:
        """Revoke a key or session; ``ledger`` confines it (an admin's own ledger).
        Revoking twice is refused: the first revocation stands and is recorded once."""
        with self.store.transaction() as tx:
            row = self.execute(
                tx, "SELECT c.kind, c.revoked_at, i.id, i.ledger FROM credentials c"
                " JOIN identities i ON i.id = c.identity_id WHERE c.id = %s",
                (credential_id,)).fetchone()
        if row is None or (ledger is not None and row[3] != ledger):
            raise NotFound(f"no key {credential_id!r}")
        kind, revoked_at, identity_id, owner_ledger = row
        if revoked_at is not None:
            raise AccessError(f"{credential_id} was revoked at {revoked_at}")
        now = self.clock()

        def change(tx: Any) -> None:
            cursor = self.execute(tx, "UPDATE credentials SET revoked_at = %s"
                               " WHERE id = %s AND revoked_at IS NULL",
                               (format_time(now), credential_id))
            if cursor.rowcount != 1:
                raise AccessError(f"{credential_id} was revoked meanwhile")

        event = self.event(KEY_REVOKED, now, actor.as_event(),
                            resource={"type": kind, "id": credential_id},
                            data={"identity": identity_id})
        receipt = self.record(owner_ledger, now, [event], change)[0]
        log.info("auth.key_revoked", key=credential_id, identity=identity_id)
        return receipt
