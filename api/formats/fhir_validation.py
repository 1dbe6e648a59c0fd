"""Structural validation of FHIR resources with ``fhir.resources`` (R4B models, which
are R4's for AuditEvent; STU3's where a resource uses the STU3 names).

Problems come back as ``(FHIRPath, message)``; messages are the library's, without the
input (a value may be PHI).

A Bundle's AuditEvents repeat most of their elements (the same codings, sources, agents'
roles and extensions). :class:`AuditEventValidator` has ``fhir.resources`` validate each
distinct element of a Bundle once: an element's validity depends on its JSON and its
FHIR type alone, and a field of a ``fhir.resources`` model takes a model of its own class
that the library made as it is, so a resource whose elements are the library's models of
its elements is valid exactly when the resource as posted is. Every element of every
AuditEvent is still validated by the library, from its exact JSON; a refusal's problems
always come from validating the resource as posted.
"""

from __future__ import annotations

from functools import cache
from typing import Any, get_args

import orjson
from fhir.resources.R4B.auditevent import AuditEvent as R4AuditEvent
from fhir.resources.STU3.auditevent import AuditEvent as STU3AuditEvent
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
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


def _element_class(annotation: Any) -> type[FHIRAbstractModel] | None:
    """The model class of a field typed with an element (``CodingType``, a list of
    them, optional), or None (a primitive; a contained resource of any type)."""
    if isinstance(annotation, type):
        if issubclass(annotation, FhirElementOrResourceBase):
            return None
        if issubclass(annotation, FhirBase):
            model: type[FHIRAbstractModel] = annotation.get_model_klass()
            return model
        return None
    for arg in get_args(annotation):
        found = _element_class(arg)
        if found is not None:
            return found
    return None


@cache
def _elements(model: type[FHIRAbstractModel]) -> dict[str, type[FHIRAbstractModel]]:
    """JSON name -> model class of each of ``model``'s fields that holds elements."""
    out = {}
    for name, field in model.model_fields.items():
        element = _element_class(field.annotation)
        if element is not None:
            out[field.alias or name] = element
    return out


class AuditEventValidator:
    """Validates the AuditEvents of one request, each distinct element once.

    Holds the library's models of the elements it has validated (they may carry PHI):
    made for one request and dropped with it."""

    def __init__(self) -> None:
        self._done: dict[tuple[type[FHIRAbstractModel], bytes], FHIRAbstractModel] = {}

    def _prepared(self, model: type[FHIRAbstractModel], data: dict[str, Any]
                  ) -> dict[str, Any]:
        """``data`` with each element the library's model of it (raises when one is
        not valid)."""
        elements = _elements(model)
        out = {}
        for key, value in data.items():
            element = elements.get(key)
            if element is not None and isinstance(value, dict):
                value = self._model(element, value)
            elif element is not None and isinstance(value, list):
                value = [self._model(element, v) if isinstance(v, dict) else v for v in value]
            out[key] = value
        return out

    def _model(self, model: type[FHIRAbstractModel], data: dict[str, Any]
               ) -> FHIRAbstractModel:
        key = (model, orjson.dumps(data))
        done = self._done.get(key)
        if done is None:
            done = model.model_validate(self._prepared(model, data))
            self._done[key] = done
        return done

    def problems(self, resource: dict[str, Any], prefix: str = "AuditEvent"
                 ) -> list[tuple[str, str]]:
        """As :func:`audit_event_problems`."""
        try:
            R4AuditEvent.model_validate(self._prepared(R4AuditEvent, resource))
        except (ValidationError, TypeError, ValueError, RecursionError):
            # Not valid (or not JSON we can key): the resource as posted, validated
            # whole, says what is wrong and where.
            return audit_event_problems(resource, prefix)
        return []


def rendered_is_valid(resource: dict[str, Any]) -> None:
    """Raise when a resource the service renders is not valid R4 (a bug of ours)."""
    R4AuditEvent.model_validate(resource)
