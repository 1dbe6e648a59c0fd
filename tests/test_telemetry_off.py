"""No request path or query string reaches an OpenTelemetry backend through FastAPI.

FastAPI records a span per request (with ``url.path`` and ``url.query``) and exception
messages as soon as the process has a global OpenTelemetry provider -- which operators
set up for their own reasons (``opentelemetry-instrument``, an agent). Our paths and
query strings hold patient identifiers, so the service turns that telemetry off. The
check runs in a child process, since a global provider cannot be unset: it installs an
SDK provider that keeps spans in memory, asks the service for a patient's pages (one of
them a bad request), and reports every attribute of every span. A bare FastAPI app in the
same process is the control: its span must hold the identifier, or the probe proves
nothing.
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

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from fastapi import FastAPI
from fastapi.testclient import TestClient
from api.app import create_app
from ledger.settings import Settings
from tests.support import auth_headers, fastapi_app, service_key

mrn, db, keys = sys.argv[1:4]

def spans():
    found = [{"name": s.name, **{k: str(v) for k, v in (s.attributes or {}).items()}}
             for s in exporter.get_finished_spans()]
    exporter.clear()
    return found

control = FastAPI()

@control.get("/patients/{patient_id}")
async def patient(patient_id: str) -> dict:
    return {}

with TestClient(control) as c:
    c.get(f"/patients/{mrn}", params={"q": mrn})
control_spans = spans()

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
print(json.dumps({"control": control_spans, "service": spans(), "statuses": statuses}))
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
    leaked = [span for span in report["service"] if MRN in json.dumps(span)]
    assert not leaked, f"{len(leaked)} spans carry the patient id"
