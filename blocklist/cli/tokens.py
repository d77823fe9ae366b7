"""Showing a new principal's token once, or writing it to a 0600 file."""

from __future__ import annotations

import argparse
from pathlib import Path

from blocklist.cli.errors import CliError
from blocklist.cli.offline import write_secret
from blocklist.cli.rendering import print_json, say


def show_token(args: argparse.Namespace, what: str, data: dict) -> None:
    token = data.get("token", "")
    if getattr(args, "token_out", None):
        try:
            write_secret(Path(args.token_out), token)
            data = {**data, "token": None, "token_file": args.token_out}
        except OSError as exc:
            say(f"error: cannot write {args.token_out}: {exc.strerror or exc}; the token follows")
    if args.json:
        print_json(data)
        return
    print(f"{what} created (id {data.get('id')}).")
    if data.get("token_file"):
        print(f"Token written to {data['token_file']} (mode 0600).")
    else:
        print("Token (shown once; hand it over safely):")
        print(f"  {token}")


def check_token_out(args: argparse.Namespace) -> None:
    if getattr(args, "token_out", None) and Path(args.token_out).exists():
        raise CliError(f"{args.token_out} already exists; choose a new file for the token", 2)
