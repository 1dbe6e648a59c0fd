"""Structural validation of FHIR resources with ``fhir.resources`` (R4B models, which
are R4's for AuditEvent; STU3's where a resource uses the STU3 names).

Problems come back as ``(FHIRPath, message)``: the path of the element, the message ours,
by the kind of error the library found; never the library's own text, which may quote the
value (a value, and an unknown element's name, may be PHI).

A Bundle's AuditEvents repeat most of their elements (the same codings, sources, agents'
roles and extensions). :class:`AuditEventValidator` has ``fhir.resources`` validate each
distinct element of a Bundle once: an element's validity depends on its JSON and its
FHIR type alone, and a field of a ``fhir.resources`` model takes a model of its own class
that the library made as it is, so a resource whose elements are the library's models of
its elements is valid exactly when the resource as posted is. A refusal's problems always
come from validating the resource as posted.

**Shapes.** Most AuditEvents a sender posts differ from ones already accepted only in
primitive values (ids, instants, identifiers). The validator remembers, process-wide,
the *shape* of every AuditEvent the library accepted, and accepts an AuditEvent of a
known shape without building its models, after checking each of its primitive values
with the very validator the library runs for that field. A shape is the JSON skeleton
walked along the models: for each object, its keys in order; under each key that is a
field of the model, the element's own shape (an object, or a list of them), or, for a
primitive field, the JSON type of the value once the field's validator has accepted it;
anything else (an unknown key, a value of a type the walk does not expect, ``null``, a
field the walk cannot prove plain) stands in the shape as the SHA-256 of its exact JSON,
so only an identical value matches it. Why two AuditEvents of one shape are both valid
or both not (read from ``fhir_core`` 1.1 and ``fhir.resources`` 8, pydantic 2):

- A model validates a dict by its ``__init__`` (``FHIRAbstractModel.__init__``: pops
  ``resourceType``/``resource_type``, not fields, and compares them: in the shape
  exactly), a before-validator ``reject_null_complex_elements`` (which keys hold lists
  with ``null`` items: in the shape), its fields (unknown keys are refused:
  ``extra="forbid"``; keys are in the shape), then the after-validator
  ``validate_after_model_construction``: required primitives present and not ``None``
  (or their ``_x`` extension holds extensions), at most one ``value[x]`` of a choice:
  which fields are set, which the shape says (a field's validated value is never
  ``None`` when its JSON is not ``null``: checked with each primitive). R4B's
  ``FHIRPrimitiveExtension`` adds a before-validator on which of ``id``, ``extension``,
  ``fhir_comments`` are present and not ``null``: the shape again. A model with any
  other validator, whose schema is not this chain, or that redefines one of these
  steps, is not walked: its whole JSON is in the shape exactly.
- An element field's validator (``FhirBase``'s wrap validator around ``any``) gives a
  dict to ``model_validate`` of the element's class and takes the model: valid exactly
  when the element is, by induction on its shape. A string there is parsed as JSON by
  the library, so a non-object is in the shape exactly. Contained resources
  (``FhirElementOrResourceBase``, whose class depends on the JSON) are exact too.
- A primitive field's validator is a pydantic core schema (``str`` with a pattern,
  ``int`` with bounds, or the FHIR date, instant, decimal, url, time validators of
  ``fhir_core.types``, each a function of the value alone). The walk runs that same
  schema, built with the model's config, on the value (its answer cached per request),
  so a value it accepts is one the library accepts in that field; a value it refuses
  sends the AuditEvent to the library whole.

Within a request, an element of the AuditEvent itself (its type, source, an agent, an
entity) equal, as JSON, to one already walked takes that one's part of the shape: the
walk depends on the element's JSON, its field and the request's answers alone. The
validator takes JSON as ``orjson.loads`` gives it (elements are compared by their
``orjson`` encoding, as its cache of the library's element models always has).

A shape holds field names, JSON types and digests, never a value. An AuditEvent whose
shape is not known is validated as before and its shape learnt when the library accepts
it; one it refuses is never learnt. ``tests/test_fhir_skeleton.py`` checks, over
generated mutations of valid BALP messages, that the validator accepts exactly what
``fhir.resources`` accepts.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, get_args

import orjson
from fhir.resources.R4B.auditevent import AuditEvent as R4AuditEvent
from fhir.resources.R4B.bundle import Bundle as R4Bundle
from fhir.resources.STU3.auditevent import AuditEvent as STU3AuditEvent
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import ValidationError
from pydantic_core import SchemaValidator

# Names of STU3 AuditEvent that R4 renamed (agent.userId -> who.identifier, ...).
STU3_AGENT = frozenset({"userId", "reference", "altId", "name"})
STU3_ENTITY = frozenset({"reference", "identifier", "lifecycle"})


# An element's name as FHIR JSON spells it (``_recorded``: a primitive's extensions).
_ELEMENT_NAME = re.compile(r"_?[a-z][A-Za-z0-9]*", re.ASCII)
# fhir.resources names a few fields in Python: what their JSON keys are.
_JSON_NAMES = {"resource_type": "resourceType", "fhir_comments": "fhir_comments"}
# A union's member in a location (``fhir_comments`` is ``str | list[str]``): no element.
_PYTHON_TYPES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _fhirpath(prefix: str, loc: tuple[Any, ...]) -> str:
    """``loc`` (pydantic's) as a FHIRPath under ``prefix``. Only element names and
    indexes are kept: pydantic's own steps (``root``, ``list[str]``, a union's member or
    tag) are left out, for they are no element, and a tag may be the client's text."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = _JSON_NAMES.get(part)
        if name is None:
            name = str(part).removesuffix("_fhir")
            if part == "root" or name in _PYTHON_TYPES or not _ELEMENT_NAME.fullmatch(name):
                continue
        out += f".{name}"
    return out


# Pydantic's error types, said in our words. The library's own messages may quote the
# value (``expects resource type X, but got <the value>``): never passed on.
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown element",
    "string_type": "must be a JSON string",
    "string_pattern_mismatch": "does not match the format of its FHIR type",
    "string_too_short": "is too short", "too_short": "has too few items",
    "string_too_long": "is too long", "too_long": "has too many items",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number", "decimal_type": "must be a number",
    "list_type": "must be a JSON array", "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object", "model_attributes_type": "must be a JSON object",
    "literal_error": "is not one of the codes allowed here",
    "enum": "is not one of the codes allowed here",
    "greater_than_equal": "is below the smallest value allowed",
    "less_than_equal": "is above the largest value allowed",
}


def _problem(prefix: str, error: Any) -> tuple[str, str]:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        # An unknown element is named by where it is, never by its name: the name is
        # the client's text and may be PHI.
        return _fhirpath(prefix, loc[:-1]), _MESSAGES["extra_forbidden"]
    return _fhirpath(prefix, loc), _MESSAGES.get(error["type"],
                                                  "is not a valid value of its FHIR type")


def _uses_stu3(resource: dict[str, Any]) -> bool:
    def names(key: str) -> set[str]:
        found: set[str] = set()
        items = resource.get(key)
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, dict):
                found.update(item)
        return found
    return bool(names("agent") & STU3_AGENT or names("entity") & STU3_ENTITY)


def _problems(model: Any, resource: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    try:
        model.model_validate(resource)
    except ValidationError as error:
        return [_problem(prefix, e) for e in error.errors(include_input=False, include_url=False)]
    except Exception:
        # The library fails on some JSON instead of refusing it (an ``_action`` that is a
        # number as a string reaches a validator that calls ``.get`` on the number, an
        # AttributeError): that JSON is not an AuditEvent it takes.
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


# -- shapes ----------------------------------------------------------------------------

# What a field holds, as the walk of a shape treats it.
_ELEMENT = 0  # one element: its own shape
_ELEMENTS = 1  # a list of elements
_PRIMITIVE = 2  # one primitive value: checked by the field's validator, then its JSON type
_PRIMITIVES = 3  # a list of primitive values

# Markers of a shape; no JSON value (nor a field name, a type or a digest) equals them.
_OPEN = object()
_CLOSE = object()
_LIST = object()
_END = object()

_JSON_SCALARS = (str, int, float, bool)
# The functions a primitive field's schema may run: fhir_core's FHIR primitive
# validators and pydantic's base64 decoding, each a function of the value alone.
_PRIMITIVE_FUNCTIONS = frozenset({
    ("fhir_core.types", "Date._validate"),
    ("fhir_core.types", "DateTime._validate"),
    ("fhir_core.types", "Instant._validate"),
    ("fhir_core.types", "Decimal.__get_pydantic_core_schema__.<locals>._validate"),
    ("fhir_core.types", "Url.__get_pydantic_core_schema__.<locals>._validate"),
    ("fhir_core.types", "Time.__get_pydantic_core_schema__.<locals>._validate"),
    ("pydantic.types", "EncodedBytes.decode"),
})
_PRIMITIVE_SCHEMAS = frozenset({"str", "bool", "int", "float", "decimal", "date", "datetime",
                                "time", "uuid", "bytes", "url", "nullable", "default",
                                "union", "list", "function-wrap", "function-after"})
# The model validators of the chain the module docstring reasons about.
_MODEL_VALIDATORS = frozenset({
    ("fhir_core.fhirabstractmodel", "FHIRAbstractModel.validate_after_model_construction"),
    ("fhir_core.fhirabstractmodel", "FHIRAbstractModel.reject_null_complex_elements"),
    ("fhir.resources.R4B.fhirprimitiveextension",
     "FHIRPrimitiveExtension.validate_extension_or_fhir_comment_required"),
})
# FHIRAbstractModel's validators and the steps they take, by name: a model that
# redefines one is not walked.
_MODEL_STEPS = ("__init__", "validate_after_model_construction", "reject_null_complex_elements",
                "_validate_required_primitive_elements", "_validate_one_of_many")
_ELEMENT_VALIDATOR = ("fhir_core.types", "FhirBase.__get_pydantic_core_schema__.<locals>._validate")
_MODEL_CONFIG = frozenset({"extra_fields_behavior", "validate_by_alias", "validate_by_name",
                           "title"})


def _function_name(schema: dict[str, Any]) -> tuple[str, str] | None:
    function = schema.get("function", {}).get("function")
    function = getattr(function, "__func__", function)  # a classmethod, bound
    if function is None:
        return None
    return function.__module__, function.__qualname__


def _bare(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` without its ``default`` and ``nullable`` wrappers (which act only on a
    missing or null value, never part of a shape but exactly), or None when a wrapper
    does more (``on_error``, ``validate_default``, ...)."""
    while schema["type"] in ("default", "nullable"):
        if set(schema) - {"type", "schema", "default", "metadata"}:
            return None
        schema = schema["schema"]
    return schema


def _element_model(schema: dict[str, Any]) -> type[FHIRAbstractModel] | None:
    """The model class whose ``model_validate`` alone decides ``schema`` for a dict:
    ``FhirBase``'s wrap validator around ``any`` (not ``FhirElementOrResourceBase``'s,
    whose class depends on the JSON), or None."""
    if (schema["type"] != "function-wrap" or _function_name(schema) != _ELEMENT_VALIDATOR
            or schema["schema"] != {"type": "any"}):
        return None
    function = schema["function"]["function"]
    found = inspect.getclosurevars(function).nonlocals
    kind = found.get("cls")
    if found.get("source_type") is not kind or not isinstance(kind, type):
        return None
    if not (issubclass(kind, FhirBase) and not issubclass(kind, FhirElementOrResourceBase)
            and getattr(kind.fhir_model_validator, "__func__", None)
            is getattr(FhirBase.fhir_model_validator, "__func__", False)):
        return None
    model: type[FHIRAbstractModel] = kind.get_model_klass()
    return model


def _plain_primitive(schema: Any) -> bool:
    """Whether ``schema`` holds only primitive checks (no model, no reference, no
    function but the known primitive validators)."""
    if isinstance(schema, list):
        return all(_plain_primitive(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    kind = schema.get("type")
    if kind is not None and kind not in _PRIMITIVE_SCHEMAS:
        return False
    if kind in ("function-wrap", "function-after") \
            and _function_name(schema) not in _PRIMITIVE_FUNCTIONS:
        return False
    return all(_plain_primitive(v) for k, v in schema.items()
               if k not in ("metadata", "serialization", "function"))


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: a cache key per value
class _Check:
    """A primitive field's own validator, built from its schema in its model."""

    validate: Callable[[Any], Any]


def _accepts(check: _Check, value: Any) -> bool:
    try:
        # A value the field turns into None would not count as set there.
        return check.validate(value) is not None
    except Exception:  # any refusal: the library decides, validating the resource whole
        return False


def _model_fields(model: type[FHIRAbstractModel]) -> dict[str, Any] | None:
    """The fields of ``model``'s core schema when its chain is the one the module
    docstring reasons about (``function-after`` / ``model`` / ``function-before`` ... /
    ``model-fields``, with the known validators and ``__init__``), else None."""
    if not issubclass(model, FHIRAbstractModel):
        return None
    schema: dict[str, Any] = dict(model.__pydantic_core_schema__)
    config: dict[str, Any] = {}
    while schema["type"] != "model-fields":
        kind = schema["type"]
        if kind in ("function-after", "function-before"):
            if _function_name(schema) not in _MODEL_VALIDATORS \
                    or set(schema) - {"type", "function", "schema", "ref", "metadata"}:
                return None
        elif kind == "model":
            config = schema.get("config", {})
            # (no post_init, frozen, strict, revalidation: nothing the reasoning omits)
            if (set(schema) - {"type", "cls", "schema", "custom_init", "root_model",
                               "config", "ref", "metadata", "serialization"}
                    or schema["cls"] is not model or schema.get("root_model")
                    or set(config) - _MODEL_CONFIG
                    or config.get("extra_fields_behavior") != "forbid"):
                return None
        else:
            return None
        schema = schema["schema"]
    below = model.__mro__[:model.__mro__.index(FHIRAbstractModel)]
    if any(name in vars(c) for c in below for name in _MODEL_STEPS) \
            or set(schema) - {"type", "fields", "model_name", "computed_fields"} \
            or schema.get("computed_fields"):
        return None
    return {"fields": schema["fields"], "config": config}


class _Plans:
    """How the walk treats each key of each model (built once, from the schemas)."""

    def __init__(self) -> None:
        self._plans: dict[type[FHIRAbstractModel], dict[str, tuple[int, Any]] | None] = {}

    def of(self, model: type[FHIRAbstractModel]) -> dict[str, tuple[int, Any]] | None:
        """JSON key -> (kind, the element's plan or the primitive's check) of each field
        the walk may abstract; None when the model itself is not walked."""
        if model in self._plans:
            return self._plans[model]
        found = _model_fields(model)
        if found is None:
            self._plans[model] = None
            return None
        plan: dict[str, tuple[int, Any]] = {}
        self._plans[model] = plan  # first: an element may hold its own kind (Extension)
        keys: dict[str, list[tuple[int, Any] | None]] = {}
        for name, field in found["fields"].items():
            alias = field.get("validation_alias", name)
            entry = self._field(field, found["config"]) if isinstance(alias, str) and set(
                field) <= {"type", "schema", "metadata", "serialization_alias",
                           "validation_alias", "serialization_exclude"} else None
            for key in {name, alias} if isinstance(alias, str) else {name}:
                keys.setdefault(key, []).append(entry)
        for key, entries in keys.items():
            # A key that is one field's alias and another's name is left exact.
            if len(entries) == 1 and entries[0] is not None:
                plan[key] = entries[0]
        return plan

    def _field(self, field: dict[str, Any], config: dict[str, Any]
               ) -> tuple[int, Any] | None:
        bare = _bare(field["schema"])
        if bare is None:
            return None
        if (model := _element_model(bare)) is not None:
            return _ELEMENT, model
        if bare["type"] == "list" and set(bare) <= {"type", "items_schema", "metadata"}:
            items = _bare(bare["items_schema"])
            if items is not None and (model := _element_model(items)) is not None:
                return _ELEMENTS, model
            if _plain_primitive(bare["items_schema"]):
                return _PRIMITIVES, self._check(bare["items_schema"], config)
            return None
        if _plain_primitive(field["schema"]):
            return _PRIMITIVE, self._check(field["schema"], config)
        return None

    def _check(self, schema: dict[str, Any], config: dict[str, Any]) -> _Check:
        core_config: Any = config  # the model's own CoreConfig, as its schema holds it
        return _Check(SchemaValidator(schema, core_config).validate_python)


class Shapes:
    """The shapes of the AuditEvents ``fhir.resources`` accepted (field names, JSON
    types and digests: no value). Bounded: a sender that makes up shapes costs
    memory up to ``limit`` shapes, then the set starts again."""

    def __init__(self, limit: int = 4096) -> None:
        self._known: set[tuple[Any, ...]] = set()
        self._limit = limit
        self._lock = threading.Lock()
        self._plans: _Plans | None = None
        self._root: dict[str, tuple[int, Any]] | None = None

    def root(self) -> dict[str, tuple[int, Any]] | None:
        """The walk's plan of an R4 AuditEvent (built on first use: it builds a
        validator per primitive field of 47 models)."""
        if self._plans is None:
            with self._lock:
                if self._plans is None:
                    plans = _Plans()
                    self._root = plans.of(R4AuditEvent)
                    self._resolve(plans, self._root, set())
                    self._plans = plans
        return self._root

    def _resolve(self, plans: _Plans, plan: dict[str, tuple[int, Any]] | None,
                 seen: set[int]) -> None:
        """Replace each element's model by its plan, every model reachable built now
        (the walk then only looks plans up)."""
        if plan is None or id(plan) in seen:
            return
        seen.add(id(plan))
        for key, (kind, arg) in list(plan.items()):
            if kind in (_ELEMENT, _ELEMENTS):
                sub = plans.of(arg)
                if sub is None:
                    del plan[key]  # a model not walked: its JSON is exact
                    continue
                plan[key] = (kind, sub)
                self._resolve(plans, sub, seen)

    def knows(self, shape: tuple[Any, ...]) -> bool:
        return shape in self._known

    def learn(self, shape: tuple[Any, ...]) -> None:
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known.add(shape)

    def __len__(self) -> int:
        return len(self._known)


SHAPES = Shapes()  # the process's: a worker learns its senders' shapes once


def _is_json(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    if kind is list:
        return all(_is_json(v) for v in value)
    return value is None or kind in _JSON_SCALARS


# What orjson would encode as something else (a str subclass as a str, a datetime as a
# string) goes to _not_json instead, so equal encodings are equal JSON. (A tuple still
# encodes as a list: the validator takes JSON as orjson.loads gives it, as its cache of
# element models always has.)
_EXACT_JSON = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
               | orjson.OPT_PASSTHROUGH_DATETIME)


def _not_json(value: Any) -> Any:
    raise TypeError


class _Unwalkable(Exception):
    """A value the walk cannot put in a shape (not JSON, or refused by its field)."""


def _exact(value: Any) -> bytes:
    """A value in a shape as itself: the digest of its exact JSON (so the shape holds
    no value, and only the identical JSON matches)."""
    if not _is_json(value):
        raise _Unwalkable
    return hashlib.sha256(orjson.dumps(value)).digest()


class AuditEventValidator:
    """Validates the AuditEvents of one request: one of a shape ``fhir.resources``
    already accepted by its primitive values alone, any other with each distinct
    element validated once.

    Holds the library's models of the elements it has validated, the answers for the
    primitive values it has checked and the elements it has walked (they may carry
    PHI): made for one request and dropped with it. The shapes it learns go to
    ``shapes`` (by default the process's), which hold no value."""

    def __init__(self, shapes: Shapes | None = None) -> None:
        self._done: dict[tuple[type[FHIRAbstractModel], bytes], FHIRAbstractModel] = {}
        self._shapes = SHAPES if shapes is None else shapes
        self._checked: dict[tuple[Any, ...], bool] = {}
        self._exacts: dict[tuple[str, str], bytes] = {}
        self._elements: dict[tuple[int, bytes], list[Any]] = {}

    def shape(self, resource: Any) -> tuple[Any, ...] | None:
        """The shape of ``resource`` (see the module docstring), or None when a
        primitive value is refused by its field's validator or the JSON cannot be
        walked (the library then decides)."""
        plan = self._shapes.root()
        if plan is None or type(resource) is not dict:
            return None
        out: list[Any] = []
        try:
            self._walk(plan, resource, out, True)
        except (_Unwalkable, RecursionError, TypeError):
            # TypeError: orjson refuses to encode JSON nested deeper than 254 (it reads
            # up to 1,024): the library decides on such a resource, whole.
            return None
        return tuple(out)

    def _walk(self, plan: dict[str, tuple[int, Any]], data: dict[str, Any],
              out: list[Any], top: bool = False) -> None:
        # The hot loop of a Bundle (a few dozen keys an AuditEvent): primitives first,
        # answers for strings looked up inline. ``top``: the resource itself, whose
        # elements repeat from one AuditEvent to the next (see _element).
        walk = self._element if top else self._walk
        append = out.append
        checked = self._checked
        append(_OPEN)
        for key, value in data.items():
            field = plan.get(key)
            if field is None:
                append(self._exact_entry(key, value))
                continue
            append(key)
            kind, arg = field
            of = type(value)
            if kind == _PRIMITIVE:
                if of is str:
                    ok = checked.get((arg, value))
                    if ok is None:
                        ok = checked[(arg, value)] = _accepts(arg, value)
                elif of is bool or of is int or of is float:
                    ok = self._scalar(arg, value, of)
                else:
                    append(_exact(value))
                    continue
                if not ok:
                    raise _Unwalkable
                append(of)
            elif kind == _ELEMENT:
                if of is dict:
                    walk(arg, value, out)
                else:
                    append(_exact(value))
            elif of is not list:
                append(_exact(value))
            elif kind == _ELEMENTS:
                append(_LIST)
                for item in value:
                    if type(item) is dict:
                        walk(arg, item, out)
                    else:
                        append(_exact(item))
                append(_END)
            else:
                append(_LIST)
                for item in value:
                    of = type(item)
                    if of is str or of is bool or of is int or of is float:
                        if not self._scalar(arg, item, of):
                            raise _Unwalkable
                        append(of)
                    else:
                        append(_exact(item))
                append(_END)
        append(_CLOSE)

    def _element(self, plan: dict[str, tuple[int, Any]], data: dict[str, Any],
                 out: list[Any]) -> None:
        """An element of the resource itself: its tokens again when this request has
        walked an element of the same plan with the same JSON (its codings, source,
        agents and entities recur across a Bundle's AuditEvents; the walk is a function
        of the plan, the JSON and the request's answers, so the tokens are the same)."""
        try:
            key = (id(plan), orjson.dumps(data, default=_not_json, option=_EXACT_JSON))
        except TypeError:
            raise _Unwalkable from None
        tokens = self._elements.get(key)
        if tokens is None:
            start = len(out)
            self._walk(plan, data, out)
            self._elements[key] = out[start:]
        else:
            out.extend(tokens)

    def _scalar(self, check: _Check, value: Any, of: type) -> bool:
        """Whether ``check`` accepts ``value`` (of JSON type ``of``), remembered for the
        request (but floats: 0.0 and -0.0 are equal keys)."""
        if of is float:
            return _accepts(check, value)
        key = (check, of, value)  # True and 1 are equal keys: the type tells them apart
        ok = self._checked.get(key)
        if ok is None:
            ok = self._checked[key] = _accepts(check, value)
        return ok

    def _exact_entry(self, key: str, value: Any) -> bytes:
        """A key that is no field, with its value, exactly (``resourceType`` in every
        AuditEvent: its digest remembered for the request)."""
        if type(value) is not str:
            return _exact([key, value])
        digest = self._exacts.get((key, value))
        if digest is None:
            digest = self._exacts[(key, value)] = _exact([key, value])
        return digest

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
        shape = self.shape(resource)
        if shape is not None and self._shapes.knows(shape):
            return []
        try:
            R4AuditEvent.model_validate(self._prepared(R4AuditEvent, resource))
        except Exception:
            # Not valid (or not JSON we can key, or JSON the library fails on): the
            # resource as posted, validated whole, says what is wrong and where.
            return audit_event_problems(resource, prefix)
        if shape is not None:
            self._shapes.learn(shape)
        return []


def rendered_is_valid(resource: dict[str, Any]) -> None:
    """Raise when a resource the service renders is not valid R4 (a bug of ours)."""
    R4AuditEvent.model_validate(resource)


def bundle_problems(bundle: dict[str, Any]
                    ) -> tuple[list[tuple[str, str]], dict[int, list[tuple[str, str]]]]:
    """What keeps a posted Bundle's own elements -- all but its entries' resources, which
    :class:`AuditEventValidator` judges -- from being a valid R4 Bundle: the problems of
    the Bundle itself, and those of each entry (by index). ``fhir.resources`` validates
    each distinct entry once (a sender's entries are nearly always alike: ``request``
    ``POST AuditEvent``), so a Bundle of 1,000 costs about one small validation."""
    shells: list[Any] = []
    shell_of: dict[int, int] = {}
    seen: dict[bytes, int] = {}
    for i, entry in enumerate(bundle.get("entry") or []):
        if not isinstance(entry, dict):
            continue  # refused on its own by the route: "must be an object"
        shell = {k: v for k, v in entry.items() if k != "resource"}
        try:
            key = orjson.dumps(shell)
        except TypeError:  # not JSON orjson writes: judged on its own
            key = b"%d" % i
        if key not in seen:
            seen[key] = len(shells)
            shells.append(shell)
        shell_of[i] = seen[key]
    envelope = {**{k: v for k, v in bundle.items() if k != "entry"}, "entry": shells}
    try:
        R4Bundle.model_validate(envelope)
    except ValidationError as error:
        own: list[tuple[str, str]] = []
        by_shell: dict[int, list[dict[str, Any]]] = {}
        for e in error.errors(include_input=False, include_url=False):
            loc = tuple(e["loc"])
            if len(loc) >= 2 and loc[0] == "entry" and isinstance(loc[1], int):
                by_shell.setdefault(loc[1], []).append({**e, "loc": loc[2:]})
            else:
                own.append(_problem("Bundle", e))
        by_entry = {i: [_problem(f"Bundle.entry[{i}]", e) for e in by_shell[j]]
                    for i, j in shell_of.items() if j in by_shell}
        return own, by_entry
    except Exception:  # the library failing on JSON instead of refusing it
        return [("Bundle", "is not a valid Bundle")], {}
    return [], {}
