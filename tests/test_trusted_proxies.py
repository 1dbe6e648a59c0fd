"""X-Forwarded-For is believed only from configured proxies (LEDGER_TRUSTED_PROXIES).

Not a database behaviour: the proxy settings are uvicorn's, decided before any store."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.serving import proxy_options


def _seen_address(options: dict[str, Any], forwarded: str) -> str:
    app = FastAPI()

    @app.get("/")
    def where(request: Request) -> dict[str, str]:
        return {"client": request.client.host if request.client else ""}

    config = uvicorn.Config(app, **options)
    config.load()  # wraps the app in uvicorn's proxy middleware when told to
    wrapped = config.loaded_app
    client = TestClient(wrapped, client=("127.0.0.1", 50000))  # a caller on the host
    answer = client.get("/", headers={"X-Forwarded-For": forwarded})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["client"])


def test_forwarded_for_from_the_host_itself_is_not_believed_by_default() -> None:
    assert proxy_options({})["proxy_headers"] is False
    assert _seen_address(proxy_options({}), "203.0.113.9") == "127.0.0.1"


def test_forwarded_for_is_believed_from_a_configured_proxy() -> None:
    options = proxy_options({"LEDGER_TRUSTED_PROXIES": "127.0.0.1"})
    assert _seen_address(options, "203.0.113.9") == "203.0.113.9"
