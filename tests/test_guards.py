"""Single guards a mutation once removed without any test noticing: each test here fails
when its guard is deleted or loosened.

- ``api.auth.middleware.bearer``: only the ``Bearer`` scheme carries a credential.
- ``api.routers.common.chosen_ledger``: the route-level ledger check, the second line
  behind the middleware's (a route mounted without the middleware's rule, or a rule
  written wrongly, still may not reach another tenant).
- ``ledger.event``: a ``disclosure`` is only allowed with ``action: disclose``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from api.auth.caller import Caller
from api.auth.middleware import bearer
from api.errors import ApiError
from api.routers.common import chosen_ledger
from ledger.event import EventRejected, validate_event
from tests.support import contract_example, make_event, provision_key


def _scope(authorization: bytes | None) -> dict[str, Any]:
    headers = [(b"authorization", authorization)] if authorization is not None else []
    return {"type": "http", "headers": headers}


@pytest.mark.parametrize(("header", "credential"), [
    (b"Bearer pk_abc", "pk_abc"),
    (b"bearer pk_abc", "pk_abc"),  # RFC 7235: the scheme is case-insensitive
    (b"Basic pk_abc", None),
    (b"Token pk_abc", None),
    (b"Bearerpk_abc", None),
    (b"pk_abc", None),
    (b"Bearer ", None),
    (None, None),
])
def test_only_the_bearer_scheme_carries_a_credential(
    header: bytes | None, credential: str | None
) -> None:
    assert bearer(_scope(header)) == credential


def test_a_valid_key_under_another_scheme_is_refused(client: TestClient, database_url: str) -> None:
    key = provision_key(database_url, roles=["ingest"])
    assert client.post("/v1/events", json=make_event(),
                       headers={"Authorization": f"Bearer {key}"}).status_code == 201
    for scheme in ("Basic", "Token", "Digest"):
        r = client.post("/v1/events", json=make_event(),
                        headers={"Authorization": f"{scheme} {key}"})
        assert r.status_code == 401, (scheme, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"


def _request(ledger_param: str | None) -> Request:
    caller = Caller(id="app-1", kind="application", ledger="clinic-a",
                    roles=frozenset({"auditor"}))
    query = f"ledger={ledger_param}".encode() if ledger_param else b""
    return Request({"type": "http", "headers": [], "query_string": query,
                    "state": {"caller": caller}})


def test_the_route_level_check_refuses_another_ledger_on_its_own() -> None:
    """Called directly, without the middleware in front: its own ledger is chosen when
    none or the caller's is named, any other is a 403 naming the field."""
    assert asyncio.run(chosen_ledger(_request(None), None)) == "clinic-a"
    assert asyncio.run(chosen_ledger(_request("clinic-a"), "clinic-a")) == "clinic-a"
    with pytest.raises(ApiError) as refused:
        asyncio.run(chosen_ledger(_request("clinic-b"), "clinic-b"))
    assert refused.value.status == 403 and refused.value.fields == ["ledger"]


@pytest.mark.parametrize("action", ["read", "update", "export", "login", "staff_added"])
def test_a_disclosure_is_only_allowed_with_disclose(action: str) -> None:
    event = {**make_event(action=action), "disclosure": contract_example()["disclosure"]}
    if action in ("login", "staff_added"):
        event = {k: v for k, v in event.items() if k not in ("patient", "purpose", "channel")}
    with pytest.raises(EventRejected) as rejected:
        validate_event(event)
    assert ("disclosure", "is only allowed with action 'disclose'") in rejected.value.problems
    validate_event(contract_example())  # the same disclosure with disclose is fine
