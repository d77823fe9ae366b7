"""Argument parsing shared by every command group: global options, subcommand builder, types."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from blocklist.cli.client import DEFAULT_URL


def add_globals(parser: argparse.ArgumentParser, top: bool) -> None:
    """The global options, accepted before or after the subcommand.

    On subcommand parsers their default is SUPPRESS, so an option given before the subcommand
    is not overwritten by the subparser's default.
    """
    group = parser.add_argument_group("global options")

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group.add_argument(
        "--url",
        default=default(None),
        help=f"authority API address (env CORDON_URL; default {DEFAULT_URL})",
    )
    group.add_argument(
        "--token", default=default(None), help="officer bearer token (env CORDON_TOKEN)"
    )
    group.add_argument(
        "--token-file",
        default=default(None),
        metavar="FILE",
        help="read the token from FILE (env CORDON_TOKEN_FILE)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON instead of tables and sentences",
    )


class Commands:
    """Builds subcommand parsers that share the global options and a one-line description."""

    def __init__(self, parent: argparse.ArgumentParser, title: str) -> None:
        self.sub = parent.add_subparsers(title=title, metavar="COMMAND", required=True)

    def add(self, name: str, text: str, func: Callable | None = None) -> argparse.ArgumentParser:
        p = self.sub.add_parser(name, help=text, description=text)
        add_globals(p, top=False)
        if func is not None:
            p.set_defaults(func=func)
        return p


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def entry_id(text: str) -> int:
    return positive(text)
