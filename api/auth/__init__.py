"""Access control: who may call what, for which ledger (issue 5).

* :mod:`api.auth.caller` -- the authenticated :class:`Caller` and the roles.
* :mod:`api.auth.policy` -- the one policy table, (method, route) -> roles; pure.
* :mod:`api.auth.credentials` -- keys, tokens, passwords, TOTP, lockout; pure rules.
* :mod:`api.auth.limits` -- token-bucket rate limits; pure rule, in-memory buckets.
* :mod:`api.auth.identities` -- the identity tables and the ledger entries recording them.
* :mod:`api.auth.sessions` -- logins (password, TOTP, lockout) and logouts.
* :mod:`api.auth.sealing` -- TOTP seeds sealed at rest.
* :mod:`api.auth.openapi` -- the policy as the OpenAPI schema shows it.
* :mod:`api.auth.access` -- one process's authenticator: cache and meters.
* :mod:`api.auth.middleware` -- enforcement in front of every route; security headers.
"""

from api.auth.caller import ROLES, Caller

__all__ = ["ROLES", "Caller"]
