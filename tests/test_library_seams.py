"""The seams between this code and the libraries under it, pinned.

The product reaches into no library's private names (``_x`` modules or attributes): the
first test fails, naming the file, line and name, when one comes back. The rest pin the
public but less obvious behaviour the stores and the server rely on, so that a library
upgrade that changes it fails here, naming the library, its version and the attribute,
instead of somewhere deep in an append.
"""

from __future__ import annotations

import ast
import inspect
import sqlite3
from importlib.metadata import version
from pathlib import Path

import pytest
import uvicorn
from eventsourcing.persistence import ConnectionPoolClosedError
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from ledger.migrate import migrate
from ledger.store import open_store
from ledger.store.postgres import PostgresLedgerStore
from tests.store_contract import NOW, pendings

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("api", "ledger", "projections", "benchmarks")
OURS = {*PRODUCT, "tests", "alembic"}
EVENTSOURCING = f"eventsourcing {version('eventsourcing')}"
UVICORN = f"uvicorn {version('uvicorn')}"


def _private_uses(path: Path, root: Path = ROOT) -> list[str]:
    """Imports of a library's private module, and attributes of the form ``x._name``
    on anything but ``self``/``cls``/``super()`` or a module of ours."""
    tree = ast.parse(path.read_text(), str(path))
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    ours = set()  # names bound to modules of ours: their private names are ours too
    for node in imports:
        for alias in node.names:
            origin = (alias.name if isinstance(node, ast.Import)
                      else "." if node.level else node.module or "")
            if origin == "." or origin.split(".")[0] in OURS:
                ours.add(alias.asname or alias.name.split(".")[0])
    found = []
    for node in imports:
        if isinstance(node, ast.ImportFrom):
            modules = [node.module] if node.module and not node.level else []
        else:
            modules = [alias.name for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] not in OURS and any(p.startswith("_") and not p.startswith("__")
                                            for p in parts):
                found.append(f"{path.relative_to(root)}:{node.lineno} imports {module}")
    return found + _private_attributes(path.relative_to(root), tree, ours)


LIBRARY_OBJECTS = {"recorder", "datastore", "conn", "connection", "pool", "pgconn", "config",
                   "server", "curs", "cursor"}


def _private_attributes(path: Path, tree: ast.AST, ours: set[str]) -> list[str]:
    """``obj._name`` where ``obj`` is a name or attribute that, by this code's naming,
    holds a library object (``self.recorder._lock_table``, ``conn._sqlite_conn``)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            continue
        owner = node.value
        name = (owner.id if isinstance(owner, ast.Name)
                else owner.attr if isinstance(owner, ast.Attribute) else None)
        if name in LIBRARY_OBJECTS and name not in ours:
            found.append(f"{path}:{node.lineno} uses {name}.{node.attr}")
    return found


def test_the_product_uses_no_private_name_of_a_library() -> None:
    files = [p for top in PRODUCT for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 50  # the scan found the code
    assert [use for path in files for use in _private_uses(path)] == []


def test_the_scan_finds_the_private_uses_it_is_for(tmp_path: Path) -> None:
    """The three this codebase once had, as they were written."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from uvicorn._subprocess import get_subprocess\n"
        "from ledger.transparency._codec import b64encode\n"
        "def f(self, conn, curs):\n"
        "    raw = conn._sqlite_conn\n"
        "    self.recorder._lock_table(curs)\n"
        "    return self._mine, raw\n"
    )
    assert _private_uses(sample, tmp_path) == [
        "sample.py:1 imports uvicorn._subprocess",
        "sample.py:4 uses conn._sqlite_conn",
        "sample.py:5 uses recorder._lock_table",
    ]


# -- eventsourcing, SQLite (ledger/store/sqlite.py) --------------------------------------


def test_an_eventsourcing_sqlite_cursor_opens_as_the_sqlite3_cursor(tmp_path: Path) -> None:
    datastore = SQLiteDatastore(str(tmp_path / "seam.db"))
    try:
        with datastore.get_connection(commit=False) as conn, conn.cursor() as opened:
            assert isinstance(opened, sqlite3.Cursor), (
                f"{EVENTSOURCING}: SQLiteConnection.cursor() no longer opens (as a context"
                " manager) as a sqlite3.Cursor; ledger/store/sqlite.py reaches the pooled"
                " sqlite3 connection through its .connection")
            assert isinstance(opened.connection, sqlite3.Connection)
    finally:
        datastore.close()


def test_a_closed_eventsourcing_sqlite_pool_raises_its_closed_error(tmp_path: Path) -> None:
    datastore = SQLiteDatastore(str(tmp_path / "seam.db"))
    datastore.close()
    with pytest.raises(ConnectionPoolClosedError), datastore.get_connection(commit=False):
        pass  # pragma: no cover - the pool refuses before
    # (ledger/store/sqlite.py turns exactly this class into StoreUnavailable)


def test_the_eventsourcing_sqlite_insert_statement_takes_the_four_columns(
    tmp_path: Path,
) -> None:
    datastore = SQLiteDatastore(str(tmp_path / "seam.db"))
    try:
        recorder = SQLiteApplicationRecorder(datastore, events_table_name="stored_events")
        statement = getattr(recorder, "insert_events_statement", None)
        assert isinstance(statement, str), (
            f"{EVENTSOURCING}: SQLiteApplicationRecorder.insert_events_statement is gone;"
            " ledger/store/sqlite.py inserts entries with it")
        assert "stored_events" in statement and statement.count("?") == 4, statement
    finally:
        datastore.close()


def test_the_store_s_notification_ids_are_the_library_s(database_url: str) -> None:
    """The stores read notifications with their own SQL (rowid on SQLite, the
    notification_id column on PostgreSQL): the same ids the library's recorder gives."""
    migrate(database_url)
    store = open_store(database_url)
    try:
        store.append({"a": [pendings(3)], "b": [pendings(2)]}, NOW)
        recorder = getattr(store, "recorder", None)
        assert recorder is not None
        theirs = [(n.id, bytes(n.state)) for n in recorder.select_notifications(
            start=0, limit=10, inclusive_of_start=False)]
        assert [(i, bytes(s)) for i, s in store.notifications(0, 10)] == theirs, (
            f"{EVENTSOURCING}: select_notifications ids differ from the store's own reading")
        assert len(theirs) == 5
    finally:
        store.close()


# -- eventsourcing, PostgreSQL (ledger/store/postgres.py) --------------------------------


def test_the_eventsourcing_postgres_recorder_keeps_its_public_lock_and_channel(
    postgres_url: str,
) -> None:
    migrate(postgres_url)
    store = open_store(postgres_url)
    try:
        assert isinstance(store, PostgresLedgerStore)
        recorder = store.recorder
        channel = getattr(recorder, "channel_name", None)
        assert channel == "stored_events", (
            f"{EVENTSOURCING}: PostgresApplicationRecorder.channel_name changed; the"
            " store's NOTIFY and its followers' LISTEN use it")
        assert isinstance(getattr(recorder, "lock_table_statements", None), list), (
            f"{EVENTSOURCING}: PostgresApplicationRecorder.lock_table_statements is gone;"
            " ledger/store/postgres.py sets it to the advisory lock")
        pool = store.datastore.pool
        kwargs = getattr(pool, "kwargs", None)
        assert isinstance(kwargs, dict), (
            f"psycopg_pool {version('psycopg-pool')}: ConnectionPool.kwargs is gone;"
            " ledger/store/postgres.py bounds connecting and statements through it")
        assert kwargs["connect_timeout"] == 2
    finally:
        store.close()


# -- uvicorn (api/serving.py) -------------------------------------------------------------


def test_uvicorn_serves_given_sockets_after_configuring_its_logging() -> None:
    assert callable(getattr(uvicorn.Config, "configure_logging", None)), (
        f"{UVICORN}: Config.configure_logging is gone; api/serving.py calls it in each"
        " worker process")
    assert "sockets" in inspect.signature(uvicorn.Server.run).parameters, (
        f"{UVICORN}: Server.run no longer takes sockets=; api/serving.py hands each worker"
        " its own listening socket")


def test_a_fhir_resources_field_takes_a_model_of_its_class_as_it_is() -> None:
    """api/formats/fhir_validation.py hands an element the library already validated to
    its parent as that model, and finds each field's element class through
    ``FhirBase.get_model_klass``."""
    from fhir.resources.R4B.auditevent import AuditEvent
    from fhir.resources.R4B.coding import Coding
    from fhir_core.types import FhirBase

    library = f"fhir.resources {version('fhir.resources')}, fhir_core {version('fhir_core')}"
    coding = Coding.model_validate({"system": "urn:x", "code": "rest"})
    event = AuditEvent.model_validate({
        "type": coding, "recorded": "2026-11-26T14:03:22Z",
        "agent": [{"requestor": True, "who": {"display": "x"}}],
        "source": {"observer": {"display": "y"}}})
    assert event.type is coding, (
        f"{library}: a field no longer keeps a model of its class as given")
    annotation = AuditEvent.model_fields["type"].annotation
    assert isinstance(annotation, type) and issubclass(annotation, FhirBase), (
        f"{library}: AuditEvent.type is no longer typed with a FhirBase element type")
    assert annotation.get_model_klass() is Coding, (
        f"{library}: FhirBase.get_model_klass no longer names the element's model")


def test_the_fhir_shape_walk_recognises_the_library_schemas() -> None:
    """api/formats/fhir_validation.py walks an AuditEvent only along models whose core
    schemas have the validator chain its module docstring reasons about; an upgrade that
    changes that chain turns the walk off (every AuditEvent validated by the library,
    slower), and fails here first."""
    from api.formats.fhir_validation import Shapes

    library = f"fhir.resources {version('fhir.resources')}, fhir_core {version('fhir_core')}"
    plan = Shapes().root()
    assert plan is not None, f"{library}: AuditEvent's schema is not the chain walked"
    wanted = {"agent", "entity", "recorded", "type", "extension"}
    assert wanted <= set(plan), (
        f"{library}: AuditEvent fields no longer walked: {sorted(wanted - set(plan))}")
    assert {"who", "requestor", "network", "role"} <= set(plan["agent"][1]), (
        f"{library}: AuditEvent.agent's fields are no longer walked")
    # Contained resources take their class from their JSON: never walked, always exact.
    assert "contained" not in plan
