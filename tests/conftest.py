"""One fixture parametrises the database: every test that takes ``database_url`` runs on
SQLite and on PostgreSQL. With CI=true a PostgreSQL test never skips: it fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from api.app import build_services, create_app
from api.services import Services
from ledger.settings import Settings
from tests.support import (
    auth_headers,
    fastapi_app,
    fresh_postgres,
    service_key,
)

# No per-example deadline: examples that touch a database or sign take longer on a busy CI
# machine than on a developer's, and a slow example is not a wrong one.
hypothesis_settings.register_profile("phi-ledger", deadline=None)
hypothesis_settings.load_profile("phi-ledger")

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    yield from _fresh_postgres()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """For the few tests that are about PostgreSQL itself (each says why)."""
    yield from _fresh_postgres()


def _fresh_postgres() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, key_file=tmp_path / "keys.json")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The service, authenticated by default (headers) as an application of ledger
    `default` holding every role but admin (tests.support.TEST_ROLES). Its key is made
    without ledger entries, so the ledger starts empty and seqs count from 1."""
    app = create_app(settings, configure_logs=False)
    with TestClient(app) as c:
        c.headers.update(auth_headers(service_key(fastapi_app(app).state.services)))
        yield c


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    """The service container without HTTP, for tests that drive ingest and projections."""
    services = build_services(settings)
    try:
        yield services
    finally:
        services.writer.stop()
        services.store.close()
