"""The `blocklist` command: set up and run the authority, and drive its API as an officer.

Offline commands work on the files named by authority.toml (`init`, `serve`,
`audit verify --config`). Every other command talks to the authority's HTTP API at `--url`
(env CORDON_URL) with the officer's bearer token (`--token`/CORDON_TOKEN or
`--token-file`/CORDON_TOKEN_FILE). Output is for people by default; `--json` prints the API's
JSON instead.

Exit status: 0 done, 1 refused or failed (API error, broken audit chain, nothing imported),
2 bad usage or configuration.

Layout: `client` (HTTP), `rendering` (tables, times, safe text), `importing` (import files),
`offline` (config, database, secret files), `parsing` (global options, argument types), and one
module per command group, each with a `register(cmds)` that adds its own subcommands. A new group
is a new module listed in GROUPS below.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from blocklist.cli import (
    audit,
    batches,
    complaints,
    entries,
    feeds,
    keys,
    lifecycle,
    principals,
    publication,
    setup,
)
from blocklist.cli.client import resolve_globals
from blocklist.cli.errors import ApiError, CliError
from blocklist.cli.parsing import Commands, add_globals
from blocklist.cli.rendering import SafeWriter, print_json, say, table

__all__ = ["ApiError", "CliError", "build_parser", "main", "table"]

# Each group registers its own subcommands; `--help` lists them in this order.
GROUPS = (
    setup,
    principals,
    entries,
    batches,
    feeds,
    publication,
    lifecycle,
    keys,
    complaints,
    audit,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocklist",
        description="Cordon authority: keep, approve and publish the signed national blocklist.",
        epilog="Exit status: 0 done, 1 refused or failed, 2 bad usage or configuration.",
    )
    add_globals(parser, top=True)
    cmds = Commands(parser, "commands")
    for group in GROUPS:
        group.register(cmds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout = sys.stdout
    # Whatever a command prints, no control or bidi character reaches the terminal raw.
    sys.stdout = SafeWriter(stdout)  # type: ignore[assignment]
    try:
        return _run(args)
    finally:
        sys.stdout = stdout


def _run(args: argparse.Namespace) -> int:
    try:
        resolve_globals(args)
        return args.func(args)
    except ApiError as exc:
        if args.json:
            print_json(exc.data)
        say(f"error: {exc}")
        for hint in exc.hints:
            say(hint)
        return exc.code
    except CliError as exc:
        say(f"error: {exc}")
        for hint in exc.hints:
            say(hint)
        return exc.code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:
        # `blocklist list | head`: the reader went away; nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
