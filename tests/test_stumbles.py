"""What a newcomer meets first, said so they know what to do next: a 403 names the roles
that would be allowed, a 404 on a patient just posted says how to wait for the views, the
API's pages work without the internet, and a busy port names ``--port``."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.serving import listening_socket
from ledger.settings import Settings
from tests.support import IN_CI, ServerProcess, auth_headers, fastapi_app, service_key


def test_a_403_names_the_roles_that_would_be_allowed(client: TestClient) -> None:
    app = fastapi_app(client.app)
    ingest_only = auth_headers(service_key(app.state.services, roles=["ingest"]))
    r = client.get("/v1/patients/MRN-1/accesses", params={"purpose": "HOPERAT"},
                   headers=ingest_only)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert r.json()["error"]["message"].endswith("allowed: auditor, investigator")
    verifier = auth_headers(service_key(app.state.services, roles=["verifier"]))
    r = client.post("/v1/events", json={}, headers=verifier)
    assert r.status_code == 403 and r.json()["error"]["message"].endswith("allowed: ingest")


@pytest.mark.parametrize("path", ["/v1/patients/MRN-NEW-1", "/v1/patients/MRN-NEW-1/accesses",
                                  "/v1/patients/MRN-NEW-1/disclosures"])
def test_a_404_on_an_unknown_patient_says_how_to_wait_for_the_views(
        client: TestClient, path: str) -> None:
    r = client.get(path, params={"purpose": "HOPERAT"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "patient_not_found"
    message = r.json()["error"]["message"]
    assert "min_seq" in message and "trail" in message
    assert "MRN-NEW-1" not in message


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_pages_load_everything_from_the_service_itself(
        settings: Settings, page: str) -> None:
    # No credential: the pages are public, as a browser opens them.
    with TestClient(create_app(settings, configure_logs=False)) as browser:
        r = browser.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        policy = r.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "<script>" not in r.text and "style=" not in r.text  # nothing inline
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", r.text), "no remote asset"
        assets = re.findall(r"(?:src|href)=\"(/[^\"]+)\"", r.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
        for asset in assets:
            got = browser.get(asset)
            assert got.status_code == 200, asset
            assert len(got.content) > 20, asset
        init = [a for a in assets if a.endswith(("docs.js", "redoc.js"))]
        assert len(init) == 1 and "/docs/assets/openapi.json" in browser.get(init[0]).text
        # Swagger UI 4 renders OpenAPI 3.0 only: the pages' copy is labelled so.
        schema = browser.get("/docs/assets/openapi.json").json()
        assert schema["openapi"].startswith("3.0.") and "/v1/events" in schema["paths"]
        assert browser.get("/openapi.json").status_code == 200
        assert browser.get("/docs/assets/../../etc/passwd").status_code == 404
        assert browser.get("/docs/assets/index.html").status_code == 404


def test_redoc_is_the_reference_read_only(settings: Settings) -> None:
    with TestClient(create_app(settings, configure_logs=False)) as browser:
        script = browser.get("/docs/assets/redoc.js").text
        assert "supportedSubmitMethods: []" in script


def test_a_busy_port_names_the_port_option() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(SystemExit) as stopped:
            listening_socket("127.0.0.1", port, reuse_port=False)
        message = str(stopped.value.code)
        assert f"127.0.0.1:{port}" in message and "--port" in message
    finally:
        holder.close()


def test_a_browser_renders_the_api_pages_offline_under_their_csp(tmp_path: Path) -> None:
    """A real browser: the pages render every operation with nothing from the internet,
    and the browser reports no Content-Security-Policy violation (or any other error)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if IN_CI:
            pytest.fail("chromium and chromium-driver are missing and CI=true "
                        "(scripts/test installs them)")
        pytest.skip("no chromium/chromedriver on this machine")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--proxy-server=http://127.0.0.1:9"):  # no internet
        options.add_argument(argument)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {"LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
           "LEDGER_KEY_FILE": str(tmp_path / "keys.json")}
    with ServerProcess(env, api_key="(none)") as server:
        browser = webdriver.Chrome(options=options, service=Service(driver))
        try:
            for page in ("/docs", "/redoc"):
                browser.get(server.url + page)
                WebDriverWait(browser, 60).until(
                    lambda b: b.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
                title = browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title")
                assert title.text.startswith("phi-ledger"), page
                assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20, page
                problems = [e["message"] for e in browser.get_log("browser")
                            if e["level"] == "SEVERE"]
                assert not problems, (page, problems)
        finally:
            browser.quit()
