"""What a request must look like before any route reads it: the media type of its body,
and parameters a database can store.

Both are checked by :class:`api.auth.middleware.AccessControl` once it knows the route,
so the fast ingest path and every framework route get the same answers: 415 for a body
in a media type the route does not read, 400 naming a path or query parameter holding
text no backend can store (NUL), never a database error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from ledger.event import storable

JSON = "application/json"
# Media types each route's body may have, by (method, route template); a route not
# listed takes JSON. A route that will read another type (FHIR's
# ``application/fhir+json``) adds itself here.
BODY_MEDIA: dict[tuple[str, str], frozenset[str]] = {}
DEFAULT_MEDIA = frozenset({JSON})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def media_type(scope: Mapping[str, Any]) -> str | None:
    """The request's Content-Type without parameters, lower-cased; None when absent."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return None


def has_body(scope: Mapping[str, Any]) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


def unsupported_media(scope: Mapping[str, Any], template: str) -> frozenset[str] | None:
    """The media types the route accepts, when the request's body is in none of them;
    None when the request is acceptable (or has no body)."""
    method = scope.get("method", "")
    if method not in BODY_METHODS or not has_body(scope):
        return None
    accepted = BODY_MEDIA.get((method, template), DEFAULT_MEDIA)
    return None if media_type(scope) in accepted else accepted


def unstorable_parameters(scope: Mapping[str, Any], path_params: Mapping[str, Any]
                          ) -> list[str]:
    """The names of path and query parameters whose text no backend can store (NUL);
    a query parameter's own name is not repeated when it is the bad part."""
    bad = [name for name, value in path_params.items()
           if isinstance(value, str) and not storable(value)]
    query = scope.get("query_string", b"")
    if query and (b"%00" in query or b"\x00" in query):
        for i, (name, value) in enumerate(parse_qsl(query.decode("latin-1"),
                                                    keep_blank_values=True), 1):
            if not storable(name):
                bad.append(f"query parameter {i}")
            elif not storable(value):
                bad.append(name)
    return bad
