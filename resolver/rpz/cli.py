"""`resolver rpz serve|export|keygen`: the list as a Response Policy Zone.

Wire into `resolver/cli.py` with `add_rpz_commands(sub)` in `build_parser()` and, in `main()`,
`if args.command == "rpz": return run_rpz(args)` before the resolver's own config is loaded
(rpz commands read their own file). Standalone: `python -m resolver.rpz.cli ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

from blocklist.config import ConfigError
from blocklist.errors import ArtefactError
from blocklist.logs import setup_logging
from resolver.rpz.config import check_serve, load_rpz_config
from resolver.rpz.zone import write_master_file
from signing import SigningError


def add_rpz_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `rpz` and its subcommands to a `resolver` subparsers object."""
    rpz = subparsers.add_parser(
        "rpz",
        help="serve the list as a Response Policy Zone (AXFR/IXFR, NOTIFY, TSIG)",
        description="Feed existing BIND/Unbound/PowerDNS/Knot resolvers: the verified list "
        "(plain edition) as an RPZ zone over zone transfers, or as a zone file.",
    )
    sub = rpz.add_subparsers(dest="rpz_command", required=True)
    serve = sub.add_parser(
        "serve",
        help="authoritative primary for the RPZ zone (UDP+TCP, AXFR/IXFR, NOTIFY, TSIG)",
        description="Serve the RPZ zone built from the list `resolver sync` keeps in "
        "sync.state_dir; send NOTIFY to rpz.notify.targets after each new serial.",
    )
    serve.add_argument("--config", type=Path, required=True, help="rpz.toml")
    serve.add_argument("--port", type=int, help="DNS port (rpz.port)")
    serve.add_argument("--log-level", default="info", help="log level (JSON logs on stderr)")
    serve.set_defaults(rpz_handler=cmd_serve)
    export = sub.add_parser(
        "export",
        help="write the RPZ zone file (RFC 1035 master format), once or after every update",
        description="Write the zone built from the verified list to a file (or stdout), for "
        "resolvers that load RPZ from a file (Knot Resolver). The file is replaced atomically "
        "with mode 0640. Needs [sync] and [rpz], not the transfer settings.",
    )
    export.add_argument("--config", type=Path, required=True, help="rpz.toml")
    export.add_argument(
        "--output",
        type=Path,
        help="zone file to write (default: rpz.export.output; without either: stdout)",
    )
    export.add_argument(
        "--for",
        dest="target",
        choices=("any", "kresd"),
        help="the resolver that loads the file (default: rpz.export.target); kresd refuses "
        "the cname action, which Knot Resolver cannot enforce, and uses local instead",
    )
    export.add_argument(
        "--follow",
        action="store_true",
        help="keep running: write the file again after every list `resolver sync` verifies "
        "(and if it is removed or changed); systemd Type=notify ready after the first write",
    )
    export.add_argument("--log-level", default="info", help="log level for --follow (JSON logs)")
    export.set_defaults(rpz_handler=cmd_export)
    keygen = sub.add_parser(
        "keygen",
        help="create a TSIG secret file (hmac-sha256, 256 bits)",
        description="Write a new random TSIG secret (base64) to FILE, readable by its owner only, "
        "and print the matching BIND key clause.",
    )
    keygen.add_argument("--output", type=Path, required=True, help="secret file to create")
    keygen.add_argument(
        "--name", default="cordon-rpz.", help="key name (rpz.transfer.tsig_key_name)"
    )
    keygen.set_defaults(rpz_handler=cmd_keygen)
    return rpz


def run_rpz(args: argparse.Namespace) -> int:
    return args.rpz_handler(args)


def _load(path: Path):
    try:
        return load_rpz_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    try:
        check_serve(config, str(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.port is not None:
        rpz = config.rpz.model_copy(update={"port": args.port})
        config = config.model_copy(update={"rpz": rpz})
    setup_logging(args.log_level)
    try:
        return asyncio.run(_serve(config, str(args.config)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1


async def _serve(config, source: str) -> int:
    from resolver.rpz.service import RpzService

    service = RpzService(config, source)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.stop()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from resolver.rpz.export import export_settings, write_zone_file
    from resolver.rpz.service import build_from_state

    config = _load(args.config)
    if config is None:
        return 2
    source = str(args.config)
    target = args.target or config.rpz.export.target
    try:
        settings = export_settings(config, target)
    except ValueError as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return 2
    out: Path | None = args.output or config.rpz.export.output
    serial_name = config.rpz.export.serial_name
    if args.follow:
        if out is None:
            print("--follow needs --output or rpz.export.output (a file)", file=sys.stderr)
            return 2
        setup_logging(args.log_level)
        try:
            return asyncio.run(_follow(config, out, settings, source))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    try:
        version = build_from_state(config.sync.state_dir, config, source, settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ArtefactError, SigningError) as exc:
        print(f"{config.sync.state_dir}: cannot load the verified list: {exc}", file=sys.stderr)
        return 1
    if out is None:
        write_master_file(version, settings, sys.stdout, serial_name)
        sys.stdout.flush()
        return 0
    try:
        written = write_zone_file(out, version, settings, serial_name)
    except OSError as exc:
        print(f"{out}: cannot write: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {out}: zone {settings.origin.to_text()} serial {version.serial}, action "
        f"{settings.action}, {len(version)} entries, {written.records} records"
        + (
            f"; {version.skipped.total} list entries not expressible in RPZ (URL entries)"
            if version.skipped.total
            else ""
        ),
        file=sys.stderr,
    )
    return 0


async def _follow(config, out: Path, settings, source: str) -> int:
    from resolver.rpz.export import ExportFollower

    follower = ExportFollower(config, out, settings, source=source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await follower.run(stop)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{args.output}: already exists; not overwriting a key", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.output}: cannot create: {exc}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    name = args.name if args.name.endswith(".") else args.name + "."
    print(f'key "{name}" {{ algorithm hmac-sha256; secret "{secret}"; }};')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resolver", description="Cordon's RPZ commands.")
    add_rpz_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["rpz"]:
        argv.insert(
            0, "rpz"
        )  # `python -m resolver.rpz.cli serve ...` reads as `resolver rpz serve`
    return run_rpz(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
