"""The console's alert queue and investigations, on SQLite and PostgreSQL: the same
services as the API, reads recorded, triage and openings as ledger entries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from api.app import create_app
from ledger.settings import Settings
from tests.monitoring_support import at, read, record, staff_added, trained
from tests.support import FakeClock, auth_headers, provision_key, provision_user
from tests.test_console import PASSWORD, Console


@pytest.fixture
def desk(settings: Settings) -> Iterator[Console]:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start - timedelta(seconds=start.second % 30) + timedelta(seconds=5))
    settings = replace(settings, rate_login=1000.0)
    seeds = {"ivan": provision_user(settings, "ivan", PASSWORD, roles=["investigator"]),
             "alice": provision_user(settings, "alice", PASSWORD, roles=["auditor"])}
    api = auth_headers(provision_key(settings.database_url,
                                     roles=["ingest", "auditor", "verifier"]))
    c = Console(create_app(settings, clock=clock, configure_logs=False), clock, seeds, api)
    with c.client:
        c.post(staff_added("agent-1", name="Ana M. Reyes"), trained("agent-1"),
               record("MRN-1", name="Luis Reyes", dob="1980-01-01", vip=True),
               read("MRN-1", at(10), actor="agent-1"),
               read("MRN-2", at(20), actor="agent-1", purpose="ETREAT"))
        yield c


def test_the_alert_queue_and_its_triage(desk: Console) -> None:
    desk.sign_in("ivan")
    desk.choose("HOPERAT")
    page = desk.client.get("/console/alerts")
    assert page.status_code == 200, page.text
    rules = re.findall(r'class="alert-row rule-([a-z_]+)"', page.text)
    assert "break_glass" in rules and "vip_access" in rules
    assert 'href="/console/patients/MRN-2"' in page.text
    shown = [q for q in desk.queries() if q["resource"]["type"] == "alert_list"]
    assert shown and all(q["purpose"] == "HOPERAT" for q in shown)
    only = desk.client.get("/console/alerts?rule=break_glass")
    assert re.findall(r'class="alert-row rule-([a-z_]+)"', only.text) == ["break_glass"]
    assert desk.client.get("/console/alerts?rule=nonsense").status_code == 400
    alert_id = re.search(r'action="/console/alerts/([^/"]+)/acknowledge"', only.text)
    assert alert_id
    r = desk.client.post(f"/console/alerts/{alert_id.group(1)}/acknowledge",
                         data={"reason": "called the nurse", "back": "/console/alerts"},
                         follow_redirects=False)
    assert r.status_code == 400  # no CSRF token
    r = desk.client.post(f"/console/alerts/{alert_id.group(1)}/acknowledge",
                         data={"reason": "called the nurse", "csrf": desk.csrf(only.text)},
                         follow_redirects=False)
    assert r.status_code == 303
    done = [e for e in desk.entries() if e["action"] == "alert_acknowledged"]
    assert len(done) == 1 and done[0]["resource"]["id"] == alert_id.group(1)


def test_an_auditor_has_no_alert_queue(desk: Console) -> None:
    desk.sign_in("alice")
    desk.choose()
    assert desk.client.get("/console/alerts").status_code == 403
    assert desk.client.get("/console/investigations").status_code == 403


def test_open_an_investigation_and_read_it(desk: Console) -> None:
    desk.sign_in("ivan")
    desk.choose("LEGAL")
    listing = desk.client.get("/console/investigations")
    assert listing.status_code == 200
    form = {"title": "Lost laptop", "discovered_at": "2026-11-27T09:00",
            "from": "2026-11-01T00:00", "to": "2026-12-01T00:00", "actors": "agent-1",
            "csrf": desk.csrf(listing.text)}
    bad = desk.client.post("/console/investigations", data={**form, "actors": ""})
    assert bad.status_code == 400 and "scope" in bad.text
    r = desk.client.post("/console/investigations", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = desk.client.get(r.headers["location"])
    assert page.status_code == 200, page.text
    assert "Lost laptop" in page.text and 'id="duties"' in page.text
    assert page.text.count('class="mark ') >= 2  # the two reads in scope
    assert 'href="/console/patients/MRN-2"' in page.text
    opened = [e for e in desk.entries() if e["action"] == "investigation_opened"]
    assert len(opened) == 1
    reads = [q for q in desk.queries() if q["purpose"] == "LEGAL"]
    assert reads  # the patients the page showed
    report = desk.client.get(r.headers["location"] + "?format=html")
    assert report.status_code == 200 and "unsafe-inline" not in report.headers[
        "content-security-policy"]
