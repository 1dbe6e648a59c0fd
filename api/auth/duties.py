"""Separation of duties: an admin manages identities and keys, and never reaches PHI.

An admin who could mint a key for an identity that reads PHI (or create one) could read
PHI under that identity's name. So through the API an admin may not give anyone a
PHI-reading role, nor a key for an identity that holds one; an operator does that with
``phi-ledger admin create-key`` / ``create-user``, which need the database itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from api.auth.policy import PHI_READERS

# The roles the policy table lets read PHI: taken from that table, so a role given
# PHI routes there is withheld from admins here too.
PHI_READING_ROLES: frozenset[str] = frozenset(PHI_READERS)

OPERATOR_ONLY = "operator_only"


def phi_reading(roles: Iterable[str]) -> list[str]:
    """The PHI-reading roles among ``roles``, sorted (empty when an admin may grant them)."""
    return sorted(set(roles) & PHI_READING_ROLES)


def operator_only_message(held: list[str]) -> str:
    """Why an admin was refused: names roles, never a submitted value."""
    return (f"the role(s) {', '.join(held)} read PHI: an admin cannot grant them or give a "
            "key to an identity holding them through the API; an operator does it with "
            "`phi-ledger admin create-key` or `phi-ledger admin create-user` on the host")
