"""Named crash points for SIGKILL tests.

Crash tests start a real process with CORDON_TEST_CRASH_AT set to a point's name; the process
kills itself there with SIGKILL, exactly as a power cut or the OOM killer would. Unset, each
checkpoint is one string comparison.
"""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("CORDON_TEST_CRASH_AT")


def checkpoint(name: str) -> None:
    if name == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
