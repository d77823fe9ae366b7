"""`resolver`: the ASP's commands — follow the list (`sync`), answer DNS (`serve`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from blocklist.config import ConfigError, load_config, validate_config
from blocklist.logs import setup_logging
from blocklist.sync.follower import RELEASE_FILE, STATUS_FILE, Follower
from resolver.config import ResolverConfig
from resolver.rpz.cli import add_rpz_commands, run_rpz


def _iso(ts: int | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def print_status(status: dict) -> None:
    print(f"list        {status['list_id']} ({status['edition']} edition)")
    print(f"instance    {status['instance']}")
    if status["serial"] is None:
        print("serial      none: no verified list yet")
    else:
        print(f"serial      {status['serial']}  ({status['entries']} entries)")
        print(f"checksum    {status['checksum']}")
        print(f"verified    {_iso(status['verified_at'])}  ({status['age_seconds']} s ago)")
        print(f"expires     {_iso(status['expires'])}")
    held = status.get("held")
    held_text = "none" if not held else f"serial {held['serial']}: {held['message']}"
    print(f"held        {held_text}")
    alarms = status.get("alarms") or {}
    print(f"alarms      {'none' if not alarms else '; '.join(alarms.values())}")
    err = status.get("last_error")
    err_text = "none" if not err else f"{_iso(err['time'])} {err['kind']}: {err['message']}"
    print(f"last error  {err_text}")


def cmd_sync(args: argparse.Namespace, config: ResolverConfig) -> int:
    state_dir = config.sync.state_dir
    if args.status:
        try:
            status = json.loads((state_dir / STATUS_FILE).read_text())
        except FileNotFoundError:
            print(f"no status yet in {state_dir}: has `resolver sync` run?", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print_status(status)
        # Monitoring runs this: an alarm or a held update is not "fine".
        return 3 if status.get("alarms") or status.get("held") else 0
    if args.release_held:
        try:
            held = json.loads((state_dir / STATUS_FILE).read_text()).get("held")
        except FileNotFoundError:
            held = None
        if not held:
            print("no held update to release", file=sys.stderr)
            return 1
        (state_dir / RELEASE_FILE).write_text(held["checksum"] + "\n")
        print(
            f"serial {held['serial']} will be applied at the next update despite: {held['message']}"
        )
        return 0
    setup_logging(args.log_level)
    return asyncio.run(_run_sync(config, once=args.once))


async def _run_sync(config: ResolverConfig, once: bool) -> int:
    from resolver import ackreport

    follower = Follower(config)
    log_only = ackreport.install(follower, config)
    refresher = None
    try:
        if log_only is not None:
            await log_only.refresh()  # the first ack already carries the counts
            if not once:
                refresher = asyncio.create_task(log_only.run())
        await follower.load()
        if once:
            try:
                outcome = await follower.poll_once(0)
            except Exception as exc:
                print(f"sync failed: {exc}", file=sys.stderr)
                return 1
            await follower.flush_acks(5)
            serial = follower.current.serial if follower.current else "-"
            print(f"{outcome.result.value}: serial {serial}")
            return 3 if outcome.hold else 0
        runner = None
        if config.sync.metrics_port:
            runner = await follower.serve_metrics(config.sync.metrics_port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, follower.stop)  # finish the step in hand, then exit
        try:
            await follower.run()
        finally:
            if runner is not None:
                await runner.cleanup()
        return 0
    finally:
        await ackreport.stop(refresher)
        await follower.close()


def apply_serve_flags(args: argparse.Namespace, config: ResolverConfig) -> ResolverConfig:
    """The configuration with the command-line overrides of `serve` applied (and validated)."""
    data = config.model_dump()
    server, upstream, metrics = data["server"], data["upstream"], data["metrics"]
    if args.listen:
        server["listen"] = [a for item in args.listen for a in item.split(",") if a]
    if args.port is not None:
        server["port"] = args.port
    if args.workers is not None:
        server["workers"] = args.workers
    if args.upstream:
        upstream["servers"] = [a for item in args.upstream for a in item.split(",") if a]
    if args.metrics_port is not None:
        metrics["port"] = args.metrics_port
    config = validate_config(data, ResolverConfig, "command line")
    if not config.upstream.servers:
        raise ConfigError(
            f"{args.config}: upstream.servers: set at least one recursive resolver "
            "(or pass --upstream)"
        )
    return config


def cmd_serve(args: argparse.Namespace, config: ResolverConfig) -> int:
    from resolver.supervisor import serve

    try:
        config = apply_serve_flags(args, config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(args.log_level)

    def reread() -> ResolverConfig:  # on SIGHUP: the file again, with the same flags
        return apply_serve_flags(args, load_config(args.config, ResolverConfig))

    try:
        return serve(config, args.log_level, reread)
    except OSError as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1


def _control_base(args: argparse.Namespace, config: ResolverConfig) -> str | None:
    from resolver.control import base_url

    if args.url:
        return args.url.rstrip("/")
    m = config.metrics
    if not m.enabled or not m.port:
        print(
            f"{args.config}: the control endpoint is served on the metrics port: set "
            "metrics.enabled and metrics.port (or pass --url)",
            file=sys.stderr,
        )
        return None
    return base_url(m.listen, m.port)


def cmd_control(args: argparse.Namespace, config: ResolverConfig) -> int:
    """`resolver check NAME` and `resolver status`: one GET to the control endpoint."""
    from resolver import control

    base = _control_base(args, config)
    if base is None:
        return 2
    if args.command == "check":
        url, show = control.check_url(base, args.name), control.print_check
    else:
        url, show = control.status_url(base), control.print_status
    try:
        answer = control.get_json(url)
    except control.ControlError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        show(answer)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resolver", description="Cordon's ASP-side commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    sync = sub.add_parser(
        "sync",
        help="follow the authority's list: verify, apply, persist, ack",
        description="Follow the authority's signed list (long-poll), keep the last verified "
        "list on disk, apply safety rails, and ack each applied serial.",
    )
    sync.add_argument("--config", type=Path, required=True, help="resolver.toml")
    sync.add_argument("--once", action="store_true", help="one update pass, then exit")
    sync.add_argument(
        "--status",
        action="store_true",
        help="print the follower's status; exit 3 while an alarm is raised or an update is held",
    )
    sync.add_argument(
        "--release-held",
        action="store_true",
        help="accept the update the rails are holding, at the next pass",
    )
    sync.add_argument("--json", action="store_true", help="machine-readable --status")
    sync.add_argument("--log-level", default="info", help="log level (JSON logs on stderr)")
    serve = sub.add_parser(
        "serve",
        help="answer DNS: block listed names, forward the rest",
        description="Answer DNS on UDP and TCP for the clients in the ACL: listed names get the "
        "stop page, everything else is forwarded to the upstream resolvers and cached. Reads the "
        "list that `resolver sync` keeps in sync.state_dir.",
    )
    serve.add_argument("--config", type=Path, required=True, help="resolver.toml")
    serve.add_argument(
        "--listen", action="append", help="address to bind (repeat or comma-separate)"
    )
    serve.add_argument("--port", type=int, help="DNS port (server.port)")
    serve.add_argument(
        "--upstream", action="append", help="upstream resolver addr[:port] (repeatable)"
    )
    serve.add_argument("--workers", type=int, help="worker processes (server.workers)")
    serve.add_argument("--metrics-port", type=int, help="metrics and /healthz port")
    serve.add_argument("--log-level", default="info", help="log level (JSON logs on stderr)")
    check = sub.add_parser(
        "check",
        help="is NAME blocked, by which entry and serial, or why not",
        description="Ask the running `resolver serve` (its loopback control endpoint on the "
        "metrics port) whether NAME is blocked by the list in force, by which entry and serial, "
        "or why not: not listed, exempted locally, protected, log-only mode, no list.",
    )
    check.add_argument("name", help="the name to check, e.g. www.example.test")
    status = sub.add_parser(
        "status",
        help="list age, alarms, mode, exemptions, cache and upstream health",
        description="Ask the running `resolver serve` for its state: list serial and age, "
        "alarms and held updates, mode, exemptions in use, log-only counts, cache and upstreams.",
    )
    for p in (check, status):
        p.add_argument("--config", type=Path, required=True, help="resolver.toml")
        p.add_argument("--url", help="control endpoint (default: http://metrics.listen:port)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
    add_rpz_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "rpz":
        return run_rpz(args)  # reads its own [rpz] configuration
    try:
        config = load_config(args.config, ResolverConfig)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "sync":
        return cmd_sync(args, config)
    if args.command == "serve":
        return cmd_serve(args, config)
    if args.command in ("check", "status"):
        return cmd_control(args, config)
    return 2


if __name__ == "__main__":
    sys.exit(main())
