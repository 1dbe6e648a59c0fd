"""The policy, as the OpenAPI schema shows it: who may call each operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from api.auth.policy import rule_for

BEARER = {
    "type": "http", "scheme": "bearer",
    "description": "An API key (`phk_...`, from `phi-ledger admin create-key` or "
    "`POST /v1/admin/keys`) or a session token (`pht_...`, from `POST /v1/auth/login`).",
}


def document_access(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """Wrap ``app.openapi`` so each operation names its roles and the bearer scheme
    (public ones say they need none), read from the same table that is enforced."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema and app.openapi_schema.get("x-access-documented"):
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = BEARER
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if not isinstance(operation, dict):
                    continue
                rule = rule_for(method.upper(), path)
                if rule is None or rule.public:
                    operation["security"] = []
                    note = "**Access:** public." if rule else "**Access:** nobody (no rule)."
                else:
                    operation["security"] = [{"bearer": []}]
                    roles = ", ".join(f"`{r}`" for r in sorted(rule.roles or ()))
                    note = (f"**Access:** roles {roles}; confined to the caller's own "
                            "ledger. 401 without a valid credential, 403 for other roles "
                            "or another ledger, 429 beyond the rate limit.")
                described = operation.get("description")
                operation["description"] = f"{described}\n\n{note}" if described else note
        schema["x-access-documented"] = True
        app.openapi_schema = schema
        return schema

    return openapi
