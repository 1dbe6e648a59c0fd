"""Structural validation of FHIR resources with ``fhir.resources`` (R4B models, which
are R4's for AuditEvent; STU3's where a resource uses the STU3 names).

Problems come back as ``(FHIRPath, message)``; messages are the library's, without the
input (a value may be PHI).
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent as R4AuditEvent
from fhir.resources.STU3.auditevent import AuditEvent as STU3AuditEvent
from pydantic import ValidationError

# Names of STU3 AuditEvent that R4 renamed (agent.userId -> who.identifier, ...).
STU3_AGENT = frozenset({"userId", "reference", "altId", "name"})
STU3_ENTITY = frozenset({"reference", "identifier", "lifecycle"})


def _fhirpath(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _problem(prefix: str, error: Any) -> tuple[str, str]:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        # An unknown element is named by where it is, never by its name: the name is
        # the client's text and may be PHI.
        return _fhirpath(prefix, loc[:-1]), "unknown element"
    return _fhirpath(prefix, loc), error["msg"].removeprefix("Value error, ")


def _uses_stu3(resource: dict[str, Any]) -> bool:
    def names(key: str) -> set[str]:
        found: set[str] = set()
        for item in resource.get(key) or []:
            if isinstance(item, dict):
                found.update(item)
        return found
    return bool(names("agent") & STU3_AGENT or names("entity") & STU3_ENTITY)


def _problems(model: Any, resource: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    try:
        model.model_validate(resource)
    except ValidationError as error:
        return [_problem(prefix, e) for e in error.errors(include_input=False, include_url=False)]
    except (TypeError, ValueError):
        return [(prefix, "is not a valid AuditEvent")]
    return []


def audit_event_problems(resource: dict[str, Any], prefix: str = "AuditEvent"
                         ) -> list[tuple[str, str]]:
    """What keeps ``resource`` from being a valid R4 AuditEvent (or, when it uses the
    STU3 names, a valid STU3 one); [] when it is valid."""
    problems = _problems(R4AuditEvent, resource, prefix)
    if problems and _uses_stu3(resource) and not _problems(STU3AuditEvent, resource, prefix):
        return []
    return problems


def rendered_is_valid(resource: dict[str, Any]) -> None:
    """Raise when a resource the service renders is not valid R4 (a bug of ours)."""
    R4AuditEvent.model_validate(resource)
