"""The OpenAPI 3.1 document of the authority API, built from the route table's operations.

It knows nothing of the handlers: `blocklist.authority.api` passes its `routes.operations`
(`python -m blocklist.authority.api > docs/openapi.json` regenerates the checked-in copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blocklist.authority.routes import Operation

ERRORS = {
    "400": "Malformed JSON or query",
    "401": "Missing or invalid bearer token",
    "403": "The caller's role may not do this (or four-eyes rule)",
    "404": "No such entry, batch, edition or file",
    "409": "Conflict: duplicate, already decided, confirmation required",
    "413": "Request body too large",
    "422": "Invalid entry or field; `reason` names the refusal",
}
_INTEGER_QUERIES = frozenset({"limit", "offset", "entry", "after", "wait", "since"})


def _operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.handler.__name__,
        "summary": op.summary,
        "description": f"Who may call: {op.who}.",
        "responses": {
            "200": {"description": "OK"},
            **{k: {"description": v} for k, v in ERRORS.items()},
        },
    }
    params: list[dict[str, Any]] = [
        {"name": p.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
        for p in op.path.split("/")
        if p.startswith("{")
    ]
    params += [
        {
            "name": q,
            "in": "query",
            "required": False,
            "schema": {"type": "integer" if q in _INTEGER_QUERIES else "string"},
        }
        for q in op.query
    ]
    if params:
        out["parameters"] = params
    if op.body is not None:
        schema = op.body.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[op.body.__name__] = schema
        out["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}
            },
        }
    if not op.public:
        out["security"] = [{"bearer": []}]
    return out


def openapi(operations: Sequence[Operation]) -> dict[str, Any]:
    paths: dict[str, dict] = {}
    schemas: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cordon authority API",
            "version": "1",
            "description": "Entries, four-eyes approval, publication, distribution to ASPs, acks.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
