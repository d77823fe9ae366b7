"""Officers, ASPs and their API tokens: creation, confirmation, revocation, deactivation.

Tokens are stored only as SHA-256 hashes and checked on every request, so a revoked token or a
deactivated officer or ASP is refused from the next request on.

Four eyes on who may approve: an officer created with, or raised to, a role in
`roles.GUARDED_ROLES` by an admin stays inactive (or keeps the old role) until a second person —
another admin or oversight, who is neither the requester nor an account the requester created —
confirms. The authority itself ("system", i.e. `blocklist init` and offline commands run on the
state directory) needs no confirmation: whoever holds the state directory is outside the
four-eyes model, and the audit log anchored in signed notifications is the control on them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3

from blocklist.authority import audit
from blocklist.authority.db import Database
from blocklist.authority.errors import Conflict, Forbidden, Invalid, NotFound
from blocklist.authority.roles import ADMIN, GUARDED_ROLES, ROLES, SYSTEM, Principal, require

TOKEN_PREFIX = "cdn_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_REASON = 500


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise Invalid(
            "invalid_name", f"{what} name {str(name)[:80]!r} must be 1-64 letters, digits, . _ @ -"
        )
    return name


def _reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise Invalid("missing_field", "reason is required")
    if len(reason) > MAX_REASON:
        raise Invalid("too_long", f"reason is longer than {MAX_REASON} characters")
    return reason


def creator_chain(conn: sqlite3.Connection, officer_id: int) -> list[int]:
    """Who created `officer_id`, who created that account, and so on up to the system: whoever
    holds any of them may hold this account's token too (an admin hands a new account its token)."""
    chain: list[int] = []
    current: int | None = officer_id
    while current is not None and len(chain) < 64:
        row = conn.execute("SELECT created_by FROM officers WHERE id = ?", (current,)).fetchone()
        current = None if row is None else row[0]
        if current is None or current in chain or current == officer_id:
            break
        chain.append(current)
    return chain


def depends_on(conn: sqlite3.Connection, a: int, b: int) -> bool:
    """True when a and b are one person for four-eyes purposes: the same account, or one created
    the other, directly or through accounts it created."""
    return a == b or b in creator_chain(conn, a) or a in creator_chain(conn, b)


class Principals:
    db: Database

    # ------------------------------------------------------------------ authentication

    def authenticate(self, token: str) -> Principal | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT t.id AS token_id, t.officer_id, t.asp_id, o.name AS oname, o.role,"
                " o.active AS oactive, a.name AS aname, a.plain_allowed, a.active AS aactive"
                " FROM tokens t LEFT JOIN officers o ON o.id = t.officer_id"
                " LEFT JOIN asps a ON a.id = t.asp_id"
                " WHERE t.token_hash = ? AND t.revoked IS NULL",
                (hash_token(token),),
            ).fetchone()
        if row is None:
            return None
        if row["officer_id"] is not None:
            if not row["oactive"]:
                return None
            return Principal(
                "officer", row["officer_id"], row["oname"], row["role"], token_id=row["token_id"]
            )
        if not row["aactive"]:
            return None
        return Principal(
            "asp",
            row["asp_id"],
            row["aname"],
            "",
            bool(row["plain_allowed"]),
            token_id=row["token_id"],
        )

    def _issue_token(
        self, conn: sqlite3.Connection, officer_id: int | None, asp_id: int | None, label: str
    ) -> tuple[int, str]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        cur = conn.execute(
            "INSERT INTO tokens (token_hash, officer_id, asp_id, label, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (hash_token(token), officer_id, asp_id, label[:100], self.db.now()),
        )
        return cur.lastrowid or 0, token

    def _add_principal(
        self, actor: Principal, kind: str, fields: dict, detail: dict
    ) -> tuple[int, str]:
        """Insert an officer or an ASP with its first API token, and audit it, in one go."""
        table, label = ("officers", "officer") if kind == "officer" else ("asps", "ASP")
        now = self.db.now()
        values = [int(v) if isinstance(v, bool) else v for v in fields.values()]
        with self.db.write() as conn:
            try:
                cur = conn.execute(
                    f"INSERT INTO {table} ({', '.join(fields)}, created)"
                    f" VALUES ({', '.join('?' * len(fields))}, ?)",
                    (*values, now),
                )
            except sqlite3.IntegrityError:
                raise Conflict("exists", f"{label} {fields['name']!r} already exists") from None
            new_id = cur.lastrowid or 0
            owner = (new_id, None) if kind == "officer" else (None, new_id)
            _, token = self._issue_token(conn, *owner, "initial")
            audit.append(conn, time=now, actor=actor.label, action=f"{kind}.add", detail=detail)
        return new_id, token

    # ------------------------------------------------------------------ officers

    def _officer_row(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM officers WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"officer {name[:80]!r} does not exist")
        return row

    def add_officer(self, actor: Principal, name: str, role: str) -> tuple[dict, str]:
        """Create an officer and a first API token (returned once, stored only as a hash).

        An admin creating an approver or admin account gets it inactive until a
        second person confirms (`confirm_officer`).
        """
        require(actor, "manage")
        check_name(name, "officer")
        if role not in ROLES:
            raise Invalid("invalid_role", f"role {role!r} is not one of {', '.join(ROLES)}")
        needs_confirmation = actor.kind == "officer" and role in GUARDED_ROLES
        fields = {
            "name": name,
            "role": role,
            "active": not needs_confirmation,
            "created_by": actor.id if actor.kind == "officer" else None,
            "confirmed": None if needs_confirmation else self.db.now(),
        }
        detail = {"officer": name, "role": role, "confirmation": needs_confirmation}
        new_id, token = self._add_principal(actor, "officer", fields, detail)
        info = {"id": new_id, "name": name, "role": role, "active": not needs_confirmation}
        if needs_confirmation:
            info["awaiting_confirmation"] = True
        return info, token

    def change_role(self, actor: Principal, name: str, role: str, reason: str) -> dict:
        """Lower a role at once; raising one to a guarded role waits for a confirmation."""
        require(actor, "manage")
        reason = _reason(reason)
        if role not in ROLES:
            raise Invalid("invalid_role", f"role {role!r} is not one of {', '.join(ROLES)}")
        with self.db.write() as conn:
            row = self._officer_row(conn, name)
            if row["role"] == role and row["pending_role"] is None:
                raise Conflict("unchanged", f"officer {name} is already {role}")
            if actor.kind == "officer" and row["id"] == actor.id:
                raise Forbidden("four_eyes", "nobody changes their own role")
            if role in GUARDED_ROLES and actor.kind == "officer":
                conn.execute(
                    "UPDATE officers SET pending_role = ?, requested_by = ? WHERE id = ?",
                    (role, actor.id, row["id"]),
                )
                action = "officer.role_requested"
            else:
                if row["role"] == ADMIN and role != ADMIN:
                    self._keep_an_admin(conn, row["id"])
                conn.execute(
                    "UPDATE officers SET role = ?, pending_role = NULL, requested_by = NULL"
                    " WHERE id = ?",
                    (role, row["id"]),
                )
                action = "officer.role"
            audit.append(
                conn,
                time=self.db.now(),
                actor=actor.label,
                action=action,
                detail={"officer": name, "from": row["role"], "to": role},
                reason=reason,
            )
            return self._officer_info(self._officer_row(conn, name))

    def confirm_officer(self, actor: Principal, name: str) -> dict:
        """The second pair of eyes on a new guarded account or a raised role."""
        require(actor, "confirm")
        with self.db.write() as conn:
            row = self._officer_row(conn, name)
            pending_new = row["confirmed"] is None and row["deactivated"] is None
            pending_role = row["pending_role"]
            if not pending_new and pending_role is None:
                raise Conflict("nothing_to_confirm", f"officer {name} awaits no confirmation")
            requester = row["requested_by"] if pending_role is not None else row["created_by"]
            if actor.kind == "officer":
                if actor.id in (requester, row["id"]):
                    raise Forbidden(
                        "four_eyes",
                        f"{actor.name} asked for this change; another admin or oversight "
                        "must confirm it",
                    )
                if requester is not None and depends_on(conn, actor.id, requester):
                    raise Forbidden(
                        "four_eyes",
                        f"{actor.name}'s account and the requester's were created one by the "
                        "other; someone independent of them must confirm",
                    )
                if depends_on(conn, actor.id, row["id"]):
                    raise Forbidden(
                        "four_eyes",
                        f"{actor.name} created officer {name}'s account (or was created by it); "
                        "someone independent of them must confirm",
                    )
            now = self.db.now()
            if pending_role is not None:
                conn.execute(
                    "UPDATE officers SET role = pending_role, pending_role = NULL,"
                    " requested_by = NULL, confirmed_by = ?, confirmed = ? WHERE id = ?",
                    (actor.id, now, row["id"]),
                )
            else:
                conn.execute(
                    "UPDATE officers SET active = 1, confirmed_by = ?, confirmed = ? WHERE id = ?",
                    (actor.id, now, row["id"]),
                )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="officer.confirm",
                detail={"officer": name, "role": pending_role or row["role"]},
            )
            return self._officer_info(self._officer_row(conn, name))

    def _keep_an_admin(self, conn: sqlite3.Connection, leaving: int) -> None:
        others = conn.execute(
            "SELECT count(*) FROM officers WHERE role = 'admin' AND active = 1 AND id != ?",
            (leaving,),
        ).fetchone()[0]
        if not others:
            raise Conflict("last_admin", "this is the last active admin; create another first")

    def deactivate_officer(self, actor: Principal, name: str, reason: str) -> dict:
        """Refuse every token of an officer who left, from the next request on."""
        require(actor, "manage")
        reason = _reason(reason)
        with self.db.write() as conn:
            row = self._officer_row(conn, name)
            if row["deactivated"] is not None:
                raise Conflict("inactive", f"officer {name} is already deactivated")
            if row["role"] == ADMIN and row["active"]:
                self._keep_an_admin(conn, row["id"])
            now = self.db.now()
            conn.execute(
                "UPDATE officers SET active = 0, deactivated = ?, pending_role = NULL WHERE id = ?",
                (now, row["id"]),
            )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="officer.deactivate",
                detail={"officer": name},
                reason=reason,
            )
            return self._officer_info(self._officer_row(conn, name))

    @staticmethod
    def _officer_info(row: sqlite3.Row) -> dict:
        return {
            "id": row["id"],
            "name": row["name"],
            "role": row["role"],
            "created": row["created"],
            "active": bool(row["active"]),
            "awaiting_confirmation": row["pending_role"] is not None
            or (row["confirmed"] is None and row["deactivated"] is None and not row["active"]),
            "pending_role": row["pending_role"],
            "deactivated": row["deactivated"],
        }

    def list_officers(self, actor: Principal) -> list[dict]:
        require(actor, "read")
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM officers ORDER BY id").fetchall()
        return [self._officer_info(r) for r in rows]

    def bootstrap_admin(self, name: str) -> str:
        """First admin and token, for `blocklist init`; refused once any officer exists."""
        with self.db.read() as conn:
            if conn.execute("SELECT count(*) FROM officers").fetchone()[0]:
                raise Conflict("exists", "the authority already has officers")
        _, token = self.add_officer(SYSTEM, name, ADMIN)
        return token

    def officer_creator(self, conn: sqlite3.Connection, officer_id: int) -> int | None:
        row = conn.execute("SELECT created_by FROM officers WHERE id = ?", (officer_id,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ ASPs

    def _asp_row(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM asps WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("not_found", f"ASP {name[:80]!r} does not exist")
        return row

    def add_asp(self, actor: Principal, name: str, plain_allowed: bool = False) -> tuple[dict, str]:
        require(actor, "manage")
        check_name(name, "ASP")
        fields = {"name": name, "plain_allowed": plain_allowed}
        new_id, token = self._add_principal(
            actor, "asp", fields, {"asp": name, "plain_allowed": plain_allowed}
        )
        return {"id": new_id, "name": name, "plain_allowed": plain_allowed}, token

    def list_asps(self, actor: Principal) -> list[dict]:
        require(actor, "read")
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT id, name, plain_allowed, created, active, deactivated FROM asps ORDER BY id"
            ).fetchall()
        return [
            {**dict(r), "plain_allowed": bool(r["plain_allowed"]), "active": bool(r["active"])}
            for r in rows
        ]

    def deactivate_asp(self, actor: Principal, name: str, reason: str) -> dict:
        require(actor, "manage")
        reason = _reason(reason)
        with self.db.write() as conn:
            row = self._asp_row(conn, name)
            if not row["active"]:
                raise Conflict("inactive", f"ASP {name} is already deactivated")
            now = self.db.now()
            conn.execute(
                "UPDATE asps SET active = 0, deactivated = ? WHERE id = ?", (now, row["id"])
            )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="asp.deactivate",
                detail={"asp": name},
                reason=reason,
            )
        return {"name": name, "active": False, "deactivated": now}

    # ------------------------------------------------------------------ tokens

    def _owner(
        self, conn: sqlite3.Connection, officer: str | None, asp: str | None
    ) -> tuple[int | None, int | None, str]:
        if (officer is None) == (asp is None):
            raise Invalid("invalid_body", "name exactly one of officer or asp")
        if officer is not None:
            return self._officer_row(conn, officer)["id"], None, f"officer {officer}"
        assert asp is not None
        return None, self._asp_row(conn, asp)["id"], f"ASP {asp}"

    def issue_token(
        self,
        actor: Principal,
        *,
        officer: str | None = None,
        asp: str | None = None,
        label: str = "",
        revoke_current: bool = False,
    ) -> dict:
        """A new token for an officer or ASP. Admins issue for anyone; officers and ASPs may
        rotate their own (`revoke_current` then revokes the token used for the request)."""
        with self.db.write() as conn:
            if officer is None and asp is None:
                officer, asp = (actor.name, None) if actor.kind == "officer" else (None, actor.name)
            officer_id, asp_id, owner = self._owner(conn, officer, asp)
            own = (actor.kind == "officer" and officer_id == actor.id) or (
                actor.kind == "asp" and asp_id == actor.id
            )
            if not own:
                require(actor, "manage")
            token_id, token = self._issue_token(conn, officer_id, asp_id, label or "issued")
            revoked = None
            if revoke_current and own and actor.token_id is not None:
                conn.execute(
                    "UPDATE tokens SET revoked = ?, revoked_by = ?, revoke_reason = ?"
                    " WHERE id = ? AND revoked IS NULL",
                    (self.db.now(), actor.label, "rotated", actor.token_id),
                )
                revoked = actor.token_id
            audit.append(
                conn,
                time=self.db.now(),
                actor=actor.label,
                action="token.issue",
                detail={"owner": owner, "token": token_id, "revoked": revoked},
            )
        return {"id": token_id, "owner": owner, "token": token, "revoked": revoked}

    def revoke_token(self, actor: Principal, token_id: int, reason: str) -> dict:
        """Revoke a token by id: admins any, officers and ASPs their own."""
        reason = _reason(reason)
        with self.db.write() as conn:
            row = conn.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                raise NotFound("not_found", f"token {token_id} does not exist")
            own = (actor.kind == "officer" and row["officer_id"] == actor.id) or (
                actor.kind == "asp" and row["asp_id"] == actor.id
            )
            if not own:
                require(actor, "manage")
            if row["revoked"] is not None:
                raise Conflict("revoked", f"token {token_id} is already revoked")
            now = self.db.now()
            conn.execute(
                "UPDATE tokens SET revoked = ?, revoked_by = ?, revoke_reason = ? WHERE id = ?",
                (now, actor.label, reason, token_id),
            )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="token.revoke",
                detail={"token": token_id},
                reason=reason,
            )
        return {"id": token_id, "revoked": now}

    def list_tokens(self, actor: Principal) -> list[dict]:
        """Token ids, owners and state (never the tokens): all for admins, else one's own."""
        sql = (
            "SELECT t.id, t.label, t.created, t.revoked, t.revoke_reason, o.name AS officer,"
            " a.name AS asp FROM tokens t LEFT JOIN officers o ON o.id = t.officer_id"
            " LEFT JOIN asps a ON a.id = t.asp_id"
        )
        args: tuple = ()
        if actor.kind == "officer" and actor.role == ADMIN:
            pass
        elif actor.kind == "asp":
            sql, args = sql + " WHERE t.asp_id = ?", (actor.id,)
        else:
            sql, args = sql + " WHERE t.officer_id = ?", (actor.id,)
        with self.db.read() as conn:
            rows = conn.execute(sql + " ORDER BY t.id", args).fetchall()
        return [{**dict(r), "current": r["id"] == actor.token_id} for r in rows]
