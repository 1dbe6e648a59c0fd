"""``phi-ledger investigations ...``: breach investigations from the command line, against
the database directly (no server needed), with the same rules as the HTTP API.

The responder is named with ``--as`` (default: the login name) and recorded as
``cli:<name>`` with the investigator role on every entry the command writes, including the
``query`` entries of the patients an answer shows.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from api.cli.common import fail

investigations_app = typer.Typer(
    help="Breach investigations: open, amend, show (timeline, affected, duties), close,"
    " evidence.", no_args_is_help=True)

T = TypeVar("T")
AsOption = Annotated[str | None, typer.Option(
    "--as", help="Who is investigating (recorded as cli:NAME); default: your login name.")]
LedgerOption = Annotated[str | None, typer.Option("--ledger", "-l", help="The ledger.")]
Many = Annotated[list[str] | None, typer.Option()]


def _run(work: Callable[[Any, str, Any], Coroutine[Any, Any, T]], ledger: str | None,
         who: str | None) -> T:
    """Run ``work(service, ledger, reader)`` with the views caught up first."""
    from api.access_reports import Reader
    from api.app import build_services
    from api.errors import ApiError
    from api.investigations import InvestigationService
    from ledger.settings import Settings

    settings = Settings.from_env()
    svc = build_services(settings)
    reader = Reader(f"cli:{who or getpass.getuser()}", "user", "investigator")
    try:
        svc.projector.catch_up()
        return asyncio.run(work(InvestigationService(svc), ledger or settings.default_ledger,
                                reader))
    except ApiError as error:
        raise fail(f"{error.message} ({', '.join(error.fields)})") from None
    finally:
        svc.writer.stop()
        svc.store.close()


def _validated(model: Any, body: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as error:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in error.errors()})
        raise fail(f"invalid: {', '.join(fields)}") from None


def _scope(actor: list[str] | None, device: list[str] | None, ip: list[str] | None,
           patient: list[str] | None, since: str | None, until: str | None
           ) -> dict[str, Any]:
    scope: dict[str, Any] = {}
    for key, values in (("actors", actor), ("devices", device), ("ips", ip),
                        ("patients", patient)):
        if values:
            scope[key] = values
    if since is not None:
        scope["from"] = since
    if until is not None:
        scope["to"] = until
    return scope


def _write(data: bytes | str, output: Path | None) -> None:
    raw = data.encode() if isinstance(data, str) else data
    if output is None:
        sys.stdout.buffer.write(raw + (b"" if raw.endswith(b"\n") else b"\n"))
        sys.stdout.flush()
    else:
        output.write_bytes(raw)
        typer.echo(f"wrote {output}")


@investigations_app.command("open")
def open_(
    title: Annotated[str, typer.Option(help="What happened (no PHI: stored in clear).")],
    discovered_at: Annotated[str, typer.Option(help="When the breach was discovered"
                                               " (RFC 3339); the duties' clock starts here.")],
    since: Annotated[str, typer.Option("--from", help="Scope start (RFC 3339, inclusive).")],
    until: Annotated[str | None, typer.Option("--to", help="Scope end (exclusive).")] = None,
    actor: Many = None, device: Many = None, ip: Many = None, patient: Many = None,
    note: Annotated[str | None, typer.Option(help="A first note.")] = None,
    ledger: LedgerOption = None, who: AsOption = None,
) -> None:
    """Open an investigation over actors, devices, IPs and/or patients in a time window;
    prints its id alone on the last line."""
    from api.routers.investigations import OpenIn, scope_dict

    body = _validated(OpenIn, {"title": title, "discovered_at": discovered_at, "note": note,
                               "scope": _scope(actor, device, ip, patient, since, until)})
    scope = scope_dict(body.scope)
    _check(scope)

    async def work(service: Any, name: str, reader: Any) -> str:
        investigation_id, receipt = await service.open(name, reader, body.title,
                                                       body.discovered_at, scope, body.note)
        typer.echo(f"opened at seq {receipt.seq}")
        return str(investigation_id)

    typer.echo(_run(work, ledger, who))


def _check(scope: dict[str, Any]) -> None:
    from api.errors import ApiError
    from api.routers.investigations import check_scope

    try:
        check_scope(scope, partial=False)
    except ApiError as error:
        raise fail(f"{error.message} ({', '.join(error.fields)})") from None


@investigations_app.command("amend")
def amend(
    investigation_id: str,
    since: Annotated[str | None, typer.Option("--from")] = None,
    until: Annotated[str | None, typer.Option("--to")] = None,
    actor: Many = None, device: Many = None, ip: Many = None, patient: Many = None,
    note: Annotated[str | None, typer.Option()] = None,
    ledger: LedgerOption = None, who: AsOption = None,
) -> None:
    """Replace scope lists or bounds (those given) and/or add a note."""
    from api.routers.investigations import AmendIn, scope_dict

    scope = _scope(actor, device, ip, patient, since, until)
    body = _validated(AmendIn, {"scope": scope or None, "note": note})
    if not scope and not note:
        raise fail("give a scope change or a note")

    async def work(service: Any, name: str, reader: Any) -> int:
        receipt = await service.amend(name, reader, investigation_id,
                                      scope_dict(body.scope) if body.scope else {}, body.note)
        return int(receipt.seq)

    typer.echo(f"amended at seq {_run(work, ledger, who)}")


@investigations_app.command("list")
def list_(ledger: LedgerOption = None) -> None:
    """Every investigation of the ledger (JSON)."""

    async def work(service: Any, name: str, _: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(service.list, name)

    _write(orjson.dumps(_run(work, ledger, None), option=orjson.OPT_INDENT_2), None)


@investigations_app.command("show")
def show(
    investigation_id: str,
    purpose: Annotated[str, typer.Option(help="Why you are looking (e.g. HOPERAT, LEGAL).")],
    as_of: Annotated[str | None, typer.Option(help="Answer as the ledger stood then.")] = None,
    format: Annotated[str, typer.Option(help="json, csv or html.")] = "json",
    output: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
    ledger: LedgerOption = None, who: AsOption = None,
) -> None:
    """The whole answer: duties, counts, affected patients and timeline (every patient
    shown is recorded as read under PURPOSE)."""
    from api.investigation_report import as_csv, as_html
    from api.routers.audit import PURPOSES
    from projections.instants import parse_bound

    if purpose not in PURPOSES:
        raise fail("--purpose must be an HL7 PurposeOfUse code (e.g. HOPERAT)")
    if format not in ("json", "csv", "html"):
        raise fail("--format must be json, csv or html")
    try:
        as_of_utc = None if as_of is None else parse_bound(as_of)
    except ValueError:
        raise fail("--as-of must be an RFC 3339 time with an offset") from None

    async def work(service: Any, name: str, reader: Any) -> bytes | str:
        answer = await service.answer(name, investigation_id, as_of_utc)
        timeline, items, shown = await asyncio.to_thread(
            service.open_page, answer, answer.rows, answer.patients)
        await service.record_reads(name, reader, shown, purpose)
        if format == "csv":
            return str(as_csv(timeline, items))
        if format == "html":
            latest = service.svc.tlog.latest(name) if service.svc.tlog else None
            return str(as_html(answer.head(), timeline, items,
                               service.svc.clock().isoformat(),
                               None if latest is None else latest.note))
        return bytes(orjson.dumps({**answer.head(), "affected": items,
                                   "timeline": timeline}, option=orjson.OPT_INDENT_2))

    _write(_run(work, ledger, who), output)


@investigations_app.command("close")
def close(
    investigation_id: str,
    outcome: Annotated[str, typer.Option(help="breach or not_a_breach")],
    nature: Annotated[str, typer.Option(help="Factor 1: nature and extent of the PHI.")],
    recipient: Annotated[str, typer.Option(help="Factor 2: who used or received it.")],
    mitigation: Annotated[str, typer.Option(help="Factor 4: how far the risk was"
                                            " mitigated.")],
    acquired: Annotated[bool | None, typer.Option(
        "--acquired/--not-acquired",
        help="Factor 3; default: pre-filled from the entries.")] = None,
    note: Annotated[str | None, typer.Option(help="A closing note (no PHI: stored in"
                                             " clear).")] = None,
    ledger: LedgerOption = None, who: AsOption = None,
) -> None:
    """Close with the outcome and the four-factor risk assessment of 45 CFR 164.402."""
    from api.routers.investigations import CloseIn

    body = _validated(CloseIn, {"outcome": outcome, "note": note, "risk_assessment": {
        "nature_and_extent": nature, "recipient": recipient, "mitigation": mitigation,
        "acquired_or_viewed": acquired}})

    async def work(service: Any, name: str, reader: Any) -> int:
        receipt = await service.close(name, reader, investigation_id, body.outcome,
                                      body.risk_assessment.model_dump(), body.note)
        return int(receipt.seq)

    typer.echo(f"closed at seq {_run(work, ledger, who)}")


@investigations_app.command("evidence")
def evidence(
    investigation_id: str,
    output: Annotated[Path, typer.Option(help="Where to write the evidence file.")],
    ledger: LedgerOption = None,
) -> None:
    """Sign a checkpoint of the ledger as it stands, then write the evidence file:
    every in-scope entry as stored with its inclusion proof
    (check it with `phi-ledger verify-proof FILE --key KEY`)."""

    async def work(service: Any, name: str, _: Any) -> bytes:
        if service.svc.tlog is not None and service.svc.tlog.identity is not None:
            await asyncio.to_thread(service.svc.tlog.sign, name)
        return bytes(await asyncio.to_thread(service.evidence, name, investigation_id))

    _write(_run(work, ledger, None), output)
