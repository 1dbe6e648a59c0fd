"""The authorisation matrix: every route of the application's own route table x every
role x own and foreign tenant, on SQLite and PostgreSQL.

Expectations come from the policy table (api/auth/policy.py), so a route added without
a rule fails ``test_every_route_has_a_rule`` -- and answers 403 to everyone meanwhile
(``test_a_route_without_a_rule_is_refused``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth.caller import ROLES, Caller
from api.auth.limits import Rate
from api.auth.middleware import flat_routes
from api.auth.policy import PUBLIC, RULES, Decision, Limit, Rule, decide, rule_for, shape
from ledger.settings import Settings
from tests.support import auth_headers, fastapi_app, provision_key

OWN, FOREIGN = "default", "other-org"


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    pairs = set()
    for route in flat_routes(app):
        for method in getattr(route, "methods", None) or ():
            pairs.add((method, route.path))
    return sorted(pairs)


def _url(template: str) -> str:
    return re.sub(r"\{[^}]*\}", "MRN-TEST-1", template)


@pytest.fixture
def matrix(settings: Settings) -> Iterator[tuple[TestClient, FastAPI, dict[tuple[str, str], str]]]:
    keys = {(role, ledger): provision_key(settings.database_url, roles=[role], ledger=ledger)
            for role in sorted(ROLES) for ledger in (OWN, FOREIGN)}
    # Generous limits: the matrix sends many requests per identity in a moment.
    app = create_app(Settings(**{**settings.__dict__, "rate_read": 10_000.0,
                                 "rate_admin": 10_000.0}), configure_logs=False)
    with TestClient(app) as client:
        # ... and it sends hundreds of unauthenticated requests from one address.
        fastapi_app(app).state.services.access.rates["unauthenticated"] = Rate(1e6, 1e6)
        yield client, fastapi_app(app), keys


def _call(client: TestClient, method: str, url: str, headers: dict[str, str],
          params: dict[str, str] | None = None) -> Any:
    return client.request(method, url, headers=headers, params=params,
                          json={} if method in ("POST", "PUT", "PATCH") else None)


def test_every_route_has_a_rule(client: TestClient) -> None:
    missing = [(m, p) for m, p in _routes(fastapi_app(client.app))
               if rule_for(m, p) is None]
    assert not missing, f"routes without an access rule in api/auth/policy.py: {missing}"


def test_the_matrix(matrix: tuple[TestClient, FastAPI, dict[tuple[str, str], str]]) -> None:
    client, app, keys = matrix
    routes = _routes(app)
    assert ("POST", "/v1/events") in routes and ("GET", "/v1/ledger") in routes
    checked = 0
    for method, template in routes:
        rule = rule_for(method, template)
        assert rule is not None, (method, template)
        url = _url(template)
        anonymous = _call(client, method, url, {})
        if rule.public:
            assert anonymous.status_code not in (401, 403), (method, template)
            continue
        assert anonymous.status_code == 401, (method, template, anonymous.text)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.json()["error"]["code"] == "unauthenticated"
        bogus = _call(client, method, url, auth_headers("phk_" + "A" * 43))
        assert bogus.status_code == 401 and "invalid_token" in bogus.headers["www-authenticate"]
        assert rule.roles is not None
        for role in sorted(ROLES):
            for home in (OWN, FOREIGN):
                headers = auth_headers(keys[(role, home)])
                where = (method, template, role, home)
                answer = _call(client, method, url, headers)
                if role in rule.roles:
                    # Allowed: the route itself answers (maybe 4xx for the dummy request,
                    # never the access layer's 401/403).
                    assert answer.status_code not in (401, 403), (where, answer.text)
                else:
                    assert answer.status_code == 403, (where, answer.text)
                    assert answer.json()["error"]["code"] == "forbidden"
                # Naming the other tenant's ledger is refused, whatever the role.
                other = FOREIGN if home == OWN else OWN
                crossing = _call(client, method, url, headers, {"ledger": other})
                assert crossing.status_code == 403, (where, "crossing", crossing.text)
                checked += 1
    assert checked >= len(ROLES) * 2 * 10


def test_a_route_without_a_rule_is_refused(settings: Settings) -> None:
    key = provision_key(settings.database_url, roles=sorted(ROLES))
    app = create_app(settings, configure_logs=False)

    async def secret_route() -> dict[str, str]:
        return {"phi": "should never be reached"}

    fastapi_app(app).add_api_route("/v1/unguarded", secret_route, methods=["GET"])
    with TestClient(app, headers=auth_headers(key)) as client:
        r = client.get("/v1/unguarded")
        assert r.status_code == 403 and r.json()["error"] == {
            "code": "forbidden", "message": "no access rule covers this route", "fields": []}
        assert "should never" not in r.text
        # and the suite's own check names it
        assert rule_for("GET", "/v1/unguarded") is None
        assert ("GET", "/v1/unguarded") in _routes(fastapi_app(app))


def test_unknown_paths_are_the_frameworks_404_without_touching_anything(
    client: TestClient,
) -> None:
    r = client.get("/v1/no-such-thing", headers={"Authorization": ""})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# -- the pure rules ------------------------------------------------------------------------

ALICE = Caller("usr-1", "user", "clinic-a", frozenset({"auditor"}), "alice", "ses-1")


def test_templates_are_compared_by_shape() -> None:
    assert shape("/v1/patients/{patient_id}/accesses") == "/v1/patients/{}/accesses"
    assert rule_for("GET", "/v1/patients/{id}") == rule_for("GET", "/v1/patients/{pid}")
    assert rule_for("HEAD", "/healthz") == PUBLIC
    assert rule_for("DELETE", "/v1/ledger") is None
    assert rule_for("GET", "/v1/whatever") is None


def test_roles_as_the_issue_gives_them() -> None:
    def allowed(method: str, path: str) -> set[str]:
        rule = rule_for(method, path)
        assert rule is not None and rule.roles is not None
        return set(rule.roles)

    assert allowed("POST", "/v1/events") == allowed("POST", "/v1/events/batch") == {"ingest"}
    assert allowed("GET", "/v1/patients/{id}") == {"auditor", "investigator"}
    assert allowed("GET", "/v1/users/{id}/accesses") == {"auditor", "investigator"}
    assert allowed("POST", "/v1/investigations") == allowed("GET", "/v1/alerts") == {
        "investigator"}
    for path in ("/v1/ledger", "/v1/ledger/entries", "/v1/checkpoints/latest",
                 "/v1/proofs/inclusion"):
        assert allowed("GET", path) == {"verifier", "auditor", "investigator"}
    assert allowed("POST", "/v1/admin/keys") == {"admin"}
    # nobody but auditors and investigators sees PHI; admin sees none by default
    phi = [k for k, r in RULES.items() if k[1].startswith(("/v1/patients", "/v1/users"))]
    assert phi and all("admin" not in (RULES[k].roles or ()) for k in phi)
    assert all("verifier" not in (RULES[k].roles or ()) for k in phi)


def test_decide() -> None:
    rule = Rule(frozenset({"auditor"}), Limit.READ)
    assert decide(rule, ALICE, []).allowed
    assert decide(rule, ALICE, ["clinic-a"]).allowed
    assert not decide(rule, ALICE, ["clinic-b"]).allowed
    assert not decide(rule, ALICE, ["clinic-a", "clinic-b"]).allowed
    assert not decide(Rule(frozenset({"admin"})), ALICE, []).allowed
    assert decide(PUBLIC, ALICE, ["anything"]).allowed


def test_each_refusal_says_why() -> None:
    """The reason reaches the caller in the 403's message: the roles a route allows, or
    the ledger rule (never the names of other tenants)."""
    assert decide(Rule(frozenset({"investigator", "admin"})), ALICE, []) == Decision(
        False, "your roles do not allow this request; allowed: admin, investigator")
    assert decide(Rule(frozenset({"auditor"})), ALICE, ["clinic-b"]) == Decision(
        False, "you may only use your own ledger")
    assert decide(Rule(frozenset({"auditor"})), ALICE, []) == Decision(True, "")


def test_each_rule_counts_against_its_own_rate_limit() -> None:
    assert {k: RULES[k] for k in [("POST", "/v1/events"), ("GET", "/v1/patients/{}"),
                                  ("POST", "/v1/admin/keys"), ("GET", "/healthz")]} == {
        ("POST", "/v1/events"): Rule(frozenset({"ingest"}), Limit.INGEST),
        ("GET", "/v1/patients/{}"): Rule(frozenset({"auditor", "investigator"}), Limit.READ),
        ("POST", "/v1/admin/keys"): Rule(frozenset({"admin"}), Limit.ADMIN),
        ("GET", "/healthz"): Rule(None, Limit.PUBLIC),
    }


def test_the_openapi_schema_documents_the_policy(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers={"Authorization": ""}).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    post = schema["paths"]["/v1/events"]["post"]
    assert post["security"] == [{"bearer": []}] and "`ingest`" in post["description"]
    audit = schema["paths"]["/v1/ledger/entries"]["get"]
    assert "`verifier`" in audit["description"] and "`ingest`" not in audit["description"]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert schema["paths"]["/v1/auth/login"]["post"]["security"] == []


def test_a_rule_allows_exactly_the_roles_named_and_counts_against_its_limit() -> None:
    # RULES is built at import; asking the builder directly lets mutation testing (which
    # activates a mutant only after the import) see each of its mutants.
    from api.auth.caller import AUDITOR, INVESTIGATOR
    from api.auth.policy import Limit, Rule, allow

    assert allow(AUDITOR, INVESTIGATOR) == Rule(frozenset({AUDITOR, INVESTIGATOR}), Limit.READ)
    assert allow(AUDITOR, limit=Limit.ADMIN) == Rule(frozenset({AUDITOR}), Limit.ADMIN)
    assert not allow(AUDITOR).public
