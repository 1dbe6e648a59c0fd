"""The console in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against ``phi-ledger serve`` in its own process,
on SQLite and PostgreSQL.

A privacy officer's day: sign in with a TOTP code, look up a patient, read the timeline
and the accounting, open a user from the timeline, see the reads recorded on the ledger
page, sign out. A screenshot of every page goes to ``test-artifacts/console/``
(git-ignored); ``CONSOLE_SCREENSHOTS=docs/images`` writes them there instead.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth.credentials import totp_code, totp_step
from ledger.settings import Settings
from tests.support import IN_CI, ROOT, ServerProcess, contract_example, make_event, provision_user

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
PASSWORD = "correct horse battery staple"
PATIENT = "MRN-0012345"
SHOTS = ROOT / os.environ.get("CONSOLE_SCREENSHOTS", "test-artifacts/console")


def _browser() -> Any:
    if not (CHROMIUM and DRIVER):
        if IN_CI:
            pytest.fail("chromium and chromium-driver are missing and CI=true "
                        "(scripts/test installs them)")
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


def _seed_history(server: ServerProcess) -> None:
    events = [make_event(action="create", resource={"type": "patient", "id": PATIENT},
                         occurred_at="2026-11-20T09:00:00-05:00",
                         data={"name": "Ana M. Reyes", "dob": "1980-02-03"})]
    for day in range(20, 27):
        for i, agent in enumerate(("agent-0042", "agent-0007", "agent-0013")):
            events.append(make_event(
                occurred_at=f"2026-11-{day}T{9 + i * 3:02d}:15:00-05:00",
                actor={"id": agent, "kind": "user", "role": "call_agent"}))
    events.append(make_event(actor={"id": "agent-0099", "kind": "user", "role": "nurse"},
                             purpose="ETREAT", occurred_at="2026-11-25T23:40:00-05:00"))
    events.append({**contract_example(), "purpose": "LEGAL",
                   "occurred_at": "2026-11-26T14:03:22.120-05:00"})
    with server.client() as api:
        r = api.post("/v1/events/batch", json={"events": events})
        assert r.status_code == 201, r.text
        last = r.json()["receipts"][-1]["seq"]
        # read-your-writes: wait until the views hold the last entry
        r = api.get(f"/v1/patients/{PATIENT}/accesses",
                    params={"purpose": "HOPERAT", "min_seq": last, "limit": 1})
        assert r.status_code == 200, r.text


def _shot(driver: Any, backend: str, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(max(height, 700), 4000))
    # The window's own frame takes part of its height: grow it by that much, so the
    # whole page is in the picture.
    frame = min(max(height, 700), 4000) - int(driver.execute_script("return innerHeight"))
    driver.set_window_size(1280, min(max(height, 700) + frame, 4000))
    prefix = "" if "docs" in str(SHOTS) else f"{backend}-"
    assert driver.save_screenshot(str(SHOTS / f"{prefix}console-{name}.png"))
    driver.set_window_size(1280, 1000)


def _until(driver: Any, test: Any, what: str) -> None:
    """Wait (generously) for a navigation the last click started."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: test(d), message=what)


def _at(path: str) -> Any:
    return lambda d: d.current_url.split("://", 1)[1].split("/", 1)[1].startswith(
        path.lstrip("/"))


def _code(seed: str) -> str:
    return totp_code(seed, totp_step(datetime.now(UTC)))


def _casework(b: Any, url: str, backend: str) -> None:
    """The alert queue (an alert acknowledged) and an investigation opened from the scope
    form: what a reviewer needs on each page, screenshots, print and keyboard checks."""
    # The break-the-glass read raises an alert once monitoring has seen it.
    b.get(f"{url}/console/alerts")
    deadline = time.monotonic() + 20
    while not b.find_elements(By.CSS_SELECTOR, "tr.rule-break_glass"):
        assert time.monotonic() < deadline, "no break_glass alert"
        time.sleep(0.2)
        b.refresh()
    row = b.find_element(By.CSS_SELECTOR, "tr.rule-break_glass")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:6] == ["break_glass", cells[2], "open", "agent-0099", PATIENT]
    assert row.find_element(By.LINK_TEXT, "agent-0099").get_attribute("href").endswith(
        "/console/users/agent-0099")
    row.find_element(By.TAG_NAME, "summary").click()  # open the triage forms
    reason = row.find_element(By.CSS_SELECTOR, "input[id^=reason-acknowledge]")
    assert reason.is_displayed()
    _shot(b, backend, "alerts")
    reason.send_keys("night nurse, patient in the ED")
    row.find_element(By.XPATH, ".//button[text()='Acknowledge']").click()
    _until(b, lambda d: d.find_elements(By.ID, "done"), "the triage notice")
    assert "acknowledged" in b.find_element(By.ID, "done").text
    _until(b, lambda d: d.find_element(By.CSS_SELECTOR, "tr.rule-break_glass td:nth-child(4)"
                                       ).text == "acknowledged" or d.refresh(),
           "the alert acknowledged")

    # an investigation over the patient's week, opened from the scope form
    b.get(f"{url}/console/investigations")
    assert "No investigations yet." in b.find_element(By.ID, "investigations").text
    b.find_element(By.ID, "i-title").send_keys("Night-shift access review")
    for field, value in (("i-discovered", "2026-11-27T09:00"), ("i-from", "2026-11-20T00:00"),
                         ("i-to", "2026-11-27T00:00")):
        # datetime-local takes typed input in the browser's locale format; set the value
        b.execute_script("arguments[0].value = arguments[1]", b.find_element(By.ID, field),
                         value)
    b.find_element(By.ID, "i-patients").send_keys(PATIENT)
    b.find_element(By.ID, "open-investigation").click()
    _until(b, lambda d: d.find_elements(By.ID, "investigation-id"), "the investigation")
    assert "Night-shift access review" in b.page_source
    duties = [r.text for r in b.find_elements(By.CSS_SELECTOR, "#duties tbody tr")]
    # one unsecured patient: the individual by discovery + 60 days, HHS in the annual log
    # (60 days after the end of the discovery's year)
    assert len(duties) == 2 and duties[0].startswith("individuals 2027-01-26")
    assert duties[1].startswith("hhs 2027-03-01")
    # the patient's week: the create, 21 reads, the break-the-glass read, the disclosure
    timeline = b.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    assert len(timeline) == 24
    svg = b.find_element(By.CSS_SELECTOR, "svg.timeline")
    assert len(svg.find_elements(By.CSS_SELECTOR, ".mark")) == 24
    assert len(svg.find_elements(By.CSS_SELECTOR, "rect.alert")) == 1  # the alerted read
    assert len(svg.find_elements(By.CSS_SELECTOR, ".break-glass-ring")) == 1
    affected = b.find_elements(By.CSS_SELECTOR, "#affected tbody tr")
    assert len(affected) == 1 and affected[0].text.startswith(f"{PATIENT} unknown no")
    assert b.find_element(By.ID, "evidence").get_attribute("href").endswith("/evidence")
    _shot(b, backend, "investigation")
    # printed: the navigation and the forms go, the timeline stays
    b.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert not b.find_element(By.CSS_SELECTOR, "header.top nav").is_displayed()
    assert not b.find_element(By.ID, "sign-out").is_displayed()
    assert svg.is_displayed()
    b.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})

    b.get(f"{url}/console/investigations")
    rows = b.find_elements(By.CSS_SELECTOR, "#investigations tbody tr.investigation")
    assert len(rows) == 1 and "Night-shift access review" in rows[0].text
    assert rows[0].text.endswith("open")
    _keyboard_reaches_everything(b)
    _shot(b, backend, "investigations")


def _keyboard_reaches_everything(b: Any) -> None:
    """Tab from the top reaches every visible link and control, in order, each drawn
    with the 3 px focus outline."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    b.refresh()  # focus starts at the top of a freshly loaded page
    wanted = [e for e in b.find_elements(
        By.CSS_SELECTOR, "a[href], button, input:not([type=hidden]), select, summary")
        if e.is_displayed() or e.get_attribute("class") == "skip"]
    reached: list[Any] = []
    for _ in range(len(wanted) * 6):  # a date-and-time field takes a Tab per part
        ActionChains(b).send_keys(Keys.TAB).perform()
        active = b.switch_to.active_element
        if reached and active == reached[-1]:
            continue
        if active.tag_name == "body" or active in reached:
            break
        assert active.value_of_css_property("outline-style") == "solid", active.tag_name
        assert active.value_of_css_property("outline-width") == "3px", active.tag_name
        reached.append(active)

    def names(elements: list[Any]) -> list[str]:
        return [f"{e.tag_name}:{e.text or e.get_attribute('name')}" for e in elements]

    assert reached == wanted, (names(reached), names(wanted))


def test_a_privacy_officers_day_in_the_browser(database_url: str, tmp_path: Path,
                                               browser: Any) -> None:
    backend = "postgres" if database_url.startswith("postgresql") else "sqlite"
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    seed = provision_user(settings, "olivia", PASSWORD,
                          roles=["auditor", "investigator", "verifier"])
    env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_KEY_FILE": str(tmp_path / "keys.json"),
           "LEDGER_LOG_FORMAT": "json"}
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        _seed_history(server)
        b = browser
        b.get(f"{server.url}/console/patients/{PATIENT}")
        # not signed in: the sign-in page, remembering the page asked for
        assert "/console/sign-in" in b.current_url and "next=" in b.current_url
        _shot(b, backend, "sign-in")
        b.find_element(By.ID, "username").send_keys("olivia")
        b.find_element(By.ID, "password").send_keys(PASSWORD)
        b.find_element(By.ID, "totp").send_keys(_code(seed))
        b.find_element(By.ID, "sign-in").click()
        # PHI: first, why
        _until(b, _at("/console/purpose"), "the purpose page")
        _shot(b, backend, "purpose")
        b.find_element(By.ID, "choose-purpose").click()  # HOPERAT, preselected
        _until(b, _at(f"/console/patients/{PATIENT}"), "the patient page")
        assert b.find_element(By.ID, "purpose").text.startswith("HOPERAT")
        record = b.find_element(By.ID, "record").text
        assert "Ana M. Reyes" in record and "1980-02-03" in record
        rows = b.find_elements(By.CSS_SELECTOR, "#accesses tbody tr.access")
        # create, 21 reads, break-the-glass, disclosure; and `query` rows: the seeding's
        # recorded read, and maybe this page's own (its reads run side by side)
        queries = sum("query" in r.text for r in rows)
        assert len(rows) - queries == 24 and queries >= 1
        svg = b.find_element(By.CSS_SELECTOR, "svg.timeline")
        assert len(svg.find_elements(By.CSS_SELECTOR, ".mark")) - len(
            svg.find_elements(By.CSS_SELECTOR, ".action-query")) == 24
        assert len(svg.find_elements(By.CSS_SELECTOR, ".action-disclose")) == 1
        assert len(svg.find_elements(By.CSS_SELECTOR, ".break-glass-ring")) == 1
        lanes = [t.text for t in svg.find_elements(By.CSS_SELECTOR, ".lane-label")]
        assert {"agent-0042", "agent-0007", "agent-0013", "agent-0099"} <= set(lanes)
        disclosures = b.find_elements(By.CSS_SELECTOR, "#disclosures tbody tr")
        assert len(disclosures) == 1 and "Dr. A. Rivera" in disclosures[0].text
        # the stylesheet applied (CSP allows 'self'): the header's rule is drawn
        assert b.find_element(By.CSS_SELECTOR, "header.top").value_of_css_property(
            "border-bottom-style") == "solid"
        _shot(b, backend, "patient")
        # keyboard: the skip link is the first stop and leads to the content
        b.find_element(By.TAG_NAME, "body").send_keys("\ue004")  # Tab
        assert b.switch_to.active_element.get_attribute("class") == "skip"

        b.find_element(By.ID, "letter").click()
        _until(b, _at(f"/console/patients/{PATIENT}/accounting"), "the letter")
        assert "Accounting of disclosures" in b.find_element(By.TAG_NAME, "h1").text
        assert "Dr. A. Rivera" in b.page_source
        # the letter's own inline style is allowed by hash: its table has borders
        assert b.find_element(By.CSS_SELECTOR, "th").value_of_css_property(
            "border-top-style") == "solid"
        _shot(b, backend, "accounting-letter")
        b.back()
        _until(b, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.timeline"), "back")

        # a user on the timeline opens that user's page
        b.find_element(By.CSS_SELECTOR, 'svg.timeline a[href="/console/users/agent-0042"]'
                       ).click()
        _until(b, _at("/console/users/agent-0042"), "the user page")
        assert b.find_element(By.ID, "user-id").text == "agent-0042"
        # the create, 7 reads and the disclosure (make_event's actor is agent-0042)
        assert len(b.find_elements(By.CSS_SELECTOR, "#accesses tbody tr.access")) == 9
        assert b.find_elements(By.CSS_SELECTOR, "svg.volume .bar")
        assert len(b.find_elements(By.CSS_SELECTOR, "svg.timeline .mark")) == 9
        _shot(b, backend, "user")

        _casework(b, server.url, backend)

        # the reads this session made are in the ledger, as query entries
        b.get(f"{server.url}/console/ledger?action=query")
        entries = b.find_elements(By.CSS_SELECTOR, "#entries tbody tr.entry")
        # record, 2 access reports, accounting, letter, user's page, alerts, investigation
        assert len(entries) >= 8
        assert all("query" in e.text and "HOPERAT" in e.text for e in entries)
        whats = {e.find_elements(By.TAG_NAME, "td")[4].text for e in entries}
        assert {"patient_record", "access_report", "disclosure_accounting",
                "user_access_report", "alert_list", "investigation"} <= whats
        b.find_element(By.ID, "verify-now").click()
        _until(b, lambda d: d.find_elements(By.ID, "verified"), "the verdict")
        assert "the chain is intact" in b.find_element(By.ID, "verified").text
        assert "intact through seq" in b.find_element(By.ID, "last-verification").text
        _shot(b, backend, "ledger")

        b.get(f"{server.url}/console")
        _shot(b, backend, "home")
        b.find_element(By.ID, "sign-out").click()
        _until(b, _at("/console?signed_out"), "signed out")
        assert "You have signed out" in b.page_source
        b.get(f"{server.url}/console/patients/{PATIENT}")
        assert "/console/sign-in" in b.current_url and "Reyes" not in b.page_source
        # the server recorded the logout
        with server.client() as api:
            deadline = time.monotonic() + 10
            actions: list[str] = []
            while time.monotonic() < deadline and "logout" not in actions:
                r = api.get("/v1/ledger/entries")
                actions = [e["event"]["action"] for e in r.json()["entries"]]
            assert "logout" in actions and "login" in actions
            # the triage and the opening the browser made are ledger entries too
            assert {"alert_acknowledged", "investigation_opened"} <= set(actions)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
