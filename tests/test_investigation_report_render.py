"""The HTML report renders in a real browser (headless Chromium through Selenium), served
by ``phi-ledger serve`` with its Content-Security-Policy, on SQLite and PostgreSQL: the
stylesheet is applied (allowed by its hash, no ``unsafe-inline``), the browser reports no
CSP violation, the SVG timeline holds one mark per access and lane, coloured by action,
and the screenshot is saved under ``test-artifacts/`` for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ledger.settings import Settings
from tests.support import ROOT, ServerProcess, auth_headers
from tests.test_investigations_api import WINDOW, scenario
from tests.test_transparency_cli import db_env

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

ARTIFACTS = ROOT / "test-artifacts"


def _driver() -> WebDriver:
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.fail("chromium and chromium-driver are required (scripts/ensure-chromium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_the_report_renders_in_chromium_with_its_csp(settings: Settings, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    from selenium.webdriver.common.by import By

    with ServerProcess(db_env(settings), log_path=tmp_path / "server.log") as server:
        with server.client(timeout=30) as c:
            seqs = scenario(c)
            r = c.post("/v1/investigations", json={
                "title": "Stolen laptop <script>alert(1)</script>",
                "discovered_at": "2026-11-26T09:00:00-05:00",
                "scope": {**WINDOW, "devices": ["ws-stolen"]}})
            inv = r.json()["investigation_id"]
            url = f"{server.url}/v1/investigations/{inv}?purpose=HOPERAT&format=html"
            served = c.get(url)
            assert served.status_code == 200
            csp = served.headers["content-security-policy"]
            assert "unsafe-inline" not in csp and "style-src 'sha256-" in csp
        driver = _driver()
        try:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd(
                "Network.setExtraHTTPHeaders", {"headers": auth_headers(server.api_key or "")})
            driver.get(url)
            title = driver.find_element(By.TAG_NAME, "h1")
            assert "<script>" in title.text  # shown as text, never run
            table = driver.find_element(By.TAG_NAME, "table")
            assert table.value_of_css_property("border-collapse") == "collapse"  # style ran
            marks = driver.find_elements(By.CSS_SELECTOR, "svg .mark")
            timeline_seqs = {s for k, s in seqs.items()
                             if k in ("failed_login", "login", "read1", "read2", "export",
                                      "disclose", "denied")}
            assert {int(m.get_attribute("data-seq") or "absent") for m in marks} == timeline_seqs
            # each access is drawn on its actor's, device's and IP's lanes
            assert len(marks) == 3 * len(timeline_seqs)
            colours = {m.get_attribute("data-action"): m.get_attribute("fill") for m in marks}
            assert colours["read"] != colours["export"] != colours["disclose"]
            lanes = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "svg text.lane-label")]
            assert lanes == ["actor agent-kim", "device ws-stolen", "ip 203.0.113.9"]
            violations = [e for e in driver.get_log("browser")
                          if "Content Security Policy" in e.get("message", "")]
            assert violations == []
            ARTIFACTS.mkdir(exist_ok=True)
            name = f"investigation-report-{request.node.callspec.id}.png"
            assert driver.save_screenshot(str(ARTIFACTS / name))
        finally:
            driver.quit()
