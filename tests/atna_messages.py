"""AuditMessages in the shapes ATNA senders emit (DICOM PS3.15 A.5 and RFC 3881), written
from the schemas: IPF's (DICOM spelling, ``csd-code``/``originalText``), dcm4che's (DICOM
spelling, export with a disclosure lifecycle), OpenHIM's (RFC 3881 spelling,
``code``/``displayName``), and the authentication and security events."""

from __future__ import annotations

PATIENT = "pat-4711"


def ipf_registry_query() -> bytes:
    """ITI-18 Registry Stored Query as IPF's consumer audits it: 110112 Query."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<AuditMessage>
  <EventIdentification EventActionCode="E" EventDateTime="2026-11-26T14:03:22.120+01:00"
      EventOutcomeIndicator="0">
    <EventID csd-code="110112" codeSystemName="DCM" originalText="Query"/>
    <EventTypeCode csd-code="ITI-18" codeSystemName="IHE Transactions"
        originalText="Registry Stored Query"/>
    <PurposeOfUse csd-code="TREAT" codeSystemName="2.16.840.1.113883.5.8"
        originalText="Treatment"/>
  </EventIdentification>
  <ActiveParticipant UserID="alice@hospital" UserName="Alice" UserIsRequestor="true"/>
  <ActiveParticipant UserID="http://consumer.example/ipf" AlternativeUserID="4711"
      UserIsRequestor="true" NetworkAccessPointID="192.0.2.10" NetworkAccessPointTypeCode="2">
    <RoleIDCode csd-code="110153" codeSystemName="DCM" originalText="Source Role ID"/>
  </ActiveParticipant>
  <ActiveParticipant UserID="https://registry.example/xds" UserIsRequestor="false"
      NetworkAccessPointID="registry.example" NetworkAccessPointTypeCode="1">
    <RoleIDCode csd-code="110152" codeSystemName="DCM" originalText="Destination Role ID"/>
  </ActiveParticipant>
  <AuditSourceIdentification AuditSourceID="ipf-consumer" AuditEnterpriseSiteID="Northside">
    <AuditSourceTypeCode csd-code="4"/>
  </AuditSourceIdentification>
  <ParticipantObjectIdentification ParticipantObjectID="{PATIENT}^^^&amp;1.2.3&amp;ISO"
      ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">
    <ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881"
        originalText="Patient Number"/>
  </ParticipantObjectIdentification>
  <ParticipantObjectIdentification ParticipantObjectID="urn:uuid:14d4debf"
      ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="24">
    <ParticipantObjectIDTypeCode csd-code="ITI-18" codeSystemName="IHE Transactions"
        originalText="Registry Stored Query"/>
    <ParticipantObjectQuery>PFF1ZXJ5Lz4=</ParticipantObjectQuery>
  </ParticipantObjectIdentification>
</AuditMessage>""".encode()


def dcm4che_patient_read() -> bytes:
    """dcm4chee-arc's 110110 Patient Record, read (EventActionCode R)."""
    return f"""<AuditMessage xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<EventIdentification EventActionCode="R" EventDateTime="2026-11-26T13:03:22.120Z"
 EventOutcomeIndicator="0"><EventID csd-code="110110" codeSystemName="DCM"
 originalText="Patient Record"/></EventIdentification>
<ActiveParticipant UserID="bob" UserIsRequestor="true" NetworkAccessPointID="198.51.100.7"
 NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="radiologist" codeSystemName="local"
 originalText="Radiologist"/></ActiveParticipant>
<ActiveParticipant UserID="DCM4CHEE" UserIsRequestor="false" NetworkAccessPointID="pacs"
 NetworkAccessPointTypeCode="1"><RoleIDCode csd-code="110153" codeSystemName="DCM"
 originalText="Source Role ID"/></ActiveParticipant>
<AuditSourceIdentification AuditSourceID="dcm4chee-arc"/>
<ParticipantObjectIdentification ParticipantObjectID="{PATIENT}" ParticipantObjectTypeCode="1"
 ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode csd-code="2"/>
</ParticipantObjectIdentification>
<ParticipantObjectIdentification ParticipantObjectID="1.2.840.99.1"
 ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3">
<ParticipantObjectIDTypeCode csd-code="110180" codeSystemName="DCM"
 originalText="Study Instance UID"/></ParticipantObjectIdentification>
</AuditMessage>""".encode()


def dcm4che_export_disclosure() -> bytes:
    """110106 Export to another party, the data's lifecycle Disclosure (11)."""
    return f"""<AuditMessage>
<EventIdentification EventActionCode="R" EventDateTime="2026-11-26T13:05:00Z"
 EventOutcomeIndicator="0"><EventID csd-code="110106" codeSystemName="DCM"
 originalText="Export"/><PurposeOfUse csd-code="PUBHLTH" codeSystemName="v3-ActReason"
 originalText="public health"/></EventIdentification>
<ActiveParticipant UserID="carol" UserIsRequestor="true"/>
<ActiveParticipant UserID="STORESCU" UserIsRequestor="false" NetworkAccessPointID="pacs">
<RoleIDCode csd-code="110153" codeSystemName="DCM" originalText="Source Role ID"/>
</ActiveParticipant>
<ActiveParticipant UserID="REGISTRY_AE" UserName="State Cancer Registry"
 UserIsRequestor="false" NetworkAccessPointID="203.0.113.5" NetworkAccessPointTypeCode="2">
<RoleIDCode csd-code="110152" codeSystemName="DCM" originalText="Destination Role ID"/>
</ActiveParticipant>
<AuditSourceIdentification AuditSourceID="dcm4chee-arc"/>
<ParticipantObjectIdentification ParticipantObjectID="{PATIENT}" ParticipantObjectTypeCode="1"
 ParticipantObjectTypeCodeRole="1" ParticipantObjectDataLifeCycle="11"/>
</AuditMessage>""".encode()


def openhim_pix_query() -> bytes:
    """OpenHIM's ITI-9 PIX query, RFC 3881 spelling (code/displayName)."""
    return f"""<?xml version="1.0"?>
<AuditMessage>
  <EventIdentification EventActionCode="E" EventDateTime="2026-11-26T12:00:00.5-05:00"
      EventOutcomeIndicator="0">
    <EventID code="110112" codeSystemName="DCM" displayName="Query"/>
    <EventTypeCode code="ITI-9" codeSystemName="IHE Transactions" displayName="PIX Query"/>
  </EventIdentification>
  <ActiveParticipant UserID="openhim-mediator-xds|openhim" AlternativeUserID="31"
      UserIsRequestor="true" NetworkAccessPointID="10.0.0.7" NetworkAccessPointTypeCode="2">
    <RoleIDCode code="110153" codeSystemName="DCM" displayName="Source"/>
  </ActiveParticipant>
  <ActiveParticipant UserID="pix|pix" UserIsRequestor="false">
    <RoleIDCode code="110152" codeSystemName="DCM" displayName="Destination"/>
  </ActiveParticipant>
  <AuditSourceIdentification AuditSourceID="openhim"/>
  <ParticipantObjectIdentification ParticipantObjectID="{PATIENT}^^^&amp;1.2&amp;ISO"
      ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">
    <ParticipantObjectIDTypeCode code="2"/>
  </ParticipantObjectIdentification>
</AuditMessage>""".encode()


def _auth(event_type: str, outcome: str = "0") -> bytes:
    return f"""<AuditMessage>
<EventIdentification EventActionCode="E" EventDateTime="2026-11-26T08:00:00Z"
 EventOutcomeIndicator="{outcome}"><EventID csd-code="110114" codeSystemName="DCM"
 originalText="User Authentication"/><EventTypeCode csd-code="{event_type}"
 codeSystemName="DCM"/></EventIdentification>
<ActiveParticipant UserID="dave" UserIsRequestor="true" NetworkAccessPointID="198.51.100.9"
 NetworkAccessPointTypeCode="2"/>
<ActiveParticipant UserID="ehr-node" UserIsRequestor="false"><RoleIDCode csd-code="110150"
 codeSystemName="DCM"/></ActiveParticipant>
<AuditSourceIdentification AuditSourceID="ehr"/>
</AuditMessage>""".encode()


def login() -> bytes:
    return _auth("110122")


def login_failed() -> bytes:
    return _auth("110122", outcome="4")


def logout() -> bytes:
    return _auth("110123")


def emergency_override() -> bytes:
    """110113 Security Alert, 110127 Emergency Override Started: break-the-glass."""
    return f"""<AuditMessage>
<EventIdentification EventActionCode="E" EventDateTime="2026-11-26T09:00:00Z"
 EventOutcomeIndicator="0"><EventID code="110113" codeSystemName="DCM"
 displayName="Security Alert"/><EventTypeCode code="110127" codeSystemName="DCM"
 displayName="Emergency Override Started"/></EventIdentification>
<ActiveParticipant UserID="erin" UserIsRequestor="true"/>
<AuditSourceIdentification AuditSourceID="ehr"/>
<ParticipantObjectIdentification ParticipantObjectID="{PATIENT}" ParticipantObjectTypeCode="1"
 ParticipantObjectTypeCodeRole="1"/>
</AuditMessage>""".encode()


def import_document() -> bytes:
    """110107 Import of a document about the patient."""
    return f"""<AuditMessage>
<EventIdentification EventActionCode="C" EventDateTime="2026-11-26T10:00:00Z"
 EventOutcomeIndicator="0"><EventID csd-code="110107" codeSystemName="DCM"
 originalText="Import"/><PurposeOfUse csd-code="TREAT"/></EventIdentification>
<ActiveParticipant UserID="frank" UserIsRequestor="true"/>
<AuditSourceIdentification AuditSourceID="ehr"/>
<ParticipantObjectIdentification ParticipantObjectID="{PATIENT}" ParticipantObjectTypeCode="1"
 ParticipantObjectTypeCodeRole="1"/>
<ParticipantObjectIdentification ParticipantObjectID="doc-1" ParticipantObjectTypeCode="2"
 ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="9"
 originalText="Report Number"/></ParticipantObjectIdentification>
</AuditMessage>""".encode()


def application_start() -> bytes:
    return b"""<AuditMessage>
<EventIdentification EventActionCode="E" EventDateTime="2026-11-26T07:00:00Z"
 EventOutcomeIndicator="0"><EventID csd-code="110100" codeSystemName="DCM"
 originalText="Application Activity"/><EventTypeCode csd-code="110120" codeSystemName="DCM"
 originalText="Application Start"/></EventIdentification>
<ActiveParticipant UserID="ehr-app" UserIsRequestor="false"><RoleIDCode csd-code="110150"
 codeSystemName="DCM" originalText="Application"/></ActiveParticipant>
<AuditSourceIdentification AuditSourceID="ehr"/>
</AuditMessage>"""


# message -> what it must become: (action, outcome, actor id, patient or None, purpose)
SHAPES = {
    "ipf_registry_query": (ipf_registry_query, "query", "success", "alice@hospital", PATIENT,
                           "TREAT"),
    "dcm4che_patient_read": (dcm4che_patient_read, "read", "success", "bob", PATIENT, None),
    "dcm4che_export_disclosure": (dcm4che_export_disclosure, "disclose", "success", "carol",
                                  PATIENT, "PUBHLTH"),
    "openhim_pix_query": (openhim_pix_query, "query", "success",
                          "openhim-mediator-xds|openhim", PATIENT, None),
    "login": (login, "login", "success", "dave", None, None),
    "login_failed": (login_failed, "login_failed", "failure", "dave", None, None),
    "logout": (logout, "logout", "success", "dave", None, None),
    # break-the-glass on a patient's record: the access itself, under ETREAT
    "emergency_override": (emergency_override, "read", "success", "erin", PATIENT,
                           "ETREAT"),
    "import_document": (import_document, "create", "success", "frank", PATIENT, "TREAT"),
    "application_start": (application_start, "application_activity", "success", "ehr-app",
                          None, None),
}
