"""The console's edge: who is signed in, what they may see, and how pages are drawn.

A console page is governed by the rule of the API route it mirrors
(:data:`api.auth.policy.RULES`): the same roles, the same tenant confinement, the same
per-identity rate limit. The bearer layer (:class:`api.auth.middleware.AccessControl`)
lets ``/console`` through as public because a browser carries no bearer header; the
session cookie is checked here instead, on every request, by the same authenticator.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from api.audit_reads import PURPOSES as PURPOSE_CODES
from api.auth.caller import Caller
from api.auth.limits import retry_after
from api.auth.middleware import client_address
from api.auth.policy import RULES, Rule, decide
from api.console.session import (
    PURPOSE,
    SESSION,
    cookie_header,
    cookie_name,
    csrf_ok,
    csrf_token,
    purpose_of,
)
from api.services import Services
from projections.accounting import PURPOSES as PURPOSE_STATEMENTS

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# No script at all, styles only from the service itself, forms only to itself.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
       " frame-ancestors 'none'; base-uri 'none'")

environment = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
    trim_blocks=True, lstrip_blocks=True,
)


def purpose_label(code: str | None) -> str:
    if not code:
        return "not chosen"
    return f"{code} - {PURPOSE_STATEMENTS[code]}" if code in PURPOSE_STATEMENTS else code


environment.globals["purpose_label"] = purpose_label
environment.globals["quote"] = lambda value: quote(str(value), safe="")


class Stop(Exception):
    """Ends a console request with ``response`` (a redirect to sign-in, a refusal)."""

    def __init__(self, response: Response) -> None:
        super().__init__("console stop")
        self.response = response


@dataclass(frozen=True)
class Viewer:
    """The signed-in person, as a page sees them."""

    caller: Caller
    secret: str
    purpose: str | None
    secure: bool

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret)


def secure_request(request: Request) -> bool:
    return request.url.scheme == "https"


def here(request: Request) -> str:
    """The path and query of this request, to come back to after sign-in."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def render(request: Request, template: str, status: int = 200,
           viewer: Viewer | None = None, **context: Any) -> HTMLResponse:
    html = environment.get_template(template).render(
        viewer=viewer, here=here(request), **context)
    return HTMLResponse(html, status, headers={"Content-Security-Policy": CSP})


def page_link(path: str, **params: Any) -> str:
    """``path`` with the given query parameters (None and empty ones left out)."""
    kept = {k.rstrip("_"): v for k, v in params.items() if v not in (None, "")}
    return path + (f"?{urlencode(kept)}" if kept else "")


environment.globals["page_link"] = page_link


def to_sign_in(request: Request, *, expired: bool, secure: bool) -> RedirectResponse:
    target = page_link("/console/sign-in", next=here(request) if request.method == "GET"
                       else "/console", expired="1" if expired else None)
    response = RedirectResponse(target, 303)
    if expired:
        response.headers.append("set-cookie", cookie_header(SESSION, None, secure))
    return response


def services_of(request: Request) -> Services:
    return request.app.state.services


async def viewer_of(request: Request) -> Viewer | None:
    """The signed-in person, or None (no cookie, or a session unknown, ended or
    expired). Only a person's login session counts: never an API key."""
    secure = secure_request(request)
    secret = request.cookies.get(cookie_name(SESSION, secure))
    if not secret or len(secret) > 512 or not secret.isascii():
        return None
    caller = await services_of(request).access.authenticate(secret)
    if caller is None or caller.kind != "user" or not (caller.credential or "").startswith(
            "ses-"):
        return None
    purpose = purpose_of(request.cookies.get(cookie_name(PURPOSE, secure)),
                         caller.credential or "", frozenset(PURPOSE_CODES))
    return Viewer(caller, secret, purpose, secure)


def may(viewer: Viewer, method: str, api_route: str) -> bool:
    """Whether the viewer's roles allow the API route (without counting a request)."""
    return decide(RULES[(method, api_route)], viewer.caller, []).allowed


async def require(request: Request, method: str, api_route: str) -> Viewer:
    """The signed-in viewer allowed to do what ``method api_route`` does in the API;
    counted against the same rate limit. Otherwise :class:`Stop` with the answer."""
    viewer = await viewer_of(request)
    secure = secure_request(request)
    if viewer is None:
        had_cookie = cookie_name(SESSION, secure) in request.cookies
        raise Stop(to_sign_in(request, expired=had_cookie, secure=secure))
    rule: Rule = RULES[(method, api_route)]
    decision = decide(rule, viewer.caller, [])
    if not decision.allowed:
        raise Stop(render(request, "error.html", 403, viewer, title="Not allowed",
                          message="Your roles do not allow this page."))
    access = services_of(request).access
    wait = access.wait(rule.limit.value, viewer.caller.id)
    if wait:
        response = render(request, "error.html", 429, viewer, title="Too many requests",
                          message="Too many requests; wait a moment and try again.")
        response.headers["Retry-After"] = retry_after(wait)
        raise Stop(response)
    return viewer


def require_purpose(request: Request, viewer: Viewer) -> str:
    """The purpose chosen for this session, or :class:`Stop` asking for one."""
    if viewer.purpose is None:
        raise Stop(RedirectResponse(page_link("/console/purpose", next=here(request)), 303))
    return viewer.purpose


async def require_csrf(request: Request, secret: str | None) -> dict[str, str]:
    """The posted form, once its CSRF token matches ``secret``'s; else 400."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(secret, fields.get("csrf")):
        raise Stop(render(request, "error.html", 400, None, title="Form expired",
                          message="This form's security token is missing or out of date "
                                  "(CSRF check). Go back, reload the page and try again."))
    return fields


def client_of(request: Request) -> str:
    return client_address(request.scope)

# -- the accounting letter under its own CSP ---------------------------------------------

_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


def letter_csp(html: str) -> str:
    """A CSP for a page whose only style is its inline ``<style>`` block: that block is
    allowed by its SHA-256 (no ``unsafe-inline``), nothing else is."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode()
        + "'" for m in _STYLE.finditer(html))
    return (f"default-src 'none'; style-src {hashes or chr(39) + 'none' + chr(39)};"
            " frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def markup(svg: str) -> Markup:
    """SVG made by :mod:`api.console.pictures` (which escapes its data) for a template."""
    return Markup(svg)  # built from escaped parts only
