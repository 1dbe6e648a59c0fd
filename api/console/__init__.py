"""The console: web pages under ``/console`` for auditors, privacy officers and incident
responders -- sign-in with password and TOTP, patients, users, the ledger -- drawn on the
server (Jinja2 templates, SVG pictures, one stylesheet, no script), reading through the
same services as the JSON API."""

from __future__ import annotations

from fastapi import FastAPI

from api.console.pages import router, stop_handler
from api.console.web import Stop


def install(app: FastAPI) -> None:
    """Add the console's routes to ``app``."""
    app.include_router(router)
    app.add_exception_handler(Stop, stop_handler)
