"""The cost of the operators' features on the mix: rate limiting, exemptions, log-only mode.

    python bench/resolver_ops.py OUT_DIR [--entries N] [--seconds S] [--rounds R]

OUT_DIR is what bench/resolver_data.py wrote (bench/resolver.sh runs this after the comparison
with Unbound). One Cordon worker answers the mix of bench/resolver_compare.py (90% cache hits over
100k names, 9% unique misses, 1% unique names below listed domains) with the configuration of
OUT_DIR/cordon.toml, then with one feature on:

  rate limiting    [ratelimit] on, a limit no client reaches: the cost of checking every datagram
  exemptions       20 exempted names, 10 of them lifting listed entries
  log-only         every would-be block forwarded and counted instead
  via dnsdist      the base behind dnsdist (reference of the next row)
  PROXY v2         dnsdist sends a PROXY v2 header with every query; Cordon trusts it and
                   checks every header (its CPU only: dnsdist's is not counted)

Variants are measured in turns (base, variant, base, variant...) on the same warm data, and the
figure is queries per CPU-second of the server (more stable than queries per second when one
dnsperf thread shares 2 cores with the server). Prints each variant's cost against the base and
writes OUT_DIR/ops.json. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resolver_compare import (
    CORDON,
    UPSTREAM,
    cordon,
    measure,
    unbound,
    wait_answer,
    warm,
    write_mix,
)
from resolver_data import listed_name

VARIANTS = ("rate limiting", "exemptions", "log-only", "via dnsdist", "PROXY v2 via dnsdist")
DNSDIST = 5303


def variant_config(base: str, name: str) -> str:
    if name == "rate limiting":
        return base + "\n[ratelimit]\nenabled = true\nrate = 1000000.0\nburst = 1000000.0\n"
    if name == "exemptions":
        names = [f"x.{listed_name(i)}" for i in range(10)]  # below listed domains: lift entries
        names += [f"own{i}.isp.example" for i in range(10)]  # not listed: nothing to lift
        listed = ", ".join(f'"{n}"' for n in names)
        return base.replace("[blocking]\n", f"[blocking]\nexempt_names = [{listed}]\n", 1)
    if name == "log-only":
        return base.replace("[blocking]\n", '[blocking]\nmode = "log-only"\n', 1)
    if name == "PROXY v2 via dnsdist":
        # dnsdist sends from 127.0.0.2; probes and dnsperf from 127.0.0.1 stay direct.
        return base + '\n[proxy]\ntrusted = ["127.0.0.2/32"]\n'
    return base


class Dnsdist:
    """dnsdist in front of Cordon (with or without PROXY v2 headers), for the proxy rows."""

    def __init__(self, out: Path, proxy: bool) -> None:
        conf = out / f"dnsdist-{int(proxy)}.conf"
        conf.write_text(
            f'setLocal("127.0.0.1:{DNSDIST}")\naddACL("127.0.0.0/8")\n'
            f'newServer({{address="127.0.0.1:{CORDON}", useProxyProtocol={str(proxy).lower()}, '
            'source="127.0.0.2", checkName="host1.cached.example."})\n'
        )
        log = (out / f"dnsdist-{int(proxy)}.log").open("w")
        self.proc = subprocess.Popen(
            ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_answer(DNSDIST, 60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated variants to run (besides the base)")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    base = (out / "cordon.toml").read_text()
    configs = {"base": "cordon.toml"}
    chosen = VARIANTS if not args.only else [v for v in VARIANTS if v in args.only.split(",")]
    for name in chosen:
        file = f"cordon-{name.replace(' ', '-')}.toml"
        (out / file).write_text(variant_config(base, name))
        configs[name] = file
    unique = max(400_000, 60_000 * args.seconds)
    upstream = unbound(out, "upstream.conf", UPSTREAM, "x.miss.example")
    results: dict[str, list[float]] = {name: [] for name in configs}
    try:
        for r in range(args.rounds):
            for name, file in configs.items():
                # Log-only answers listed names from upstream: probe with a cached name.
                server = cordon(out, file, "host1.cached.example")
                front = None
                try:
                    if "dnsdist" in name:
                        front = Dnsdist(out, name.startswith("PROXY"))
                    port = DNSDIST if front is not None else server.port
                    warm(port, out)
                    mix = write_mix(out / "q-mix-ops.txt", f"o{r}{name[0]}", unique, args.entries)
                    # Queries per CPU-second of Cordon (not of dnsdist, when in front).
                    per_cpu = measure(server, mix, args.seconds, port)["per_cpu"]
                finally:
                    if front is not None:
                        front.stop()
                    server.stop()
                results[name].append(per_cpu)
                print(
                    f"  round {r + 1} {name:<14} {per_cpu:>8.0f} queries per CPU-second", flush=True
                )
    finally:
        upstream.stop()
    base_median = statistics.median(results["base"])
    dnsdist_median = statistics.median(results.get("via dnsdist") or results["base"])
    summary = {}
    print(f"\nmix 90/9/1, one worker, C fast path; median of {args.rounds} runs (shared machine)")
    print(f"  {'variant':<16}{'q/CPU-s':>10}{'vs base':>10}")
    for name, values in results.items():
        median = statistics.median(values)
        # PROXY v2 is compared with the same path through dnsdist without headers.
        ref = dnsdist_median if name.startswith("PROXY") else base_median
        cost = 1 - median / ref
        summary[name] = {"runs": values, "median": median, "cost": cost}
        print(f"  {name:<16}{median:>10.0f}{'' if name == 'base' else f'{-cost:>+10.1%}'}")
    (out / "ops.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
