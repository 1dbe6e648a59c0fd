"""Who is asking: the authenticated caller of a request, and the roles there are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Deny by default: a role grants exactly what the policy table (api.auth.policy) lists
# for it, and nothing else.
INGEST = "ingest"  # posts events, nothing else
AUDITOR = "auditor"  # views and reports (PHI, each read recorded)
INVESTIGATOR = "investigator"  # auditor plus investigations and alerts
VERIFIER = "verifier"  # head, entries, checkpoints, proofs: ciphertext only, no PHI
ADMIN = "admin"  # identities and keys of its own ledger; no PHI
ROLES: frozenset[str] = frozenset({INGEST, AUDITOR, INVESTIGATOR, VERIFIER, ADMIN})

IdentityKind = Literal["user", "application"]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated identity, as every handler sees it in ``request.state.caller``.

    Guarantees: the credential it came from was valid (known, not revoked, not expired)
    when the request arrived; ``ledger`` is the only ledger the request may read or
    append to; ``roles`` is non-empty and a subset of :data:`ROLES`. Holds no secret.
    """

    id: str
    kind: IdentityKind
    ledger: str
    roles: frozenset[str]
    name: str | None = None
    # The API key or login session the request presented (its public id, never the
    # secret): logout ends exactly this session; events name it as the session.
    credential: str | None = None

    def has_any(self, roles: frozenset[str]) -> bool:
        return not self.roles.isdisjoint(roles)


def parse_roles(text: str) -> frozenset[str]:
    """Roles as stored (space separated) back to a set; unknown names are dropped, so a
    row edited by hand can never grant a role the policy does not know."""
    return frozenset(text.split()) & ROLES


def format_roles(roles: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(roles))
