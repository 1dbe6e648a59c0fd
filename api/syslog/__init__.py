"""IHE ATNA intake: syslog listeners (TLS with client certificates, UDP from known
senders), the mapping of each message to an event, and the dead letters of those that
cannot be mapped."""
