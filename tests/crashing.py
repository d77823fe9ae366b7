"""Run a command with one crash point armed: `python tests/crashing.py POINT -m module args...`.

The process kills itself with SIGKILL when it reaches `blocklist.crash.checkpoint(POINT)`.
The production commands have no switch for this; only this harness arms a point.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def argv(point: str, module: str, *args: str) -> list[str]:
    """The command line that runs `python -m module args...` with `point` armed."""
    return [sys.executable, str(HERE), point, "-m", module, *args]


def main() -> None:
    point, flag, module, *rest = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: crashing.py POINT -m MODULE [ARGS...]")
    from blocklist import crash

    crash.arm(point)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
