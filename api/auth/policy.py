"""The access policy: one table of (method, route template) -> who may call it.

Deny by default. :class:`api.auth.middleware.AccessControl` looks up the rule of the route
a request matched; a route with no rule here answers 403 (and the authorisation-matrix
test, which walks the application's own route table, fails until the route gets one).
Rules for contract routes that do not exist yet are filled in ahead, so a router that
adds them is covered the moment it is included.

Templates are compared with their parameter names blanked (``/v1/patients/{}``), so a
router may call its parameter ``{id}`` or ``{patient_id}``.

Tenancy: every non-public rule confines the request to the caller's ledger. A request
naming another ledger (``?ledger=other``) is refused with 403 ``forbidden`` -- whether or
not that ledger exists, so the answer says nothing about other tenants.

Everything here is pure: the middleware does the I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from api.auth.caller import ADMIN, AUDITOR, INGEST, INVESTIGATOR, ROLES, VERIFIER, Caller


class Limit(StrEnum):
    """Which per-identity rate limit a route counts against."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"
    LOGIN = "login"
    PUBLIC = "public"


@dataclass(frozen=True)
class Rule:
    """Who may call one route. ``roles is None`` means public (no credential needed)."""

    roles: frozenset[str] | None
    limit: Limit = Limit.READ

    @property
    def public(self) -> bool:
        return self.roles is None


def allow(*roles: str, limit: Limit = Limit.READ) -> Rule:
    return Rule(frozenset(roles), limit)


PUBLIC = Rule(None, Limit.PUBLIC)
CONSOLE = Rule(None, Limit.PUBLIC)  # authenticated by the console's own session check
PHI_READERS = (AUDITOR, INVESTIGATOR)
# The chain, checkpoints and proofs: ciphertext and hashes only. Auditors (and so
# investigators) may read them too.
CHAIN_READERS = (VERIFIER, AUDITOR, INVESTIGATOR)
ANY_ROLE = tuple(sorted(ROLES))

RULES: dict[tuple[str, str], Rule] = {
    # ingest
    ("POST", "/v1/events"): allow(INGEST, limit=Limit.INGEST),
    ("POST", "/v1/events/batch"): allow(INGEST, limit=Limit.INGEST),
    # standard formats (api.routers.fhir): AuditEvents in, read back and searched (ITI-81)
    ("POST", "/fhir/AuditEvent"): allow(INGEST, limit=Limit.INGEST),
    ("POST", "/fhir"): allow(INGEST, limit=Limit.INGEST),
    ("GET", "/fhir/AuditEvent"): allow(*PHI_READERS),
    ("GET", "/fhir/AuditEvent/{}"): allow(*PHI_READERS),
    ("GET", "/fhir/metadata"): PUBLIC,
    # the chain, for verification
    ("GET", "/v1/ledger"): allow(*CHAIN_READERS),
    ("GET", "/v1/ledger/entries"): allow(*CHAIN_READERS),
    ("POST", "/v1/ledger/verify"): allow(*CHAIN_READERS),
    ("GET", "/v1/checkpoints/latest"): allow(*CHAIN_READERS),
    ("GET", "/v1/checkpoints/key"): allow(*CHAIN_READERS),
    ("GET", "/v1/checkpoints/keys"): allow(*CHAIN_READERS),
    ("GET", "/v1/checkpoints/{}"): allow(*CHAIN_READERS),
    ("GET", "/v1/proofs/inclusion"): allow(*CHAIN_READERS),
    ("GET", "/v1/proofs/consistency"): allow(*CHAIN_READERS),
    ("GET", "/v1/proofs/bundle"): allow(*CHAIN_READERS),
    # PHI: every answer is itself recorded as a `query` event
    ("GET", "/v1/patients/{}"): allow(*PHI_READERS),
    ("GET", "/v1/patients/{}/accesses"): allow(*PHI_READERS),
    ("GET", "/v1/patients/{}/disclosures"): allow(*PHI_READERS),
    ("GET", "/v1/users/{}/accesses"): allow(*PHI_READERS),
    ("POST", "/v1/investigations"): allow(INVESTIGATOR),
    ("GET", "/v1/investigations"): allow(INVESTIGATOR),
    ("GET", "/v1/investigations/{}"): allow(INVESTIGATOR),
    ("POST", "/v1/investigations/{}/amend"): allow(INVESTIGATOR),
    ("POST", "/v1/investigations/{}/close"): allow(INVESTIGATOR),
    ("GET", "/v1/investigations/{}/evidence"): allow(INVESTIGATOR),
    ("GET", "/v1/alerts"): allow(INVESTIGATOR),
    ("POST", "/v1/alerts/{}/acknowledge"): allow(INVESTIGATOR),
    ("POST", "/v1/alerts/{}/dismiss"): allow(INVESTIGATOR),
    # sessions
    ("POST", "/v1/auth/login"): Rule(None, Limit.LOGIN),
    ("POST", "/v1/auth/logout"): allow(*ANY_ROLE),
    ("GET", "/v1/auth/whoami"): allow(*ANY_ROLE),
    # administration of the caller's own ledger: identities and keys, never PHI
    ("GET", "/v1/admin/identities"): allow(ADMIN, limit=Limit.ADMIN),
    ("POST", "/v1/admin/keys"): allow(ADMIN, limit=Limit.ADMIN),
    ("DELETE", "/v1/admin/keys/{}"): allow(ADMIN, limit=Limit.ADMIN),
    ("PUT", "/v1/admin/identities/{}/staff-ids"): allow(ADMIN, limit=Limit.ADMIN),
    # operations: orchestrators and Prometheus call these without credentials; they
    # carry no PHI, no tenant data and no secret (see README, "Access control")
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    # the console: a browser carries no bearer header, so this layer lets it through;
    # the console checks its session cookie on every request and applies the rule of
    # the API route each page mirrors (api.console.web.require)
    ("GET", "/console"): CONSOLE,
    ("GET", "/console/static/console.css"): CONSOLE,
    ("GET", "/console/sign-in"): CONSOLE,
    ("POST", "/console/sign-in"): CONSOLE,
    ("POST", "/console/sign-out"): CONSOLE,
    ("GET", "/console/purpose"): CONSOLE,
    ("POST", "/console/purpose"): CONSOLE,
    ("GET", "/console/patients"): CONSOLE,
    ("GET", "/console/patients/{}"): CONSOLE,
    ("GET", "/console/patients/{}/accounting"): CONSOLE,
    ("GET", "/console/users"): CONSOLE,
    ("GET", "/console/users/{}"): CONSOLE,
    ("GET", "/console/ledger"): CONSOLE,
    ("POST", "/console/ledger/verify"): CONSOLE,
    ("GET", "/console/alerts"): CONSOLE,
    ("POST", "/console/alerts/{}/{}"): CONSOLE,
    ("GET", "/console/investigations"): CONSOLE,
    ("POST", "/console/investigations"): CONSOLE,
    ("GET", "/console/investigations/{}"): CONSOLE,
    ("GET", "/console/investigations/{}/evidence"): CONSOLE,
    # the API's own description
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/docs/assets/{}"): PUBLIC,
}

_PARAMETER = re.compile(r"\{[^}]*\}")


def shape(template: str) -> str:
    """A route template with its parameter names blanked: ``/v1/patients/{}``."""
    return _PARAMETER.sub("{}", template)


def rule_for(method: str, template: str, rules: dict[tuple[str, str], Rule] = RULES
             ) -> Rule | None:
    """The rule for a route, or None: no rule, no access. HEAD is judged as GET."""
    method = "GET" if method == "HEAD" else method
    return rules.get((method, shape(template)))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOWED = Decision(True)


def decide(rule: Rule, caller: Caller, requested_ledgers: list[str]) -> Decision:
    """May ``caller`` make a request the ``rule`` governs, naming ``requested_ledgers``
    in its ``ledger`` parameter (empty when it names none)?"""
    if rule.roles is None:
        return ALLOWED
    if not caller.has_any(rule.roles):
        # Naming the roles that would do tells the caller what key to ask for; the rule
        # table is public knowledge (docs/contract.md), so it reveals nothing.
        return Decision(False, "your roles do not allow this request; allowed: "
                        + ", ".join(sorted(rule.roles)))
    if any(name != caller.ledger for name in requested_ledgers):
        return Decision(False, "you may only use your own ledger")
    return ALLOWED
