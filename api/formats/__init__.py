"""Standard audit formats in and out: FHIR AuditEvent (IHE BALP) and IHE ATNA syslog.

Adapters only: pure functions that turn a standard message into a contract event (or
name what keeps it from being one), and a stored event back into a standard message.
Nothing here touches the database, the clock or the network.
"""
