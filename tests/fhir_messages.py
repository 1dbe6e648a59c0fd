"""AuditEvents written from the IHE BALP profiles (one per profile, each naming it), in
the shapes FHIR servers send them: R4 names, codes from the systems the profiles bind."""

from __future__ import annotations

from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
REST = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
        "display": "Restful Operation"}
PATIENT = "ex-patient-4711"


def _interaction(code: str) -> dict[str, Any]:
    return {"system": "http://hl7.org/fhir/restful-interaction", "code": code}


def _base(profile: str, action: str, subtype: list[dict[str, Any]], *,
          type_: dict[str, Any] = REST, outcome: str = "0") -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "id": f"balp-{profile.lower().replace('.', '-')}",
        "meta": {"profile": [BALP + profile]},
        "type": type_, "subtype": subtype, "action": action,
        "recorded": "2026-11-26T14:03:22.120-05:00", "outcome": outcome,
        "purposeOfEvent": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}],
        "agent": [
            {"type": {"coding": [{"system": DCM, "code": "110153",
                                  "display": "Source Role ID"}]},
             "who": {"display": "https://server.example.com/fhir"}, "requestor": False,
             "network": {"address": "server.example.com", "type": "1"}},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "extra-security-role-type", "code": "humanuser"}]},
             "who": {"identifier": {"system": "urn:oid:1.2.3", "value": "dr-rivera"}},
             "requestor": True, "role": [{"coding": [{"system": "urn:oid:1.2.3.4",
                                                      "code": "physician"}]}],
             "network": {"address": "198.51.100.7", "type": "2"}},
        ],
        "source": {"site": "Northside", "observer": {"display": "fhir-server-1"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "security-source-type", "code": "4"}]},
        "entity": [{"what": {"reference": f"Patient/{PATIENT}"},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/"
                             "audit-entity-type", "code": "1"},
                    "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                             "code": "1"}}],
    }


def _data_entity(reference: str) -> dict[str, Any]:
    return {"what": {"reference": reference},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                     "code": "2"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                     "code": "4"}}


def create() -> dict[str, Any]:
    ae = _base("Create", "C", [_interaction("create")])
    ae["entity"].append(_data_entity("Observation/obs-1"))
    return ae


def read() -> dict[str, Any]:
    ae = _base("Read", "R", [_interaction("read")])
    ae["entity"].append(_data_entity("Observation/obs-1/_history/2"))
    return ae


def update() -> dict[str, Any]:
    ae = _base("Update", "U", [_interaction("update")])
    ae["entity"].append(_data_entity("Observation/obs-1"))
    return ae


def delete() -> dict[str, Any]:
    ae = _base("Delete", "D", [_interaction("delete")])
    ae["entity"].append(_data_entity("Observation/obs-1"))
    return ae


def query() -> dict[str, Any]:
    ae = _base("Query", "E", [_interaction("search-type")])
    ae["entity"].append({"type": {"code": "2"}, "role": {"code": "24"},
                         "query": "UGF0aWVudD9uYW1lPXg="})
    return ae


def patient_read() -> dict[str, Any]:
    return _base("PatientRead", "R", [_interaction("read")])


def _disclosure(profile: str) -> dict[str, Any]:
    lifecycle = {"system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle",
                 "code": "disclose"}
    ae = _base(profile, "R", [lifecycle], type_=lifecycle)
    ae["agent"].append({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "v3-ParticipationType", "code": "IRCP"}]},
        "who": {"display": "County Public Health", "identifier": {"value": "org-cph"}},
        "requestor": False})
    ae["entity"].append({**_data_entity("DocumentReference/doc-9"),
                         "description": "discharge summary"})
    return ae


def disclosure_source() -> dict[str, Any]:
    return _disclosure("PrivacyDisclosure.Source")


def disclosure_recipient() -> dict[str, Any]:
    return _disclosure("PrivacyDisclosure.Recipient")


def authz_consent() -> dict[str, Any]:
    ae = _base("AuthZconsent", "E", [{
        "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType",
        "code": "AuthZ-Consent"}], type_={"system": DCM, "code": "110113",
                                          "display": "Security Alert"})
    ae["entity"].append(_data_entity("Consent/consent-1"))
    return ae


def stu3_read() -> dict[str, Any]:
    """A read in STU3 names (agent.userId, entity.reference), as older servers send."""
    ae = _base("Read", "R", [_interaction("read")])
    ae["id"] = "stu3-read"
    del ae["meta"]
    ae["agent"] = [{"userId": {"value": "dr-stu3"}, "requestor": True,
                    "network": {"address": "198.51.100.8", "type": "2"}}]
    ae["source"] = {"identifier": {"value": "old-server"}}
    ae["entity"] = [{"reference": {"reference": f"Patient/{PATIENT}"},
                     "role": {"code": "1"}, "lifecycle": {"code": "6"}}]
    return ae


# profile -> (message, the contract action it must become)
PROFILES = {
    "Create": (create, "create"),
    "Read": (read, "read"),
    "Update": (update, "update"),
    "Delete": (delete, "delete"),
    "Query": (query, "query"),
    "PatientRead": (patient_read, "read"),
    "PrivacyDisclosure.Source": (disclosure_source, "disclose"),
    "PrivacyDisclosure.Recipient": (disclosure_recipient, "disclose"),
    "AuthZconsent": (authz_consent, "security_alert"),
}
