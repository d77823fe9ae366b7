"""The deploy/ examples for the resolver plugins load with the plugins' own settings readers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import tools
from plugin_fixtures import LUA_DIR, dns_port, free_port
from test_plugins_index import plugin

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_unbound_example_settings_load() -> None:
    settings = plugin.Settings(str(DEPLOY / "unbound" / "cordon.toml"))
    assert settings.index == "/var/lib/cordon-sync/index.bin"
    assert settings.cache_horizon == 0 and settings.after_change[0] == "unbound-control"


@pytest.mark.tools("dnsdist")
@pytest.mark.parametrize("resolver", ["pdns-recursor", "dnsdist"])
def test_lua_example_settings_load(tmp_path: Path, resolver: str) -> None:
    # dnsdist --check-config runs the plugin (and its settings reader) without serving.
    conf = tmp_path / "dnsdist.conf"
    conf.write_text(
        f'setLocal("127.0.0.1:{dns_port()}")\n'
        f'newServer({{address="127.0.0.1:{free_port()}"}})\n'
        f'dofile("{LUA_DIR / "dnsdist.lua"}")\n'
        "addAction(AllRule(), LuaFFIAction(cordon_query))\n"
    )
    env = {**os.environ, "CORDON_LUA_SETTINGS": str(DEPLOY / resolver / "plugin-settings.lua")}
    done = subprocess.run(
        [tools.path("dnsdist"), "--check-config", "-C", str(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration 'dnsdist.conf' OK" in done.stdout.replace(str(tmp_path) + "/", "")
