"""Separation of duties: through the API an admin can give no one a PHI-reading role
(auditor, investigator), neither to a new identity nor as a key for an existing one; the
CLI, which holds the database, still can. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from tests.support import auth_headers, make_event, provision_key
from tests.test_auth_keys import KEY, cli, rows

Admin = tuple[TestClient, dict[str, str]]


@pytest.fixture
def admin(settings: Settings) -> Iterator[Admin]:
    key = provision_key(settings.database_url, roles=["admin"])
    with TestClient(create_app(settings, configure_logs=False)) as client:
        yield client, auth_headers(key)


def _app_id(client: TestClient, headers: dict[str, str], name: str) -> str:
    listing = client.get("/v1/admin/identities", headers=headers)
    assert listing.status_code == 200, listing.text
    return next(i["id"] for i in listing.json()["identities"] if i["name"] == name)


def _written(settings: Settings) -> tuple[Any, ...]:
    """Everything a refusal must leave as it was: ledger entries, identities, keys."""
    url = settings.database_url
    return (rows(url, "SELECT count(*) FROM stored_events"),
            rows(url, "SELECT id, roles FROM identities ORDER BY id"),
            rows(url, "SELECT id, identity_id FROM credentials ORDER BY id"))


def _assert_operator_only(r: Any, field: str) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "operator_only" and error["fields"] == [field]
    assert "phi-ledger admin create-key" in error["message"]


@pytest.mark.parametrize("role", ["auditor", "investigator"])
def test_admin_cannot_mint_a_key_for_an_identity_that_reads_phi(
    admin: Admin, settings: Settings, role: str,
) -> None:
    client, headers = admin
    provision_key(settings.database_url, roles=[role, "verifier"], name="reader-app")
    reader = _app_id(client, headers, "reader-app")
    before = _written(settings)
    # the roles sent are not what the key would carry: the identity's are
    for roles in (["ingest"], [role]):
        r = client.post("/v1/admin/keys", json={"roles": roles, "identity": reader},
                        headers=headers)
        _assert_operator_only(r, "identity")
        assert role in r.json()["error"]["message"]
    assert _written(settings) == before


@pytest.mark.parametrize("roles", [["auditor"], ["investigator"], ["ingest", "auditor"],
                                   ["admin", "investigator"]])
def test_admin_cannot_create_an_identity_with_a_phi_reading_role(
    admin: Admin, settings: Settings, roles: list[str],
) -> None:
    client, headers = admin
    before = _written(settings)
    r = client.post("/v1/admin/keys", json={"roles": roles, "name": "new-reader"},
                    headers=headers)
    _assert_operator_only(r, "roles")
    assert _written(settings) == before
    # nothing half-made: the name is still free, for the operator to use
    assert "new-reader" not in str(rows(settings.database_url, "SELECT name FROM identities"))


def test_admin_still_manages_identities_that_read_no_phi(
    admin: Admin, settings: Settings,
) -> None:
    client, headers = admin
    made = client.post("/v1/admin/keys", json={"roles": ["ingest"], "name": "intake"},
                       headers=headers)
    assert made.status_code == 201, made.text
    assert client.post("/v1/events", json=make_event(), headers=auth_headers(made.json()["key"])
                       ).status_code == 201
    # one more key (rotation) for an existing non-PHI application
    provision_key(settings.database_url, roles=["verifier", "admin"], name="checker")
    checker = _app_id(client, headers, "checker")
    again = client.post("/v1/admin/keys", json={"roles": ["verifier"], "identity": checker},
                        headers=headers)
    assert again.status_code == 201, again.text
    assert again.json()["identity"]["roles"] == ["admin", "verifier"]
    assert client.get("/v1/ledger", headers=auth_headers(again.json()["key"])).status_code == 200


def test_the_cli_still_grants_phi_reading_roles(settings: Settings) -> None:
    made = cli(settings, "create-key", "--role", "auditor", "--name", "audit-desk")
    assert made.returncode == 0, made.stderr
    assert KEY.match(made.stdout.splitlines()[-1])
    ident = rows(settings.database_url,
                 "SELECT id FROM identities WHERE name = 'audit-desk'")[0][0]
    rotated = cli(settings, "create-key", "--role", "auditor", "--identity", ident)
    assert rotated.returncode == 0, rotated.stderr
    assert rows(settings.database_url, "SELECT count(*) FROM credentials c JOIN identities i"
                " ON i.id = c.identity_id WHERE i.name = 'audit-desk'") == [(2,)]
