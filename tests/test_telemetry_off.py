"""No request path, query string or rejected value reaches OpenTelemetry through FastAPI.

FastAPI records a span per request (with ``url.path`` and ``url.query``), metrics and,
by its documentation, validation failures with their messages as log records, once a
process has a global OpenTelemetry provider -- which operators set up for their own
reasons (``opentelemetry-instrument``, an agent). Our paths and query strings hold
patient identifiers, so the service turns that telemetry off. The check runs in a child
process, since a global provider cannot be unset: it installs SDK providers that keep
spans, log records and metrics in memory, asks the service for a patient's pages (one of
them a bad request), and reports all they hold. A bare FastAPI app in the same process
is the control: its span must hold the identifier, or the probe proves nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MRN = "MRN-TELEMETRY-7731"

PROBE = """
import json, sys
from pathlib import Path
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry import metrics
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
log_exporter = InMemoryLogRecordExporter()
log_provider = LoggerProvider()
log_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
set_logger_provider(log_provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

from fastapi import FastAPI
from fastapi.testclient import TestClient
from api.app import create_app
from ledger.settings import Settings
from tests.support import auth_headers, fastapi_app, service_key

mrn, db, keys = sys.argv[1:4]

def collected():
    found = [{"name": s.name, **{k: str(v) for k, v in (s.attributes or {}).items()}}
             for s in exporter.get_finished_spans()]
    found += [{"log": str(r.log_record.body),
               **{k: str(v) for k, v in (r.log_record.attributes or {}).items()}}
              for r in log_exporter.get_finished_logs()]
    data = reader.get_metrics_data()
    if data is not None:
        found.append({"metrics": data.to_json()})
    exporter.clear()
    log_exporter.clear()
    return found

control = FastAPI()

@control.get("/patients/{patient_id}")
async def patient(patient_id: str) -> dict:
    return {}

with TestClient(control) as c:
    c.get(f"/patients/{mrn}", params={"q": mrn})
control_spans = collected()

app = create_app(Settings(database_url=f"sqlite:///{db}", key_file=Path(keys)),
                 configure_logs=False)
with TestClient(app) as c:
    c.headers.update(auth_headers(service_key(fastapi_app(app).state.services)))
    statuses = [
        c.get(f"/v1/patients/{mrn}/accesses", params={"purpose": "HOPERAT"}).status_code,
        c.get(f"/v1/patients/{mrn}/accesses", params={"purpose": "HOPERAT",
                                                      "limit": mrn}).status_code,
        c.get("/v1/users/u-1/accesses", params={"purpose": "HOPERAT",
                                                 "patient": mrn}).status_code,
    ]
print(json.dumps({"control": control_spans, "service": collected(), "statuses": statuses}))
"""


def test_request_paths_holding_patient_ids_never_reach_an_opentelemetry_provider(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, MRN, str(tmp_path / "ledger.db"),
         str(tmp_path / "keys.json")],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    # The probe works: FastAPI's own default puts the identifier into the span.
    assert any(MRN in json.dumps(span) for span in report["control"]), report["control"]
    # The requests reached the service (an unknown patient, a bad limit, an unknown user).
    assert report["statuses"] == [404, 400, 404], report["statuses"]
    leaked = [item for item in report["service"] if MRN in json.dumps(item)]
    assert not leaked, f"{len(leaked)} spans, log records or metrics carry the patient id"
