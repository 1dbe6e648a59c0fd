"""A view's lookup of its current rows stays a probe per key, however big the view.

PostgreSQL only: it is about the plans PostgreSQL picks for the statements a projection
makes. A view being rebuilt, or any view on a server without autovacuum (as these
machines have it), has no statistics; spelled ``patient_ref IN (...)``, the patients view's
lookup of a batch's records was planned as a scan of every row of the ledger, once a
batch, so a rebuild slowed as the table grew (1.5M entries: 34 s, 25 s once spelled as
probes). The statement the view really sends is run again here under EXPLAIN, and the
pages it touched are counted.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from ledger.migrate import migrate
from projections.patients import PatientsView
from projections.view import Sql, select_keyed

ROWS = 80_000
WANTED = 400
# A primary-key probe touches the index's levels and the row's page.
PAGES_PER_PROBE = 5


class Recording:
    """A cursor that remembers the statements sent through it."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.sent: list[tuple[str, Any]] = []

    def execute(self, query: str, params: Any = None, **options: Any) -> Any:
        self.sent.append((query, params))
        return self.cursor.execute(query, params, **options)

    def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()


def test_the_patients_view_probes_the_records_a_batch_touches(postgres_url: str) -> None:
    migrate(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # Records of a real view's size (~840 bytes of tokens), never analysed.
        conn.execute(
            "INSERT INTO view_patients (ledger, patient_ref, patient_token, key_id, record,"
            " deleted, shredded, created_seq, updated_seq, updated_utc)"
            " SELECT 'default', md5(i::text) || md5((i + 1)::text), 'enc:v1:' || md5(i::text),"
            " 'k', '{\"note\":\"enc:v1:' || repeat('x', 800) || '\"}', false, false, i, i,"
            " '2026-11-27T00:00:00Z' FROM generate_series(1, %s) AS i", (ROWS,))
        assert conn.execute(
            "SELECT reltuples FROM pg_class WHERE relname = 'view_patients'"
        ).fetchone() == (-1.0,)  # no statistics
        keys = [row[0] for row in conn.execute(
            "SELECT patient_ref FROM view_patients ORDER BY created_seq DESC LIMIT %s",
            (WANTED,))]
        with conn.cursor() as cursor:
            recording = Recording(cursor)
            found = select_keyed(recording, Sql("postgresql", str), "view_patients",
                                 PatientsView.columns, "patient_ref", "default", sorted(keys))
            assert sorted(row[1] for row in found) == sorted(keys)
            [(query, params)] = recording.sent
            explained = cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query,
                                       params).fetchone()
            assert explained is not None
            plan = explained[0]
    root = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    pages = root["Shared Hit Blocks"] + root["Shared Read Blocks"]
    assert pages <= PAGES_PER_PROBE * WANTED, pages
