"""The console's alert queue and investigations, on SQLite and PostgreSQL: the same
services as the API, reads recorded, triage and openings as ledger entries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from api.app import create_app
from api.console import casework
from ledger.settings import Settings
from ledger.transparency.evidence import verify_evidence
from tests.monitoring_support import at, event, read, record, staff_added, trained
from tests.support import (
    FakeClock,
    auth_headers,
    fastapi_app,
    provision_key,
    provision_user,
)
from tests.test_console import PASSWORD, Console


def _desk(settings: Settings) -> Iterator[Console]:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start - timedelta(seconds=start.second % 30) + timedelta(seconds=5))
    settings = replace(settings, rate_login=1000.0)
    seeds = {"ivan": provision_user(settings, "ivan", PASSWORD, roles=["investigator"]),
             "iris": provision_user(settings, "iris", PASSWORD, roles=["investigator"]),
             "alice": provision_user(settings, "alice", PASSWORD, roles=["auditor"])}
    api = auth_headers(provision_key(settings.database_url,
                                     roles=["ingest", "auditor", "verifier", "investigator"]))
    c = Console(create_app(settings, clock=clock, configure_logs=False), clock, seeds, api)
    with c.client:
        c.post(staff_added("agent-1", name="Ana M. Reyes"), trained("agent-1"),
               record("MRN-1", name="Luis Reyes", dob="1980-01-01", vip=True),
               read("MRN-1", at(10), actor="agent-1"),
               read("MRN-2", at(20), actor="agent-1", purpose="ETREAT"))
        yield c


@pytest.fixture
def desk(settings: Settings) -> Iterator[Console]:
    yield from _desk(settings)


@pytest.fixture
def unsigned_desk(settings: Settings) -> Iterator[Console]:
    """A desk whose checkpoints are signed only when the test says so."""
    yield from _desk(replace(settings, checkpoints_inline=False))


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


def _settle(desk: Console) -> None:
    """Wait until the views have applied the ledger's head."""
    svc = fastapi_app(desk.app).state.services
    head = svc.store.head("default").seq
    assert svc.projector.wait_for(svc.store.notification_of("default", head), 10)


def _rows(html: str) -> list[dict[str, str]]:
    """The alert rows of an alerts page: rule, status, user and the alert id triage posts."""
    rows = []
    for chunk in html.split('<tr class="alert-row rule-')[1:]:
        chunk = chunk.split("</tr>")[0]
        status = re.search(r'<td class="status-([a-z]+)">', chunk)
        user = re.search(r'href="/console/users/([^"]+)"', chunk)
        alert = re.search(r'action="/console/alerts/([^/"]+)/acknowledge"', chunk)
        assert status and user, chunk
        rows.append({"rule": chunk.split('"')[0], "status": status.group(1),
                     "user": user.group(1), "alert_id": alert.group(1) if alert else ""})
    return rows


def test_dismissing_an_alert_with_a_reason(desk: Console) -> None:
    desk.sign_in("ivan")
    desk.choose("HOPERAT")
    page = desk.client.get("/console/alerts?rule=vip_access")
    [vip] = _rows(page.text)
    assert vip["status"] == "open" and vip["alert_id"]
    before = len(desk.entries())
    target = f"/console/alerts/{vip['alert_id']}/dismiss"
    # no reason: refused, nothing written
    r = desk.client.post(target, data={"reason": "  ", "csrf": desk.csrf(page.text)})
    assert r.status_code == 400 and "reason" in r.text
    r = desk.client.post(f"/console/alerts/{vip['alert_id']}/delete",
                         data={"reason": "x", "csrf": desk.csrf(page.text)})
    assert r.status_code == 404
    assert len(desk.entries()) == before
    r = desk.client.post(target, data={"reason": "duty nurse, on the care team",
                                       "back": "/console/alerts?rule=vip_access",
                                       "csrf": desk.csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/console/alerts?done=dismissed+{vip['alert_id']}"
    written = desk.entries()[before:]
    assert [e["action"] for e in written] == ["alert_dismissed"]
    assert written[0]["resource"] == {"type": "alert", "id": vip["alert_id"]}
    assert written[0]["actor"]["id"].startswith("usr-")
    done = desk.client.get(r.headers["location"])
    assert f"Recorded in the ledger: dismissed {vip['alert_id']}." in done.text
    # the view folds the entry into the alert's status; it is no longer open to triage
    _settle(desk)
    dismissed = desk.client.get("/console/alerts?status=dismissed")
    assert [(a["rule"], a["alert_id"]) for a in _rows(dismissed.text)] == [("vip_access", "")]


def test_nobody_triages_an_alert_about_their_own_actions(desk: Console) -> None:
    desk.sign_in("ivan")
    desk.choose("HOPERAT")
    ivan = next(e for e in desk.entries() if e["action"] == "login")["actor"]["id"]
    assert ivan.startswith("usr-")
    desk.post(read("MRN-1", at(30), actor=ivan, purpose="ETREAT"))
    page = desk.client.get("/console/alerts?rule=break_glass")
    own = next(a for a in _rows(page.text) if a["user"] == ivan)
    before = len(desk.entries())
    r = desk.client.post(f"/console/alerts/{own['alert_id']}/acknowledge",
                         data={"reason": "it was me", "csrf": desk.csrf(page.text)},
                         follow_redirects=False)
    assert r.status_code == 403 and "your own actions" in r.text
    assert len(desk.entries()) == before  # nothing written
    # another reviewer may
    desk.client.cookies.clear()
    desk.sign_in("iris")
    desk.choose("HOPERAT")
    page = desk.client.get("/console/alerts?rule=break_glass")
    r = desk.client.post(f"/console/alerts/{own['alert_id']}/acknowledge",
                         data={"reason": "asked ivan: a test login", "csrf":
                               desk.csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    done = [e for e in desk.entries() if e["action"] == "alert_acknowledged"]
    assert [e["resource"]["id"] for e in done] == [own["alert_id"]]
    assert done[0]["actor"]["id"] not in (ivan, "")


def test_the_console_refuses_triage_by_a_reviewer_bound_to_the_staff_id(
        desk: Console) -> None:
    """Applications post staff ids (agent-1 here), not identity ids: once ivan is bound to
    agent-1, the console's triage (the same function as the API's) refuses him."""
    from api.auth.identities import Actor

    svc = fastapi_app(desk.client.app).state.services
    svc.access.identities.set_staff_ids("ivan", ["agent-1"], actor=Actor("operator"))
    desk.sign_in("ivan")
    desk.choose("HOPERAT")
    page = desk.client.get("/console/alerts?rule=break_glass")
    theirs = next(a for a in _rows(page.text) if a["user"] == "agent-1")
    before = len(desk.entries())
    r = desk.client.post(f"/console/alerts/{theirs['alert_id']}/dismiss",
                         data={"reason": "it was me", "csrf": desk.csrf(page.text)},
                         follow_redirects=False)
    assert r.status_code == 403 and "staff id bound to you" in r.text
    assert len(desk.entries()) == before


def _open(desk: Console, title: str = "Lost laptop") -> str:
    listing = desk.client.get("/console/investigations")
    r = desk.client.post("/console/investigations", data={
        "title": title, "discovered_at": "2026-11-27T09:00", "from": "2026-11-01T00:00",
        "to": "2026-12-01T00:00", "actors": "agent-1", "csrf": desk.csrf(listing.text)},
        follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def test_the_investigation_csv_is_the_apis_and_its_reads_are_recorded(desk: Console) -> None:
    desk.sign_in("ivan")
    desk.choose("LEGAL")
    inv = _open(desk)
    # Reads only: the service may append its own monitoring_rules entry meanwhile.
    before = len(desk.queries())
    r = desk.client.get(f"/console/investigations/{inv}?format=csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith("attachment")
    timeline = r.text.split("\r\n\r\n")[0].splitlines()
    assert timeline[0].startswith("seq,occurred_at,action")
    assert sorted(line.split(",")[7] for line in timeline[1:]) == ["MRN-1", "MRN-2"]
    # one `query` per patient shown, under the purpose chosen
    reads = desk.queries()[before:]
    assert len(reads) == 2 and all(
        e["action"] == "query" and e["purpose"] == "LEGAL"
        and e["resource"]["type"] == "investigation" and e["actor"]["id"].startswith("usr-")
        for e in reads)
    api = desk.client.get(f"/v1/investigations/{inv}", headers=desk.api,
                          params={"purpose": "LEGAL", "format": "csv"})
    assert r.text == api.text  # the same report, made by the same service


def test_the_evidence_file_once_a_checkpoint_covers_the_scope(unsigned_desk: Console) -> None:
    desk = unsigned_desk
    desk.sign_in("ivan")
    desk.choose("LEGAL")
    inv = _open(desk)
    # Reads only: the service may append its own monitoring_rules entry meanwhile.
    before = len(desk.queries())
    r = desk.client.get(f"/console/investigations/{inv}/evidence")
    assert r.status_code == 404 and "no signed checkpoint yet" in r.text
    svc = fastapi_app(desk.app).state.services
    signed = svc.checkpointer.sign("default")
    assert signed is not None
    r = desk.client.get(f"/console/investigations/{inv}/evidence")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="evidence-{inv}.json"')
    doc = r.json()
    assert doc["tree_size"] == signed.size
    listed = desk.client.get("/v1/ledger/entries", headers=desk.api).json()["entries"]
    in_scope = [e["seq"] for e in listed
                if e["event"]["action"] == "read" and e["event"]["actor"]["id"] == "agent-1"]
    assert [e["seq"] for e in doc["entries"]] == in_scope and len(in_scope) == 2
    assert "MRN-1" not in r.text and "MRN-2" not in r.text  # sealed, as stored
    log_key = desk.client.get("/v1/checkpoints/key", headers=desk.api).text.strip()
    assert verify_evidence(r.text, log_key).entries == 2
    assert len(desk.queries()) == before  # no PHI shown, so no read recorded
    assert desk.client.get("/console/investigations/nope/evidence").status_code == 404


def test_the_investigations_list_filters_by_status_and_pages(
        desk: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(casework, "INVESTIGATIONS_PAGE", 2)
    desk.sign_in("ivan")
    desk.choose("LEGAL")
    first, second, third = (_open(desk, f"Case {n}") for n in (1, 2, 3))
    r = desk.client.post(f"/v1/investigations/{second}/close", headers=desk.api, json={
        "outcome": "not_a_breach", "risk_assessment": {
            "nature_and_extent": "none", "recipient": "none", "mitigation": "none"}})
    assert r.status_code == 200, r.text

    def listed(path: str) -> tuple[list[str], str | None]:
        page = desk.client.get(path)
        assert page.status_code == 200, page.text
        ids = re.findall(r'<tr class="investigation investigation-[a-z]+"><td><a href='
                         r'"/console/investigations/([^"]+)"', page.text)
        more = re.search(r'id="older" href="([^"]+)"', page.text)
        return ids, more.group(1).replace("&amp;", "&") if more else None

    ids, more = listed("/console/investigations")
    assert ids == [third, second] and more  # newest opened first
    rest, last = listed(more)
    assert rest == [first] and last is None
    assert listed("/console/investigations?status=open") == ([third, first], None)
    assert listed("/console/investigations?status=closed") == ([second], None)
    # a cursor belongs to its filter
    assert desk.client.get(more.replace("/console/investigations?",
                                        "/console/investigations?status=open&")
                           ).status_code == 400
    assert desk.client.get("/console/investigations?status=lost").status_code == 400


def _alert_seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r"<small>seq (\d+)</small>", html)]


def _actions_by_seq(desk: Console) -> dict[int, str]:
    r = desk.client.get("/v1/ledger/entries", headers=desk.api)
    assert r.status_code == 200, r.text
    return {e["seq"]: e["event"]["action"] for e in r.json()["entries"]}


def test_the_alert_queue_filters_by_the_action_of_the_entry(
        desk: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    # MRN-1 is a VIP: an export and a print of it raise vip_access as a read does, so only
    # the entry's action tells these alerts apart.
    exported = desk.post(event("export", at(30), patient="MRN-1"))
    printed = desk.post(event("print", at(31), patient="MRN-1"))
    desk.sign_in("ivan")
    desk.choose("HOPERAT")
    actions = _actions_by_seq(desk)
    everything = _alert_seqs(desk.client.get("/console/alerts").text)
    assert {exported, printed} <= set(everything)

    def seqs(query: str) -> list[int]:
        page = desk.client.get(f"/console/alerts?{query}")
        assert page.status_code == 200, page.text
        return _alert_seqs(page.text)

    def expected(*chosen: str) -> list[int]:
        return [s for s in everything if actions[s] in chosen]

    assert seqs("action=export") == expected("export")
    assert set(expected("export")) == {exported}
    reads = seqs("action=read")
    assert reads == expected("read") and len(set(reads)) >= 2 and exported not in reads
    # several actions: repeated (a multiple select) or comma-separated
    assert seqs("action=export&action=print") == expected("export", "print")
    assert set(expected("export", "print")) == {printed, exported}
    assert seqs("action=print,read") == expected("print", "read")
    assert seqs("action=login") == []
    # with the other filters
    assert seqs("action=read&rule=break_glass") == [
        s for s in reads if s in seqs("rule=break_glass")]
    # the chosen actions stay selected in the form
    page = desk.client.get("/console/alerts?action=export")
    assert '<option value="export" selected>' in page.text
    assert '<option value="read" selected>' not in page.text

    before = len(desk.entries())
    for bad in ("action=nonsense", "action=read,nonsense", "action=read&action=READ"):
        r = desk.client.get(f"/console/alerts?{bad}")
        assert r.status_code == 400 and "Check these filters: action." in r.text, bad
        assert not _alert_seqs(r.text)
    assert len(desk.entries()) == before  # a refused page records no read

    monkeypatch.setattr(casework, "ALERTS_PAGE", 1)
    first = desk.client.get("/console/alerts?action=read")
    assert _alert_seqs(first.text) == reads[:1]
    more = re.search(r'id="older" href="([^"]+)"', first.text)
    assert more and "action=read" in more.group(1)
    link = more.group(1).replace("&amp;", "&")
    assert _alert_seqs(desk.client.get(link).text) == reads[1:2]
    # the cursor belongs to its actions
    other = desk.client.get(link.replace("action=read", "action=export"))
    assert other.status_code == 400 and "cursor" in other.text


def test_the_alert_queues_time_range_is_compared_as_instants(desk: Console) -> None:
    # at(10) and at(20) are the reads of the desk, at 14:10 and 14:20 UTC to the
    # millisecond: typed as minutes or with an offset, a bound on them is exact.
    desk.sign_in("ivan")
    desk.choose("HOPERAT")
    actions = _actions_by_seq(desk)
    everything = _alert_seqs(desk.client.get("/console/alerts").text)
    reads = sorted({s for s in everything if actions[s] == "read"})
    assert len(reads) == 2
    for query in ("from=2026-11-02T14:10&to=2026-11-02T14:20",
                  "from=2026-11-02T15:10:00%2B01:00&to=2026-11-02T09:20:00-05:00"):
        page = desk.client.get(f"/console/alerts?action=read&{query}")
        assert page.status_code == 200, page.text
        assert set(_alert_seqs(page.text)) == {reads[0]}, query


def _open_discovered(desk: Console, title: str, discovered_at: str) -> str:
    listing = desk.client.get("/console/investigations")
    r = desk.client.post("/console/investigations", data={
        "title": title, "discovered_at": discovered_at, "from": "2026-11-01T00:00",
        "to": "2026-12-01T00:00", "actors": "agent-1", "csrf": desk.csrf(listing.text)},
        follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def test_the_investigations_list_filters_by_when_the_breach_was_discovered(
        desk: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    desk.sign_in("ivan")
    desk.choose("LEGAL")
    # a case either side of each bound of 27-28 November (UTC days, the 28th included)
    before_from = _open_discovered(desk, "Before", "2026-11-26T23:59")
    at_from = _open_discovered(desk, "At from", "2026-11-27T00:00")
    end_of_to = _open_discovered(desk, "Last minute", "2026-11-28T23:59")
    after_to = _open_discovered(desk, "After", "2026-11-29T00:00")

    def listed(path: str) -> tuple[list[str], str | None]:
        page = desk.client.get(path)
        assert page.status_code == 200, page.text
        ids = re.findall(r'<tr class="investigation investigation-[a-z]+"><td><a href='
                         r'"/console/investigations/([^"]+)"', page.text)
        more = re.search(r'id="older" href="([^"]+)"', page.text)
        return ids, more.group(1).replace("&amp;", "&") if more else None

    assert listed("/console/investigations")[0] == [after_to, end_of_to, at_from,
                                                    before_from]
    base = "/console/investigations?from=2026-11-27&to=2026-11-28"
    assert listed(base) == ([end_of_to, at_from], None)
    assert listed("/console/investigations?from=2026-11-27")[0] == [after_to, end_of_to,
                                                                   at_from]
    assert listed("/console/investigations?to=2026-11-28")[0] == [end_of_to, at_from,
                                                                 before_from]
    # an instant with an offset is the same moment: 01:00+01:00 is midnight UTC
    assert listed("/console/investigations?from=2026-11-27T01:00:00%2B01:00")[0] == [
        after_to, end_of_to, at_from]
    assert listed("/console/investigations?from=2026-11-27T00:01")[0] == [after_to,
                                                                         end_of_to]
    assert listed(f"{base}&status=closed") == ([], None)
    page = desk.client.get(base)
    assert 'value="2026-11-27"' in page.text and 'value="2026-11-28"' in page.text

    before = len(desk.entries())
    for bad, field in (("from=2026-13-01", "from"), ("to=yesterday", "to"),
                       ("from=2026-11-27T00:00:00", "from")):
        r = desk.client.get(f"/console/investigations?{bad}")
        assert r.status_code == 400 and f"Check these filters: {field}." in r.text, bad
        assert "investigation investigation-" not in r.text
    assert len(desk.entries()) == before

    monkeypatch.setattr(casework, "INVESTIGATIONS_PAGE", 1)
    ids, more = listed(base)
    assert ids == [end_of_to] and more and "from=2026-11-27" in more and "to=2026-11-28" in more
    assert listed(more) == ([at_from], None)
    # the cursor belongs to its range
    assert desk.client.get(more.replace("from=2026-11-27", "from=2026-11-26")
                           ).status_code == 400


def test_the_ledger_pages_time_bounds_compare_as_instants(desk: Console) -> None:
    """A bound typed with an offset, exactly on an entry's time, includes it (``from``)
    or leaves it out (``to``): bounds become the views' UTC text, as on the other lists."""
    desk.sign_in("ivan")
    desk.choose("HOPERAT")
    seq = desk.post(read("MRN-9", "2026-11-02T09:00:00.000-05:00"))
    _settle(desk)

    def seqs(**bounds: str) -> list[str]:
        page = desk.client.get("/console/ledger", params={"action": "read", **bounds})
        assert page.status_code == 200, page.text
        return re.findall(r'<tr class="entry action-read"><td>(\d+)</td>', page.text)

    exact = "2026-11-02T09:00:00-05:00"  # the same instant as 14:00:00Z
    assert str(seq) in seqs(**{"from": exact})
    assert str(seq) not in seqs(to=exact)
    assert str(seq) in seqs(to="2026-11-02T09:00:01-05:00")
    assert desk.client.get("/console/ledger", params={"from": "yesterday"}).status_code == 400
