"""The external programs the suite drives, found on PATH (sbin directories included).

A test that needs one marks itself `@pytest.mark.tools("dig", ...)`; tests/conftest.py then fails
it, naming the tool and its Debian package, when the tool is missing (CORDON_ALLOW_SKIP=1 turns
that into a skip for a developer who knows). scripts/debian-packages.txt lists the packages.
"""

from __future__ import annotations

import os
import shutil

SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# Each tool: the names it goes by, and the Debian package that provides it.
TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "dig": (("dig",), "bind9-dnsutils"),
    "curl": (("curl",), "curl"),
    "kdig": (("kdig",), "knot-dnsutils"),
    "unbound": (("unbound",), "unbound"),
    "named": (("named",), "bind9"),
    "chromium": (("chromium", "chromium-browser", "google-chrome"), "chromium"),
    "systemd-analyze": (("systemd-analyze",), "systemd"),
    "pdns_recursor": (("pdns_recursor",), "pdns-recursor"),
    "dnsdist": (("dnsdist",), "dnsdist"),
    "kresd": (("kresd",), "knot-resolver"),
    "minisign": (("minisign",), "minisign"),
}


def search_path() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [d for d in SBIN if d not in parts])


def find(tool: str) -> str | None:
    """Absolute path of `tool`, or None."""
    names, _ = TOOLS.get(tool, ((tool,), tool))
    for name in names:
        path = shutil.which(name, path=search_path())
        if path:
            return path
    return None


def path(tool: str) -> str:
    """Absolute path of `tool`; the bare name when missing (its test is failed by the marker)."""
    return find(tool) or tool


def package(tool: str) -> str:
    return TOOLS.get(tool, ((tool,), tool))[1]
