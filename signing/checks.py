"""Time and version checks shared by the trust chain and the ASP sync client.

All times are integer Unix seconds supplied by the caller (no clock is read here), so tests and
replays are deterministic. Windows are half-open: valid from `not_before` inclusive to `not_after`
exclusive; a notification is fresh strictly before `expires`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from signing.errors import CertificateError, FreshnessError, RollbackError


def iso_utc(timestamp: int) -> str:
    """ISO 8601 UTC form of a Unix time; never raises (signed data may carry absurd values)."""
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError, TypeError):
        return f"@{timestamp}"


def check_fresh(expires: int, now: int, what: str = "notification") -> None:
    """FreshnessError("expired") when `now` >= `expires`.

    The caller keeps enforcing its last verified state and raises an alarm: an expired
    notification may be a replay by someone who holds back newer ones (a freeze attack).
    """
    if now >= expires:
        raise FreshnessError(
            "expired", f"{what} expired at {iso_utc(expires)} (now {iso_utc(now)})"
        )


def check_not_rollback(current: int | None, new: int, what: str = "serial") -> None:
    """RollbackError when `new` < `current`. Equal is allowed: the same serial is re-signed
    with a later expiry. `current` None means nothing has been applied yet."""
    if current is not None and new < current:
        raise RollbackError(
            "rollback", f"{what} {new} is older than the {what} {current} already applied"
        )


def check_validity_window(not_before: int, not_after: int, now: int, what: str) -> None:
    """CertificateError "not_yet_valid" / "expired" unless not_before <= now < not_after."""
    if now < not_before:
        raise CertificateError(
            "not_yet_valid",
            f"{what} is not valid before {iso_utc(not_before)} (now {iso_utc(now)})",
        )
    if now >= not_after:
        raise CertificateError(
            "expired", f"{what} expired at {iso_utc(not_after)} (now {iso_utc(now)})"
        )
