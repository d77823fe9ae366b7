"""Named crash points for SIGKILL tests.

Production code calls `checkpoint(name)` at the moments a crash is most harmful; it does nothing
unless a test harness armed one point with `arm()` (tests/crashing.py does so before running a
command in a child process, tests in a forked child). Nothing in the environment arms it, so no
setting can make a production process kill itself. Unarmed, a checkpoint is one comparison.
"""

from __future__ import annotations

import os
import signal

_armed: str | None = None


def arm(name: str | None) -> None:
    """Make `checkpoint(name)` kill this process with SIGKILL, as a power cut or the OOM killer
    would (None disarms). For test harnesses only."""
    global _armed
    _armed = name


def checkpoint(name: str) -> None:
    if name == _armed:
        os.kill(os.getpid(), signal.SIGKILL)
