"""Nobody triages an alert about their own actions, with the ids applications really post:
a staff id (``EMP-4471``, the ``staff_id`` of ``staff_added``) bound to the reviewer's
identity (``usr-...``), their sign-in name, or the identity itself. The binding is made by
``phi-ledger admin create-user --staff-id`` / ``set-staff-ids`` or by an admin's
``PUT /v1/admin/identities/{id}/staff-ids``, and recorded in the ledger. SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth.credentials import totp_code, totp_step
from ledger.settings import Settings
from projections.runner import Projector
from tests.monitoring_support import at, read, staff_added, trained
from tests.support import FakeClock, auth_headers, fastapi_app, provision_key, provision_user
from tests.test_tamper import run_cli

PASSWORD = "correct horse battery staple"


class Desk:
    """The service with two investigators: ivan (acts as staff EMP-4471) and iris (bound
    to nothing yet); ``api`` posts and reads as an application."""

    def __init__(self, settings: Settings) -> None:
        start = datetime.now(UTC).replace(microsecond=0)
        # Mid-step, so the TOTP step does not change under the test's feet.
        self.clock = FakeClock(start - timedelta(seconds=start.second % 30)
                               + timedelta(seconds=5))
        self.settings = replace(settings, rate_login=1000.0)
        self.seeds = {
            "ivan": provision_user(self.settings, "ivan", PASSWORD, roles=["investigator"],
                                   staff_ids=["EMP-4471"]),
            "iris": provision_user(self.settings, "iris", PASSWORD, roles=["investigator"])}
        self.api = auth_headers(provision_key(self.settings.database_url, roles=[
            "ingest", "auditor", "verifier", "investigator"]))
        self.admin = auth_headers(provision_key(self.settings.database_url, roles=["admin"]))
        self.client = TestClient(create_app(self.settings, clock=self.clock,
                                            configure_logs=False))

    def login(self, name: str) -> dict[str, str]:
        answer = self.client.post("/v1/auth/login", json={
            "username": name, "password": PASSWORD,
            "totp": totp_code(self.seeds[name], totp_step(self.clock.now))})
        assert answer.status_code == 200, answer.text
        self.clock.advance(seconds=30)  # each code is accepted once
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def post(self, *events: dict[str, Any]) -> list[int]:
        answer = self.client.post("/v1/events/batch", json={"events": list(events)},
                                  headers=self.api)
        assert answer.status_code == 201, answer.text
        svc = fastapi_app(self.client.app).state.services
        Projector(svc.store, protection=svc.protection).catch_up()
        return [r["seq"] for r in answer.json()["receipts"]]

    def entries(self) -> list[dict[str, Any]]:
        """What requests wrote: less the rule-set entry monitoring appends on its own
        schedule after the first alert, which may land between two counts."""
        answer = self.client.get("/v1/ledger/entries", params={"limit": 1000},
                                 headers=self.api)
        return [e["event"] for e in answer.json()["entries"]
                if e["event"]["action"] != "monitoring_rules"]

    def triage(self, who: dict[str, str], alert_id: str) -> Any:
        return self.client.post(f"/v1/alerts/{alert_id}/dismiss",
                                json={"reason": "reviewed"}, headers=who)


@pytest.fixture
def desk(settings: Settings) -> Iterator[Desk]:
    d = Desk(settings)
    with d.client:
        yield d


def _break_glass(desk: Desk, actor: str) -> str:
    """An alert about ``actor``: a break-the-glass read by them; its id."""
    seq = desk.post(read("MRN-1", at(30), actor=actor, purpose="ETREAT"))[0]
    return f"{seq}-break_glass"


def test_a_staff_id_bound_at_creation_stops_its_owner_triaging(desk: Desk) -> None:
    desk.post(staff_added("EMP-4471", name="Ivan Petrov"), trained("EMP-4471"),
              staff_added("EMP-5102", name="Iris Moreau"), trained("EMP-5102"))
    bound = [e for e in desk.entries() if e["action"] == "staff_ids_set"]
    assert [e["resource"]["type"] for e in bound] == ["identity"]  # recorded at creation
    ivan = desk.login("ivan")
    own = _break_glass(desk, "EMP-4471")
    before = len(desk.entries())
    refused = desk.triage(ivan, own)
    assert refused.status_code == 403, refused.text
    assert "staff id bound to you" in refused.json()["error"]["message"]
    assert len(desk.entries()) == before  # nothing appended
    # Someone else's staff id: ivan may; and iris may triage ivan's.
    assert desk.triage(ivan, _break_glass(desk, "EMP-5102")).status_code == 200
    assert desk.triage(desk.login("iris"), own).status_code == 200


def test_the_sign_in_name_and_the_identity_are_the_reviewer_too(desk: Desk) -> None:
    ivan = desk.login("ivan")
    whoami = desk.client.get("/v1/auth/whoami", headers=ivan).json()
    by_name = desk.triage(ivan, _break_glass(desk, "ivan"))
    assert by_name.status_code == 403 and "sign-in name" in by_name.json()["error"]["message"]
    by_id = desk.triage(ivan, _break_glass(desk, whoami["id"]))
    assert by_id.status_code == 403 and "your identity" in by_id.json()["error"]["message"]


def test_an_admin_binds_and_unbinds_staff_ids(desk: Desk) -> None:
    iris_id = next(i["id"] for i in desk.client.get(
        "/v1/admin/identities", headers=desk.admin).json()["identities"] if i["name"] == "iris")
    url = f"/v1/admin/identities/{iris_id}/staff-ids"
    done = desk.client.put(url, json={"staff_ids": ["EMP-5102", "NIGHT-07"]},
                           headers=desk.admin)
    assert done.status_code == 200, done.text
    assert done.json()["staff_ids"] == ["EMP-5102", "NIGHT-07"]
    recorded = [e for e in desk.entries() if e["action"] == "staff_ids_set"]
    assert recorded[-1]["resource"] == {"type": "identity", "id": iris_id}
    assert recorded[-1]["actor"]["kind"] == "application"  # the admin, not the service
    listed = {i["name"]: i["staff_ids"] for i in desk.client.get(
        "/v1/admin/identities", headers=desk.admin).json()["identities"]}
    assert listed["iris"] == ["EMP-5102", "NIGHT-07"] and listed["ivan"] == ["EMP-4471"]
    iris = desk.login("iris")
    night = _break_glass(desk, "NIGHT-07")
    assert desk.triage(iris, night).status_code == 403
    # One person's staff id is nobody else's.
    taken = desk.client.put(f"/v1/admin/identities/{_id_of(desk, 'ivan')}/staff-ids",
                            json={"staff_ids": ["NIGHT-07"]}, headers=desk.admin)
    assert taken.status_code == 409, taken.text
    assert desk.client.put(url, json={"staff_ids": "NIGHT-07"},
                           headers=desk.admin).status_code == 422
    assert desk.client.put("/v1/admin/identities/usr-nobody/staff-ids",
                           json={"staff_ids": []}, headers=desk.admin).status_code == 404
    # Unbound, she may.
    assert desk.client.put(url, json={"staff_ids": []}, headers=desk.admin).status_code == 200
    assert desk.triage(iris, night).status_code == 200


def test_an_admin_of_another_ledger_cannot_bind(desk: Desk) -> None:
    other = auth_headers(provision_key(desk.settings.database_url, roles=["admin"],
                                       ledger="other"))
    answer = desk.client.put(f"/v1/admin/identities/{_id_of(desk, 'ivan')}/staff-ids",
                             json={"staff_ids": []}, headers=other)
    assert answer.status_code == 404


def _id_of(desk: Desk, name: str) -> str:
    return str(next(i["id"] for i in desk.client.get(
        "/v1/admin/identities", headers=desk.admin).json()["identities"] if i["name"] == name))


def test_the_cli_binds_at_creation_and_later(settings: Settings) -> None:
    import subprocess
    import sys

    from tests.support import ROOT
    from tests.test_tamper import cli_env

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.cli", "admin", *args], cwd=ROOT,
                              env=cli_env(settings), capture_output=True, text=True,
                              input=PASSWORD + "\n", timeout=120)

    made = admin("create-user", "--name", "olga", "--role", "investigator",
                 "--password-stdin", "--staff-id", "EMP-0042")
    assert made.returncode == 0, made.stderr
    assert "acting as staff EMP-0042" in made.stdout
    changed = admin("set-staff-ids", "olga", "--staff-id", "EMP-0042", "--staff-id", "EMP-0043")
    assert changed.returncode == 0, changed.stderr
    listed = admin("list")
    assert "staff EMP-0042,EMP-0043" in listed.stdout
    clash = admin("create-user", "--name", "oleg", "--role", "auditor", "--password-stdin",
                  "--staff-id", "EMP-0043")
    assert clash.returncode != 0 and "already bound" in clash.stderr
    exported = run_cli(settings, "export")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.count('"staff_ids_set"') == 2
