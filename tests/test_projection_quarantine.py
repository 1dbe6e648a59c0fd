"""No single entry stops a view (issue 17).

* Hostile entries appended straight to the store, past validation, the way the writer
  appends (``GroupCommitWriter.append``): a time that overflows when converted to UTC, a
  NUL in a plain-text field, an integer no database column holds, a field of the wrong
  type. The running service's views keep up with the valid entries posted after them;
  each entry a view cannot apply is listed by the quarantine (table, ``/readyz``, the
  ``phi-ledger quarantine`` command) and counted by ``/metrics``; no valid entry is.
* A view that fails on one entry of a batch (an injected view), through both ways the
  projector applies batches (``step``: every view in one transaction; ``catch_up``: a
  transaction per view): the entry is set aside, every other entry of the batch applied.
* What is not the entry's fault is never blamed on it: a view that cannot reach its
  table pauses the follower and ``/readyz`` answers 503 while the database answers; a
  database cut mid-batch (PostgreSQL, through a proxy) sets nothing aside, and the batch
  is applied whole once the database is back.
* ``/readyz`` answers 503 while a view is behind by more than ``LEDGER_READY_MAX_LAG``.

SQLite and PostgreSQL (``settings``), except where a test says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import build_services, create_app
from api.services import Services
from ledger.admission import Accepted, Pending
from ledger.settings import Settings
from ledger.store import StoreUnavailable, open_store
from projections import quarantine
from projections.accesses import AccessesView
from projections.runner import Projector, all_views
from projections.view import Change, Sql, View
from tests.support import ROOT, auth_headers, fastapi_app, make_event, service_key
from tests.test_outage import TcpProxy, upstream_of

LEDGER = "default"
WAIT_SECONDS = 60.0  # a bound for a failure, never the measure of a pass


# -- helpers ----------------------------------------------------------------------------


def append_unvalidated(svc: Services, event: dict[str, Any]) -> int:
    """``event`` appended as the writer appends what ingest admitted, without ingest's
    validation; its seq."""
    pending = Pending(event["event_id"], svc.protection.fingerprint(LEDGER, event), event)
    outcome = svc.writer.append(LEDGER, [pending])
    assert isinstance(outcome, Accepted), outcome
    [receipt] = outcome.receipts
    return int(receipt.seq)


def hostile_events() -> dict[str, dict[str, Any]]:
    """Each hostile input of issue 17 that reaches a view, by what it is."""
    actor = make_event()["actor"]
    return {
        "overflowing time": make_event(occurred_at="9999-12-31T23:59:59-23:59"),
        "underflowing time": make_event(occurred_at="0001-01-01T00:00:00+23:59"),
        "NUL in text": make_event(actor={**actor, "id": "a\x00b"}),
        "huge integer": make_event(actor={**actor, "role": 2**63}),
        "wrong type": make_event(actor="agent-0042"),
    }


def reads(view: View, action: str) -> bool:
    return view.actions is None or action in view.actions


def quarantined(svc: Services) -> dict[tuple[str, int], str]:
    """``(view, seq) -> error`` of every quarantined entry of the ledger."""
    return {(q.view, q.seq): q.error for q in quarantine.listing(svc.store)
            if q.ledger == LEDGER and q.seq is not None}


def view_seqs(svc: Services, table: str) -> set[int]:
    with svc.store.reading() as curs:
        curs.execute(svc.store.sql(f"SELECT seq FROM {table} WHERE ledger = %s"), (LEDGER,))
        return {int(row[0]) for row in curs.fetchall()}


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_DATABASE_URL": settings.database_url,
            "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "error"}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[TestClient, Services]]:
    """The service with its follower running, and its services."""
    app = create_app(settings, configure_logs=False)
    with TestClient(app) as client:
        svc: Services = fastapi_app(app).state.services
        client.headers.update(auth_headers(service_key(svc)))
        yield client, svc


# -- hostile entries in the running service ---------------------------------------------


def test_hostile_entries_are_set_aside_and_every_view_keeps_up(
    service: tuple[TestClient, Services], settings: Settings
) -> None:
    client, svc = service
    first = client.post("/v1/events", json=make_event())
    assert first.status_code == 201, first.text
    hostile = {what: append_unvalidated(svc, event) for what, event in hostile_events().items()}
    later = [make_event(actor={**make_event()["actor"], "id": f"later-{i}"}) for i in range(3)]
    later_seqs = []
    for event in later:
        posted = client.post("/v1/events", json=event)
        assert posted.status_code == 201, posted.text
        later_seqs.append(posted.json()["seq"])

    # Every view reaches the newest entry: nothing stopped at a hostile one.
    assert svc.projector.wait_for(svc.store.last_notification(), WAIT_SECONDS), (
        svc.projector.positions(), quarantine.listing(svc.store))
    for i, seq in enumerate(later_seqs):
        found = client.get(f"/v1/users/later-{i}/accesses", params={"min_seq": seq,
                                                                "purpose": "HOPERAT"})
        assert found.status_code == 200, found.text
        assert [a["seq"] for a in found.json()["items"]] == [seq]
    accesses = view_seqs(svc, "view_accesses")
    assert {first.json()["seq"], *later_seqs} <= accesses

    aside = quarantined(svc)
    # Only hostile entries are set aside, never a valid one.
    assert {seq for _, seq in aside} <= set(hostile.values()), aside
    # A time that cannot be converted to UTC: set aside by every view that reads it.
    for what in ("overflowing time", "underflowing time"):
        for view in all_views():
            if reads(view, "read"):
                assert (view.name, hostile[what]) in aside, (what, view.name, aside)
                assert aside[(view.name, hostile[what])].startswith("OverflowError: ")
    # The rest: the accesses view (a row of every entry) holds each entry or has set it
    # aside, never both; the ones no column can hold are set aside on both databases.
    for what in ("NUL in text", "huge integer", "wrong type"):
        seq = hostile[what]
        assert ((("accesses", seq) in aside) != (seq in accesses)), (what, aside)
    for what in ("huge integer", "wrong type"):
        assert ("accesses", hostile[what]) in aside, (what, aside)
    if svc.store.dialect == "postgresql":  # text there cannot hold a NUL; SQLite's can
        assert ("accesses", hostile["NUL in text"]) in aside, aside
    # No PHI, no value in an error: a type and a fixed reason.
    for error in aside.values():
        assert "\x00" not in error and "agent-0042" not in error and "9999" not in error

    # /readyz: ready (the views move), and lists what was set aside.
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and body["checks"]["projections"] == "ok"
    assert body["quarantine"]["count"] == len(aside)
    listed = {(e["view"], e["seq"]) for e in body["quarantine"]["entries"]
              if e["ledger"] == LEDGER}
    assert listed == set(aside)
    assert all(e["error"] == aside[(e["view"], e["seq"])]
               for e in body["quarantine"]["entries"])

    # /metrics: a count per view.
    metrics = client.get("/metrics").text
    for view in all_views():
        n = sum(1 for name, _ in aside if name == view.name)
        assert f'phi_ledger_projection_quarantined{{view="{view.name}"}} {float(n)}' in metrics

    # phi-ledger quarantine, as JSON and as lines.
    as_json = cli(settings, "quarantine", "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["count"] == len(aside)
    assert {(e["view"], e["seq"]) for e in document["entries"]} == set(aside)
    lines = cli(settings, "quarantine")
    assert lines.returncode == 0, lines.stderr
    rows = [line.split("\t") for line in lines.stdout.splitlines()]
    assert rows[0][:4] == ["view", "notification_id", "ledger", "seq"]
    assert {(r[0], int(r[3])) for r in rows[1:]} == set(aside)

    # A rebuild applies every entry again: what could not be applied is set aside again,
    # once, and the views end where they were.
    before = view_seqs(svc, "view_accesses")
    Projector(svc.store, protection=svc.protection).rebuild()
    assert quarantined(svc) == aside
    assert view_seqs(svc, "view_accesses") == before


# -- an injected view failing on one entry ------------------------------------------------


class Refuses(View):
    """``inner``, except that an entry whose event_id is in ``refused`` raises (as a view
    does on a value it cannot handle) -- in any batch that holds it."""

    def __init__(self, inner: View, refused: set[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.tables = inner.tables
        self.actions = inner.actions
        self.refused = refused

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        self.inner.apply(tx, sql, changes)
        if any(c.event["event_id"] in self.refused for c in changes):
            raise ValueError("cannot apply MRN-0012345")  # a message that quotes PHI

    def clear(self, tx: Any) -> None:
        self.inner.clear(tx)


@pytest.mark.parametrize("how", ["step", "catch_up"])
def test_one_failing_entry_is_set_aside_and_the_rest_of_its_batch_applied(
    settings: Settings, how: str
) -> None:
    svc = build_services(settings)
    try:
        events = [make_event() for _ in range(30)]
        receipts = svc.ingest.record_sync(LEDGER, events, batch=True).receipts
        bad = events[12]["event_id"]
        bad_seq = next(r.seq for r in receipts if r.event_id == bad)
        views = [Refuses(v, {bad}) if v.name == "accesses" else v for v in all_views()]
        projector = Projector(svc.store, views, batch=20)
        if how == "step":
            while projector.step():
                pass
        else:
            projector.catch_up()
        last = svc.store.last_notification()
        assert set(projector.positions().values()) == {last}
        assert [(q.view, q.ledger, q.seq) for q in quarantine.listing(svc.store)] == [
            ("accesses", LEDGER, bad_seq)]
        [entry] = quarantine.listing(svc.store)
        assert entry.error == "ValueError: a value is not valid"  # never the message
        # Every other entry of the batch, before and after the bad one, is in the view.
        assert view_seqs(svc, "view_accesses") == {r.seq for r in receipts} - {bad_seq}
    finally:
        svc.writer.stop()
        svc.store.close()


# -- not the entry's fault: paused, and /readyz says so -----------------------------------


class MissingTable(View):
    """A view whose table is gone (a real database error, not a value of any entry)."""

    name = "broken"
    tables = ("view_that_does_not_exist",)

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        if changes:
            tx.execute("INSERT INTO view_that_does_not_exist VALUES (1)")


def test_a_view_that_cannot_write_pauses_and_readyz_is_not_ready(settings: Settings) -> None:
    app = create_app(settings, configure_logs=False)
    with TestClient(app) as client:
        svc: Services = fastapi_app(app).state.services
        client.headers.update(auth_headers(service_key(svc)))
        svc.projector.wait_for(svc.store.last_notification(), WAIT_SECONDS)
        assert client.get("/readyz").status_code == 200
        # The running follower's views, with one that cannot write; then an entry.
        svc.projector.views.append(MissingTable())
        assert client.post("/v1/events", json=make_event()).status_code == 201
        until(lambda: svc.projector.paused is not None, "the follower pauses")
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["ready"] is False
        assert body["checks"]["database"] == "ok"  # the database answers, the views do not
        assert body["checks"]["projections"] == "paused"
        assert any(r.startswith("projections paused") for r in body["reasons"])
        # Nothing was blamed on the entry.
        assert quarantine.listing(svc.store) == []


def until(condition: Any, what: str) -> None:
    """Return once ``condition()`` holds; fail after :data:`WAIT_SECONDS`."""
    done = threading.Event()
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        done.wait(0.05)


def test_a_follower_paused_by_an_outage_is_not_ready_until_it_moves_again(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL only: a real outage, the network to the database cut (the proxy of
    tests/test_outage.py). The follower pauses; /readyz says why, and is ready again only
    once the follower has caught up."""
    proxy = TcpProxy(upstream_of(postgres_url)).start()
    try:
        settings = Settings(database_url=proxy.url_for(postgres_url),
                            key_file=tmp_path / "keys.json")
        app = create_app(settings, configure_logs=False)
        with TestClient(app) as client:
            svc: Services = fastapi_app(app).state.services
            client.headers.update(auth_headers(service_key(svc)))
            assert client.post("/v1/events", json=make_event()).status_code == 201
            until(lambda: client.get("/readyz").status_code == 200, "ready")
            proxy.cut()
            until(lambda: svc.projector.paused is not None, "the follower pauses")
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "projections paused: database unavailable" in ready.json()["reasons"]
            proxy.restore()
            until(lambda: client.get("/readyz").status_code == 200, "ready again")
            assert svc.projector.paused is None
            assert quarantine.listing(svc.store) == []
    finally:
        proxy.cut()


def test_readyz_is_not_ready_while_a_view_is_further_behind_than_the_bound(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json",
                        project_inline=False, ready_max_lag=2)
    app = create_app(settings, configure_logs=False)
    with TestClient(app) as client:
        svc: Services = fastapi_app(app).state.services
        client.headers.update(auth_headers(service_key(svc)))
        Projector(svc.store).catch_up()
        assert client.get("/readyz").status_code == 200
        # The oldest entry not yet applied is one no view can decode: still judged.
        append_unvalidated(svc, hostile_events()["overflowing time"])
        assert client.post("/v1/events", json=make_event()).status_code == 201
        assert client.get("/readyz").status_code == 200  # at the bound: still ready
        assert client.get("/metrics").status_code == 200
        assert client.post("/v1/events", json=make_event()).status_code == 201
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["checks"]["projections"] == "behind"
        assert any("3 entries behind (bound 2)" in r for r in body["reasons"]), body
        Projector(svc.store).catch_up()
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["quarantine"]["count"] >= 1


def test_a_database_cut_mid_batch_sets_nothing_aside(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL only: the outage is a real one, the network between the projector and
    the database cut (tests/test_outage.py's proxy) by the view in the middle of its
    batch, which then fails as a view on a lost connection would."""
    proxy = TcpProxy(upstream_of(postgres_url)).start()
    try:
        direct = build_services(Settings(database_url=postgres_url,
                                         key_file=tmp_path / "keys.json"))
        try:
            direct.ingest.record_sync(LEDGER, [make_event() for _ in range(10)], batch=True)
        finally:
            direct.writer.stop()
            direct.store.close()

        class CutsTheDatabase(View):
            name = "accesses"
            tables = ("view_accesses",)
            cut = False

            def __init__(self) -> None:
                self.inner = AccessesView()

            def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
                self.inner.apply(tx, sql, changes)
                if not CutsTheDatabase.cut:
                    CutsTheDatabase.cut = True
                    proxy.cut()
                    raise ValueError("failed while the database went away")

        store = open_store(proxy.url_for(postgres_url))
        try:
            projector = Projector(store, [CutsTheDatabase()], batch=4)
            with pytest.raises(StoreUnavailable):
                projector.catch_up()
            proxy.restore()
            answering(store)  # the pool's connections died with the cut
            assert projector.positions() == {"accesses": 0}
            projector.catch_up()
            assert projector.positions() == {"accesses": store.last_notification()}
            assert quarantine.listing(store) == []
            with store.reading() as curs:
                curs.execute("SELECT count(*) FROM view_accesses")
                assert curs.fetchone()[0] == 10
        finally:
            store.close()
    finally:
        proxy.cut()


def answering(store: Any) -> None:
    """Return once ``store`` answers again (each try may find a dead pooled connection)."""
    for _ in range(200):
        try:
            store.ping()
            return
        except StoreUnavailable:
            time.sleep(0.05)
    raise AssertionError("the database never answered again")


# -- the pure parts -----------------------------------------------------------------------


def test_error_text_never_repeats_what_the_error_quotes() -> None:
    quoted = "MRN-0012345 Jane Doe"
    for error in (ValueError(quoted), TypeError(quoted), KeyError(quoted),
                  OverflowError(quoted), RuntimeError(quoted), UnicodeEncodeError(
                      "utf-8", quoted, 0, 1, quoted)):
        text = quarantine.error_text(error)
        assert quoted not in text and "MRN" not in text
        assert text.startswith(f"{type(error).__name__}: ")
