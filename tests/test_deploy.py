"""The deployment kit: every example config loads, every systemd unit verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tools

from blocklist.authority.config import AuthorityConfig
from blocklist.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_authority_example_config_loads() -> None:
    config = load_config(DEPLOY / "authority.toml", AuthorityConfig)
    assert config.authority.list_id == "national"
    assert config.lifecycle.gone_threshold == 3


@pytest.mark.tools("systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    # Point ExecStart at this checkout's commands: verify checks that they exist.
    bin_dir = Path(sys.executable).parent
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {u.name for u in units} == {
        "cordon-authority.service",
        "cordon-sync.service",
        "cordon-resolver.service",
        "cordon-stoppage.service",
        "cordon-rpz.service",
        "cordon-rpz-export.service",
        "cordon-urlproxy.service",
    }
    for unit in units:
        (tmp_path / unit.name).write_text(
            unit.read_text().replace("/opt/cordon/bin/", f"{bin_dir}/")
        )
    result = subprocess.run(
        [tools.path("systemd-analyze"), "verify", *(str(tmp_path / u.name) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr and "Failed" not in result.stderr, result.stderr


def test_resolver_unit_has_only_the_bind_capability() -> None:
    unit = (DEPLOY / "systemd" / "cordon-resolver.service").read_text()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in unit
    assert "DynamicUser=yes" in unit and "ProtectSystem=strict" in unit
    assert "StateDirectory=" in unit


def test_configuration_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "configref.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    checked_in = (DEPLOY.parent / "docs" / "configuration.md").read_text()
    assert result.stdout == checked_in, (
        "docs/configuration.md is stale: run python deploy/configref.py > docs/configuration.md"
    )


@pytest.mark.parametrize("name", ["resolver.toml", "rpz.toml", "stoppage.toml", "urlproxy.toml"])
def test_asp_example_configs_load(name: str) -> None:
    from resolver.config import ResolverConfig
    from resolver.rpz.config import load_rpz_config
    from stoppage.config import StoppageConfig
    from urlproxy.config import UrlProxyConfig

    path = DEPLOY / name
    if name == "rpz.toml":
        assert load_rpz_config(path) is not None
    else:
        model = {
            "resolver.toml": ResolverConfig,
            "stoppage.toml": StoppageConfig,
            "urlproxy.toml": UrlProxyConfig,
        }[name]
        assert load_config(path, model) is not None
