#!/usr/bin/env bash
# Cordon's resolver against Unbound with the same list, on loopback, measured with dnsperf.
#
#   bench/resolver.sh [ENTRIES] [SECONDS]      (defaults: 1000000 entries, 10 s per run)
#
# Needs the Debian packages `unbound`, `dnsperf` and `dnsdist` (PROXY v2 rows). One Cordon worker
# against one Unbound thread (then two against two), both forwarding misses to a third,
# answer-everything Unbound
# (local-zone redirect) so neither waits on the Internet. Unbound enforces the list as an RPZ
# zone of the plain names (2 records per name: the name and its wildcard); Cordon reads the
# hashed list. The rows and what each measures: bench/resolver_compare.py. Then the list swap
# under load: bench/resolver_swap.py; the cost of rate limiting, exemptions and log-only mode on
# the mix: bench/resolver_ops.py; DNS over TLS and DNS over HTTPS against Unbound's own DoT and
# DoH listeners: bench/resolver_encrypted.py. Only 127.0.0.1 is used. Output files:
# bench/out/resolver/.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${1:-1000000}
SECONDS_PER_RUN=${2:-10}
OUT=bench/out/resolver
PY=${PY:-.venv/bin/python}
for tool in unbound dnsperf dnsdist; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: apt-get install unbound dnsperf dnsdist" >&2
        exit 1
    }
done
"$PY" -c "from resolver import fastpath; print('Cordon UDP path:', 'C extension' if fastpath.available() else fastpath.UNAVAILABLE)"

if [ ! -f "$OUT/.entries-$ENTRIES" ]; then
    rm -rf "$OUT"
    "$PY" bench/resolver_data.py "$OUT" --entries "$ENTRIES" --port 5370 --upstream-port 5372 \
        --unbound-port 5371
    touch "$OUT/.entries-$ENTRIES"
fi
"$PY" bench/resolver_compare.py "$OUT" --entries "$ENTRIES" --seconds "$SECONDS_PER_RUN"
"$PY" bench/resolver_swap.py --entries "$ENTRIES" --seconds "$SECONDS_PER_RUN"
"$PY" bench/resolver_ops.py "$OUT" --entries "$ENTRIES" --seconds "$SECONDS_PER_RUN"
"$PY" bench/resolver_encrypted.py "$OUT" --entries "$ENTRIES" --seconds "$SECONDS_PER_RUN"
