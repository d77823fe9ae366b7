"""The OpenAPI 3.1 document of the authority API, built from the request models.

`python -m blocklist.authority.openapi > docs/openapi.json` regenerates the checked-in copy; a
test fails when the copy is stale.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from blocklist.authority.api import (
    AckIn,
    AspIn,
    BatchAcceptIn,
    BatchIn,
    ComplaintIn,
    DecisionIn,
    EntryIn,
    NoteIn,
    OfficerIn,
    PartnerNoticeIn,
    ReasonIn,
    TakedownIn,
)

# method, path, summary, who may call, request model
OPERATIONS: list[tuple[str, str, str, str, type[BaseModel] | None]] = [
    ("get", "/healthz", "Liveness and current serial", "anyone", None),
    ("get", "/v1/openapi.json", "This document", "anyone", None),
    ("get", "/v1/entries", "List or search entries (query: status, q, limit, offset)", "any officer", None),
    ("post", "/v1/entries", "Add an entry (pending until another approver approves it)", "officer, approver, admin", EntryIn),
    ("get", "/v1/entries/{entry_id}", "Show one entry", "any officer", None),
    ("post", "/v1/entries/{entry_id}/approve", "Approve a pending entry (not its author)", "approver, admin", None),
    ("post", "/v1/entries/{entry_id}/reject", "Reject a pending entry, with reasons", "approver, admin", ReasonIn),
    ("post", "/v1/entries/{entry_id}/delist", "Delist an entry, with reasons", "officer, approver, admin", ReasonIn),
    ("post", "/v1/batches", "Import many entries as one batch; refused lines are reported", "officer, approver, admin", BatchIn),
    ("get", "/v1/batches/{batch_id}", "Show a batch", "any officer", None),
    ("post", "/v1/batches/{batch_id}/accept", "Accept a batch (not its importer); large batches need confirm_large", "approver, admin", BatchAcceptIn),
    ("post", "/v1/batches/{batch_id}/reject", "Reject a batch, with reasons", "approver, admin", ReasonIn),
    ("post", "/v1/entries/{entry_id}/takedown", "Record the takedown notice of an entry hosted at home (deadline from the config)", "officer, approver, admin", TakedownIn),
    ("post", "/v1/entries/{entry_id}/escalate", "Send a home-hosted entry still online after its deadline to approval for blocking", "officer, approver, admin", ReasonIn),
    ("post", "/v1/entries/{entry_id}/partner-notice", "Record a notice to a partner (e.g. the hosting country's hotline)", "officer, approver, admin", PartnerNoticeIn),
    ("post", "/v1/entries/{entry_id}/confirm-removal", "Confirm removal at source of an entry whose checks found it gone (delists)", "officer, approver, admin", None),
    ("post", "/v1/entries/{entry_id}/reverify", "Record a re-verification: a new review date", "officer, approver, admin", NoteIn),
    ("get", "/v1/entries/{entry_id}/checks", "Liveness check history of an entry, newest first", "any officer", None),
    ("post", "/v1/lifecycle/run", "Run due liveness checks and lapse overdue entries now", "officer, approver, admin", None),
    ("get", "/v1/review", "Listed entries past their review date, with the date they lapse", "any officer", None),
    ("get", "/v1/report", "Counts by status, country, age; time to removal per month; complaints", "any officer", None),
    ("post", "/v1/publish", "Publish the pending changes as the next serial", "officer, approver, admin", None),
    ("get", "/v1/status", "Serial, counts, pending changes, signing key expiry", "any officer", None),
    ("get", "/v1/compliance", "Per ASP instance: serial and checksum acked, lag, divergence, overdue", "any officer", None),
    ("get", "/v1/officers", "List officers", "any officer", None),
    ("post", "/v1/officers", "Create an officer; the answer holds its token, shown once", "admin", OfficerIn),
    ("get", "/v1/asps", "List ASPs", "any officer", None),
    ("post", "/v1/asps", "Create an ASP; the answer holds its token, shown once", "admin", AspIn),
    ("get", "/v1/audit", "Audit records, newest first (query: limit, entry)", "any officer", None),
    ("get", "/v1/audit/verify", "Verify the audit hash chain", "any officer", None),
    ("get", "/v1/list/{edition}/notification", "Signed notification; long-poll with after=<serial>&wait=<seconds>", "ASP (plain edition only if allowed), any officer", None),
    ("get", "/v1/list/{edition}/{name}", "Immutable snapshot or delta file (ETag, conditional GET)", "ASP (plain edition only if allowed), any officer", None),
    ("post", "/v1/acks", "Acknowledge an applied serial and its state checksum", "ASP", AckIn),
    ("post", "/v1/complaints", "File a complaint from a stop page (idempotent per key: 201 new, 200 repeat)", "ASP", ComplaintIn),
    ("get", "/v1/complaints", "Officers: list (query: status, limit). ASPs: decisions on their complaints since a time (query: since)", "any officer, ASP", None),
    ("get", "/v1/complaints/{complaint_id}", "Officers: the full complaint. ASPs: status and reasons of their own", "any officer, ASP", None),
    ("post", "/v1/complaints/{complaint_id}/decide", "Decide with written reasons (not by who added or approved the entry); upheld delists", "officer, approver, admin", DecisionIn),
]  # fmt: skip

ERRORS = {
    "400": "Malformed JSON or query",
    "401": "Missing or invalid bearer token",
    "403": "The caller's role may not do this (or four-eyes rule)",
    "404": "No such entry, batch, edition or file",
    "409": "Conflict: duplicate, already decided, confirmation required",
    "413": "Request body too large",
    "422": "Invalid entry or field; `reason` names the refusal",
}


def openapi() -> dict[str, Any]:
    paths: dict[str, dict] = {}
    schemas: dict[str, Any] = {}
    for method, path, summary, who, model in OPERATIONS:
        op: dict[str, Any] = {
            "summary": summary,
            "description": f"Who may call: {who}.",
            "responses": {
                "200": {"description": "OK"},
                **{k: {"description": v} for k, v in ERRORS.items()},
            },
        }
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if model is not None:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            }
        if path not in ("/healthz", "/v1/openapi.json"):
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
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


if __name__ == "__main__":
    print(json.dumps(openapi(), indent=2, sort_keys=True))
