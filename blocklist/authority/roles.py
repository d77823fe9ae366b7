"""Who may do what at the authority: the one table of roles and permissions.

The API's route table, the OpenAPI document, the store's checks and the CLI's `--role` choices
all read this module; nothing else names a role.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocklist.authority.errors import Forbidden

ROLES = ("officer", "approver", "oversight", "admin")
ADMIN = "admin"
OVERSIGHT = "oversight"

# permission: (roles that hold it, what it lets them do — used in refusals and docs).
# Oversight reads everything and changes nothing, except confirming a new or elevated
# officer: the second pair of eyes on who may approve.
PERMISSIONS: dict[str, tuple[frozenset[str], str]] = {
    "read": (frozenset(ROLES), "read entries, batches, audit and compliance"),
    "add": (frozenset({"officer", "approver", "admin"}), "add or import entries"),
    "delist": (frozenset({"officer", "approver", "admin"}), "delist entries"),
    "decide": (frozenset({"officer", "approver", "admin"}), "decide complaints"),
    "publish": (frozenset({"officer", "approver", "admin"}), "publish or run the lifecycle"),
    "approve": (frozenset({"approver", "admin"}), "approve or reject entries and batches"),
    "manage": (frozenset({ADMIN}), "create, deactivate or change officers, ASPs and tokens"),
    "confirm": (frozenset({ADMIN, OVERSIGHT}), "confirm another admin's change to officers"),
}
# Roles whose creation or elevation by an admin needs a second person's confirmation.
# (Oversight is not among them: an oversight account an admin creates can never confirm that
# admin's own requests, see principals.confirm_officer.)
GUARDED_ROLES = frozenset({"approver", ADMIN})


@dataclass(frozen=True)
class Principal:
    """Who is calling: an officer with a role, an ASP, or the authority itself ("system")."""

    kind: str  # "officer" | "asp" | "system"
    id: int
    name: str
    role: str = ""
    plain_allowed: bool = False
    token_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


SYSTEM = Principal("system", 0, "system", ADMIN)


def roles_with(permission: str) -> frozenset[str]:
    return PERMISSIONS[permission][0]


def may(actor: Principal, permission: str) -> bool:
    if actor.kind == "system":
        return True
    return actor.kind == "officer" and actor.role in roles_with(permission)


def require(actor: Principal, permission: str) -> None:
    if not may(actor, permission):
        who = f"{actor.name} ({actor.role or actor.kind})"
        raise Forbidden("forbidden", f"{who} may not {PERMISSIONS[permission][1]}")


def describe(permission: str) -> str:
    """Who holds a permission, in words (for the OpenAPI document and docs)."""
    roles = roles_with(permission)
    if roles == frozenset(ROLES):
        return "any officer"
    return ", ".join(r for r in ROLES if r in roles)
