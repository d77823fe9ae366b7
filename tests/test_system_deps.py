"""scripts/install-system-deps.sh: the one list of Debian tools the suite drives, checked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import tools

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install-system-deps.sh"
PACKAGES = REPO / "scripts" / "debian-packages.txt"


def listed() -> dict[str, str]:
    """command -> Debian package, from the package list."""
    out = {}
    for line in PACKAGES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, command = line.split()[:2]
            if command != "-":
                out[command] = package
    return out


def test_every_tool_a_test_drives_is_in_the_package_list() -> None:
    used = set()
    for path in (REPO / "tests").glob("*.py"):
        for args in re.findall(r"mark\.tools\(([^)]*)\)", path.read_text()):
            used |= set(re.findall(r'"([^"]+)"', args))
    assert used  # the scan found the markers
    commands = listed()
    for tool in used:
        assert tool in commands, f"{tool} is used by a test but not in {PACKAGES.name}"
        assert commands[tool] == tools.package(tool)


def test_a_missing_tool_is_named_and_fails(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / SCRIPT.name
    shutil.copy(SCRIPT, script)
    (tmp_path / "scripts" / PACKAGES.name).write_text(
        "# test list\nmake make\ncordon-nosuch-pkg cordon-nosuch-tool\n"
    )
    out = subprocess.run([str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cordon-nosuch-tool (Debian package cordon-nosuch-pkg)" in out.stderr
    assert "make" not in out.stderr.split("not installed:")[1].split("Install")[0]


def test_this_machine_has_everything() -> None:
    out = subprocess.run([str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
