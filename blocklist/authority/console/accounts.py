"""Console sign-in: officers' passwords (Argon2id), TOTP second factors, failures and sessions.

Everything lives in the authority's database (migration 5). A session is a random secret whose
SHA-256 hash is stored; looking it up joins the officer, so a deactivated officer's sessions are
refused from the next request on, like their API tokens. Passwords and TOTP are set up with a
one-time setup code an admin issues (`reset`); the code, too, is stored only as a hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from blocklist.authority import audit
from blocklist.authority.db import Database
from blocklist.authority.errors import Forbidden, Invalid, NotFound
from blocklist.authority.roles import Principal, require

MIN_PASSWORD = 12
MAX_PASSWORD = 256
SETUP_SECONDS = 24 * 3600
TOTP_STEP = 30
_HASHER = PasswordHasher()  # Argon2id, the library's memory-hard defaults
# Verified against when the name is unknown, so both paths cost the same.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class SignInPolicy:
    max_failures: int = 5
    lockout_seconds: int = 900
    idle_seconds: int = 1800
    max_age_seconds: int = 12 * 3600


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    session_id: int


class SignInRefused(Exception):
    """Wrong name, password or code, or a locked account; the message never says which."""

    def __init__(self, failures: int, locked: bool = False) -> None:
        super().__init__("locked" if locked else "refused")
        self.failures = failures
        self.locked = locked


class Accounts:
    def __init__(self, db: Database, policy: SignInPolicy = SignInPolicy()) -> None:
        self.db = db
        self.policy = policy

    # ------------------------------------------------------------------ setup codes

    def reset(self, actor: Principal, name: str) -> str:
        """A new one-time setup code for an officer (admins; the authority itself at first
        start). Clears the password and TOTP secret and ends the officer's sessions."""
        require(actor, "manage")
        code = secrets.token_urlsafe(18)
        now = self.db.now()
        with self.db.write() as conn:
            row = conn.execute("SELECT id FROM officers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound("not_found", f"officer {name[:80]!r} does not exist")
            if actor.kind == "officer" and row["id"] == actor.id:
                raise Forbidden("four_eyes", "another admin must reset your console sign-in")
            conn.execute(
                "INSERT INTO console_credentials (officer_id, setup_hash, setup_expires)"
                " VALUES (?, ?, ?) ON CONFLICT (officer_id) DO UPDATE SET password_hash = NULL,"
                " totp_secret = NULL, enabled = 0, setup_hash = excluded.setup_hash,"
                " setup_expires = excluded.setup_expires, failures = 0, locked_until = NULL",
                (row["id"], _digest(code), now + SETUP_SECONDS),
            )
            conn.execute(
                "UPDATE console_sessions SET revoked = ? WHERE officer_id = ? AND revoked IS NULL",
                (now, row["id"]),
            )
            audit.append(
                conn,
                time=now,
                actor=actor.label,
                action="console.reset",
                detail={"officer": name},
            )
        return code

    def _setup_row(self, conn, name: str, code: str):
        row = conn.execute(
            "SELECT o.id, o.active, c.* FROM officers o JOIN console_credentials c"
            " ON c.officer_id = o.id WHERE o.name = ?",
            (name,),
        ).fetchone()
        ok = (
            row is not None
            and row["setup_hash"] is not None
            and row["setup_expires"] >= self.db.now()
            and hmac.compare_digest(bytes(row["setup_hash"]), _digest(code))
        )
        if not ok:
            raise Invalid("setup_refused", "unknown officer name, or a wrong or expired code")
        return row

    def begin_setup(self, name: str, code: str, password: str) -> str:
        """Check the setup code, store the new password's hash and a fresh TOTP secret
        (not yet enabled); returns the secret for the QR code."""
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise Invalid(
                "weak_password",
                f"the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            )
        secret = pyotp.random_base32()
        hashed = _HASHER.hash(password)
        with self.db.write() as conn:
            row = self._setup_row(conn, name, code)
            conn.execute(
                "UPDATE console_credentials SET password_hash = ?, totp_secret = ?, enabled = 0"
                " WHERE officer_id = ?",
                (hashed, secret, row["id"]),
            )
        return secret

    def finish_setup(self, name: str, code: str, totp: str) -> None:
        """The first TOTP code proves the authenticator holds the secret; the setup code ends."""
        with self.db.write() as conn:
            row = self._setup_row(conn, name, code)
            step = self._totp_step(row["totp_secret"], totp, None)
            if step is None:
                raise Invalid("bad_code", "the code from the authenticator app is not valid")
            # The setup code ends here; sign-in refuses replays of codes from then on.
            conn.execute(
                "UPDATE console_credentials SET enabled = 1, setup_hash = NULL,"
                " setup_expires = NULL, last_totp_step = NULL WHERE officer_id = ?",
                (row["id"],),
            )
            audit.append(
                conn,
                time=self.db.now(),
                actor=f"officer:{name}",
                action="console.enrolled",
                detail={"officer": name},
            )

    def _totp_step(self, secret: str | None, code: str, last: int | None) -> int | None:
        """The time step a code matches (this one or one either side), never one used before."""
        if not secret or not code.isascii() or not code.isdigit() or len(code) != 6:
            return None
        totp = pyotp.TOTP(secret)
        now_step = self.db.now() // TOTP_STEP
        for step in (now_step, now_step - 1, now_step + 1):
            if (last is None or step > last) and hmac.compare_digest(
                totp.at(step * TOTP_STEP), code
            ):
                return step
        return None

    # ------------------------------------------------------------------ sign-in

    def sign_in(self, name: str, password: str, totp: str) -> tuple[str, Session]:
        """Password and TOTP code; a new session (its secret, and the session)."""
        now = self.db.now()
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT o.id, o.name, o.role, o.active, c.* FROM officers o"
                " JOIN console_credentials c ON c.officer_id = o.id WHERE o.name = ?",
                (name,),
            ).fetchone()
        if row is None:
            _check_password(_DUMMY_HASH, password)
            raise SignInRefused(0)
        if row["locked_until"] is not None and row["locked_until"] > now:
            raise SignInRefused(row["failures"], locked=True)
        password_ok = _check_password(row["password_hash"] or _DUMMY_HASH, password)
        step = self._totp_step(row["totp_secret"], totp, row["last_totp_step"])
        if not (password_ok and step is not None and row["enabled"] and row["active"]):
            failures = self._fail(row["id"], name)
            raise SignInRefused(failures, locked=failures >= self.policy.max_failures)
        secret = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        with self.db.write() as conn:
            # A code is good once: the same step cannot sign in twice.
            cur = conn.execute(
                "UPDATE console_credentials SET failures = 0, locked_until = NULL,"
                " last_totp_step = ? WHERE officer_id = ?"
                " AND (last_totp_step IS NULL OR last_totp_step < ?)",
                (step, row["id"], step),
            )
            if cur.rowcount != 1:
                raise SignInRefused(row["failures"])
            cur = conn.execute(
                "INSERT INTO console_sessions (session_hash, officer_id, csrf, created, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (_digest(secret), row["id"], csrf, now, now),
            )
            audit.append(
                conn, time=now, actor=f"officer:{name}", action="console.sign_in", detail={}
            )
        who = Principal("officer", row["id"], row["name"], row["role"])
        return secret, Session(who, csrf, cur.lastrowid or 0)

    def _fail(self, officer_id: int, name: str) -> int:
        now = self.db.now()
        with self.db.write() as conn:
            failures = (
                conn.execute(
                    "SELECT failures FROM console_credentials WHERE officer_id = ?", (officer_id,)
                ).fetchone()[0]
                + 1
            )
            locked = (
                now + self.policy.lockout_seconds if failures >= self.policy.max_failures else None
            )
            conn.execute(
                "UPDATE console_credentials SET failures = ?, locked_until = ?"
                " WHERE officer_id = ?",
                (0 if locked else failures, locked, officer_id),
            )
            if locked:
                audit.append(
                    conn,
                    time=now,
                    actor="system:console",
                    action="console.locked",
                    detail={"officer": name, "until": locked},
                )
        return failures

    def session(self, secret: str) -> Session | None:
        """The live session for a cookie value, or None (unknown, ended, idle, too old, or the
        officer deactivated)."""
        if not secret or len(secret) > 100:
            return None
        now = self.db.now()
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT s.id, s.csrf, s.created, s.last_seen, o.id AS oid, o.name, o.role"
                " FROM console_sessions s JOIN officers o ON o.id = s.officer_id"
                " JOIN console_credentials c ON c.officer_id = o.id"
                " WHERE s.session_hash = ? AND s.revoked IS NULL AND o.active = 1"
                " AND c.enabled = 1",
                (_digest(secret),),
            ).fetchone()
        if row is None:
            return None
        if (
            now - row["last_seen"] > self.policy.idle_seconds
            or now - row["created"] > self.policy.max_age_seconds
        ):
            return None
        if now - row["last_seen"] >= 60:  # at most one write a minute per session
            with self.db.write() as conn:
                conn.execute(
                    "UPDATE console_sessions SET last_seen = ? WHERE id = ?", (now, row["id"])
                )
        who = Principal("officer", row["oid"], row["name"], row["role"])
        return Session(who, row["csrf"], row["id"])

    def sign_out(self, session: Session, everywhere: bool = False) -> int:
        now = self.db.now()
        with self.db.write() as conn:
            if everywhere:
                cur = conn.execute(
                    "UPDATE console_sessions SET revoked = ? WHERE officer_id = ?"
                    " AND revoked IS NULL",
                    (now, session.principal.id),
                )
                audit.append(
                    conn,
                    time=now,
                    actor=session.principal.label,
                    action="console.sign_out_everywhere",
                    detail={"sessions": cur.rowcount},
                )
            else:
                cur = conn.execute(
                    "UPDATE console_sessions SET revoked = ? WHERE id = ?",
                    (now, session.session_id),
                )
        return cur.rowcount

    def enrolled(self) -> dict[int, bool]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT officer_id, enabled FROM console_credentials").fetchall()
        return {r[0]: bool(r[1]) for r in rows}


def _check_password(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
