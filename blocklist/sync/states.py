"""The follower's condition as one state, and the alarms that follow from it.

Pure: facts in (what is in force, what is held, times, limits), state and alarms out. The
follower writes both to status.json, exports them as the `cordon_sync_state{state}` and
`cordon_sync_alarm{alarm}` gauges, and reports the alarms in its acks.

    no_list ──apply──▶ in_force ──rails refuse──▶ held ──correction or release──▶ in_force
                          │  ▲                                    (held keeps long-polling)
       nothing verified   │  │ a newer notification verified
       for max_age        ▼  │
                        stale            expired: the notification in force expired (freeze)

The worst condition wins: expired > stale > held > in_force. None of them drops the list.
"""

from __future__ import annotations

from dataclasses import dataclass

SYNC_STATES = ("no_list", "in_force", "held", "stale", "expired")
ALARMS = ("no_list", "frozen", "stale", "held", "replay_state", "suspicious")
# Refusals that a stale mirror cannot explain: someone signs with a stolen or revoked key.
SUSPICIOUS = frozenset({"serial_jump", "revoked", "equivocation"})


@dataclass(frozen=True)
class Facts:
    now: int
    serial: int | None  # of the list in force; None when there is none
    expires: int | None
    verified_at: int | None
    max_age_seconds: float
    held: dict | None = None
    replay_damaged: str | None = None
    suspicious: str | None = None  # the last refusal in SUSPICIOUS, until a list is applied


def assess(f: Facts) -> tuple[str, dict[str, str]]:
    """(state, alarms) for the facts."""
    alarms: dict[str, str] = {}
    if f.serial is None:
        alarms["no_list"] = "no verified list: nothing is being blocked"
    else:
        assert f.expires is not None and f.verified_at is not None
        if f.now >= f.expires:
            alarms["frozen"] = f"the notification for serial {f.serial} expired; still enforcing it"
        age = f.now - f.verified_at
        if age > f.max_age_seconds:
            alarms["stale"] = f"no notification verified for {age // 3600} h"
    if f.held is not None:
        alarms["held"] = f"serial {f.held.get('serial')} held: {f.held.get('message')}"
    if f.replay_damaged:
        alarms["replay_state"] = f.replay_damaged
    if f.suspicious:
        alarms["suspicious"] = f.suspicious
    if f.serial is None:
        state = "no_list"
    elif "frozen" in alarms:
        state = "expired"
    elif "stale" in alarms:
        state = "stale"
    elif f.held is not None:
        state = "held"
    else:
        state = "in_force"
    return state, alarms
