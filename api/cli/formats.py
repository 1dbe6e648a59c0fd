"""``phi-ledger syslog`` (the ATNA listeners) and ``phi-ledger dead-letters``."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Annotated, Any

import typer

from ledger.logs import configure_logging
from ledger.settings import Settings

dead_app = typer.Typer(help="ATNA messages that could not be mapped: list and replay.",
                       no_args_is_help=True)


def register(app: typer.Typer, fail: Any) -> None:
    @app.command()
    def syslog(
        tls: Annotated[str | None, typer.Option(help="host:port for RFC 5425 (TLS); "
                                                     "default LEDGER_SYSLOG_TLS.")] = None,
        udp: Annotated[str | None, typer.Option(help="host:port for RFC 5426 (UDP); "
                                                     "default LEDGER_SYSLOG_UDP.")] = None,
    ) -> None:
        """Receive IHE ATNA audit messages over syslog until stopped (SIGTERM, Ctrl-C)."""
        from dataclasses import replace

        from api.app import build_services
        from api.syslog.service import start_listeners
        from ledger.runtime import allow_open_files

        settings = Settings.from_env()
        settings = replace(settings, syslog_tls=tls or settings.syslog_tls,
                           syslog_udp=udp or settings.syslog_udp)
        if not settings.syslog_tls and not settings.syslog_udp:
            raise fail("say where to listen: --tls host:port and/or --udp host:port")
        configure_logging(settings.log_format, settings.log_level)
        allow_open_files()
        svc = build_services(settings)

        async def run() -> None:
            listeners = await start_listeners(svc)
            assert listeners is not None
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            typer.echo(f"listening tls={settings.syslog_tls} udp={settings.syslog_udp}",
                       err=True)
            await stop.wait()
            await listeners.close()

        try:
            asyncio.run(run())
        except ValueError as error:
            raise fail(str(error)) from None
        finally:
            svc.writer.stop()
            svc.store.close()

    app.add_typer(dead_app, name="dead-letters")


@dead_app.command("list")
def list_letters(
    ledger: Annotated[str | None, typer.Option(help="Only this ledger.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replayed letters too.")] = False,
) -> None:
    """The dead letters as NDJSON (id, ledger, received_at, format, sender, sha256,
    reason, replayed_seq): never their contents."""
    from api.syslog.dead_letters import DeadLetters
    from ledger.migrate import migrate
    from ledger.store import open_store

    settings = Settings.from_env()
    migrate(settings.database_url)
    store = open_store(settings.database_url)
    try:
        for letter in DeadLetters(store, None).letters(ledger, include_replayed=all_):
            typer.echo(json.dumps(letter.as_dict(), sort_keys=True))
    finally:
        store.close()


@dead_app.command("replay")
def replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Letter ids; default: every open "
                                                         "letter.")] = None,
) -> None:
    """Map dead letters again (after a fix, e.g. LEDGER_FORMATS_DEFAULT_PURPOSE set):
    each that now maps becomes an entry; the others keep their (updated) reason."""
    from api.app import build_services
    from api.syslog.service import intake_of

    svc = build_services(Settings.from_env())
    try:
        intake = intake_of(svc)
        chosen = ids or [d.id for d in intake.dead_letters.letters()]
        done = 0
        failed = 0
        for letter_id in chosen:
            try:
                seq = intake.replay(letter_id)
            except KeyError:
                failed += 1
                typer.echo(json.dumps({"id": letter_id, "error": "no such letter"}))
                continue
            except Exception as error:  # one letter (its key gone, ...) stops no other
                failed += 1
                typer.echo(json.dumps({"id": letter_id, "error": type(error).__name__}))
                continue
            typer.echo(json.dumps({"id": letter_id, "seq": seq}))
            done += seq is not None
        typer.echo(f"replayed {done} of {len(chosen)}", err=True)
        if failed:
            raise typer.Exit(1)
    finally:
        svc.writer.stop()
        svc.store.close()
