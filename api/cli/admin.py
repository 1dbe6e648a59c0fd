"""``phi-ledger admin ...``: identities and keys from the command line.

There is no default password and no default key: the first admin, and every identity
after it, is made here by someone with access to the database. Each command records
what it did in the identity's ledger (``identity_created``, ``key_created``, ...), with
``--actor`` (default ``operator``) as the one who did it.

Secrets are printed once, on stdout, and nowhere else: ``create-key`` prints the key
alone on the last line (scripts take ``| tail -1``); ``create-user`` and
``enroll-totp`` print the ``otpauth://`` URI for the person's authenticator app alone on
the last line. Passwords are read from a prompt (or, with ``--password-stdin``, from
standard input), never from the command line, where ``ps`` and shell history see them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from api.auth.caller import ROLES
from ledger.settings import Settings

if TYPE_CHECKING:
    from api.auth.identities import Identities

admin_app = typer.Typer(help="Identities and API keys (access control).",
                        no_args_is_help=True)
err = Console(stderr=True)

RoleOption = Annotated[list[str], typer.Option(
    "--role", "-r", help=f"A role (repeat for several): {', '.join(sorted(ROLES))}.")]
LedgerOption = Annotated[str | None, typer.Option(
    "--ledger", "-l", help="The identity's ledger (tenant); default: 'default'.")]
ActorOption = Annotated[str, typer.Option(help="Who does this, as the ledger records it.")]
StaffOption = Annotated[list[str] | None, typer.Option(
    "--staff-id", help="A staff id this person acts as: the actor.id applications post for "
    "them (the staff_id of staff_added); repeat for several. Nobody triages an alert about "
    "their own staff ids.")]
PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from standard input (one line).")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]phi-ledger:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


@contextmanager
def _identities() -> Iterator[Identities]:
    """The identity tables of the configured database (migrated first), with the key
    ring for TOTP seeds; a missing or wrong key ring is one line, not a traceback."""
    from api.auth.identities import AccessError, Identities
    from api.auth.sealing import SeedSeal
    from ledger.clock import utc_now
    from ledger.crypto.keyring import KeyRingError
    from ledger.logs import configure_logging
    from ledger.migrate import migrate
    from ledger.protection import load_key_ring, protection_from_settings
    from ledger.store import StoreUnavailable, open_store

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)  # stderr: stdout is the answer
    try:
        migrate(settings.database_url)
        store = open_store(settings.database_url)
    except StoreUnavailable as error:
        raise _fail(str(error)) from None
    try:
        protection = protection_from_settings(settings, store)
        ring = getattr(protection, "ring", None)
        seeds = SeedSeal(lambda: ring if ring is not None else load_key_ring(settings, store))
        yield Identities(store, utc_now, fingerprint=protection.fingerprint, seeds=seeds,
                         session_minutes=settings.session_minutes)
    except KeyRingError as error:
        raise _fail(str(error)) from None
    except AccessError as error:
        raise _fail(str(error)) from None
    except StoreUnavailable as error:
        raise _fail(str(error)) from None
    finally:
        store.close()


def _ledger(ledger: str | None) -> str:
    return ledger or Settings.from_env().default_ledger


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@admin_app.command("create-key")
def create_key(
    role: RoleOption,
    ledger: LedgerOption = None,
    name: Annotated[str | None, typer.Option(help="A name for the application.")] = None,
    expires_in_days: Annotated[float | None, typer.Option(
        min=0.0, help="The key stops working after this many days.")] = None,
    identity: Annotated[str | None, typer.Option(
        help="One more key for this existing application (key rotation).")] = None,
    actor: ActorOption = "operator",
) -> None:
    """Create an API key (for a new application identity holding the roles); print the
    key alone on the last line of stdout. It is shown once: the service keeps a hash."""
    from ledger.clock import utc_now

    expires = None if expires_in_days is None else utc_now() + timedelta(days=expires_in_days)
    from api.auth.identities import Actor

    with _identities() as identities:
        issued = identities.issue_key(_ledger(ledger), role, name=name, expires_at=expires,
                                      actor=Actor(actor), identity_id=identity)
    who = issued.identity
    typer.echo(f"identity {who.id}{f' ({who.name})' if who.name else ''} in ledger "
               f"{who.ledger}, roles {', '.join(sorted(who.roles))}; key {issued.key_id}"
               f"{f', expires {issued.expires_at}' if issued.expires_at else ''}")
    typer.echo("the key, shown once:")
    typer.echo(issued.secret)


@admin_app.command("create-user")
def create_user(
    name: Annotated[str, typer.Option(help="The person's login name.")],
    role: RoleOption,
    ledger: LedgerOption = None,
    password_stdin: PasswordStdin = False,
    actor: ActorOption = "operator",
    staff_id: StaffOption = None,
) -> None:
    """Create a person: password (argon2id) and TOTP enrolled at once. Prints the
    otpauth:// URI for their authenticator app alone on the last line (shown once)."""
    password = _password(password_stdin)
    from api.auth.identities import Actor

    with _identities() as identities:
        ident, enrolment = identities.create_user(_ledger(ledger), name, role, password,
                                                  actor=Actor(actor),
                                                  staff_ids=staff_id or [])
    bound = f", acting as staff {', '.join(sorted(set(staff_id)))}" if staff_id else ""
    typer.echo(f"user {ident.id} ({ident.name}) in ledger {ident.ledger}, roles "
               f"{', '.join(sorted(ident.roles))}{bound}")
    typer.echo("enrol this in an authenticator app (shown once):")
    typer.echo(enrolment.uri)


@admin_app.command("enroll-totp")
def enroll_totp(
    user: Annotated[str, typer.Argument(help="The person's name or id.")],
    actor: ActorOption = "operator",
) -> None:
    """Give a person a new TOTP seed (the old one stops working); print the otpauth://
    URI alone on the last line."""
    from api.auth.identities import Actor

    with _identities() as identities:
        enrolment = identities.enroll_totp(user, actor=Actor(actor))
    typer.echo(f"new TOTP seed for {user}, recorded at seq {enrolment.receipt.seq}; enrol:")
    typer.echo(enrolment.uri)


@admin_app.command("set-password")
def set_password(
    user: Annotated[str, typer.Argument(help="The person's name or id.")],
    password_stdin: PasswordStdin = False,
    actor: ActorOption = "operator",
) -> None:
    """Set a person's password."""
    password = _password(password_stdin)
    from api.auth.identities import Actor

    with _identities() as identities:
        receipt = identities.set_password(user, password, actor=Actor(actor))
    typer.echo(f"password set for {user}; recorded at seq {receipt.seq}")


@admin_app.command("set-staff-ids")
def set_staff_ids(
    user: Annotated[str, typer.Argument(help="The person's name or id.")],
    staff_id: StaffOption = None,
    actor: ActorOption = "operator",
) -> None:
    """Bind a person to exactly these staff ids (none given: unbind them all); recorded
    as staff_ids_set in their ledger."""
    from api.auth.identities import Actor

    with _identities() as identities:
        receipt = identities.set_staff_ids(user, staff_id or [], actor=Actor(actor))
    typer.echo(f"{user} acts as staff {', '.join(sorted(set(staff_id or []))) or '(none)'};"
               f" recorded at seq {receipt.seq}")


@admin_app.command("unlock")
def unlock(
    user: Annotated[str, typer.Argument(help="The person's name or id.")],
    actor: ActorOption = "operator",
) -> None:
    """Lift a lockout before it expires."""
    from api.auth.identities import Actor

    with _identities() as identities:
        receipt = identities.unlock(user, actor=Actor(actor))
    typer.echo(f"{user} unlocked; recorded at seq {receipt.seq}")


@admin_app.command("revoke-key")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (key-...) or a session's.")],
    actor: ActorOption = "operator",
) -> None:
    """Revoke an API key or a login session. Running services stop accepting it within
    a few seconds (they cache a valid credential for 2 s)."""
    from api.auth.identities import Actor

    with _identities() as identities:
        receipt = identities.revoke(key_id, actor=Actor(actor))
    typer.echo(f"{key_id} revoked; recorded at seq {receipt.seq}")


@admin_app.command("list")
def list_identities(ledger: LedgerOption = None) -> None:
    """Identities and their API keys (never a secret); every ledger without --ledger."""
    with _identities() as identities:
        found = identities.identities(ledger)
        keys = identities.credentials([i.id for i in found])
        staff_of = {i.id: identities.staff_ids(i.id) for i in found}
    by_owner: dict[str, list[Any]] = {}
    for key in keys:
        by_owner.setdefault(key.identity_id, []).append(key)
    for ident in found:
        state = ""
        if ident.locked_until is not None:
            state = f" locked until {ident.locked_until.isoformat()}"
        staff = staff_of[ident.id]
        acts = f" staff {','.join(sorted(staff))}" if staff else ""
        typer.echo(f"{ident.ledger}\t{ident.id}\t{ident.kind}\t{ident.name or '-'}\t"
                   f"{','.join(sorted(ident.roles))}{state}{acts}")
        for key in by_owner.get(ident.id, []):
            status = f"revoked {key.revoked_at}" if key.revoked_at else (
                f"expires {key.expires_at}" if key.expires_at else "active")
            typer.echo(f"\t{key.id}\t{key.name or '-'}\t{status}")
