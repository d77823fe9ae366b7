#!/usr/bin/env bash
# Cordon's resolver against Unbound with the same list, on loopback, measured with dnsperf.
#
#   bench/resolver.sh [ENTRIES] [SECONDS]      (defaults: 1000000 entries, 10 s per run)
#
# Needs the Debian packages `unbound` and `dnsperf` (and `dnsutils` for dig). Both resolvers
# run one thread/worker and forward misses to a third, answer-everything Unbound (local-zone
# redirect) so neither waits on the Internet. Unbound enforces the list as an RPZ zone of the
# plain names (2 records per name: the name and its wildcard); Cordon reads the hashed list.
# Prints queries per second for blocked names, cache hits and cache misses, resident memory
# after loading, and the time from start to the first answer, with Cordon/Unbound ratios.
# Only 127.0.0.1 is used. Output files: bench/out/resolver/.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${1:-1000000}
SECONDS_PER_RUN=${2:-10}
OUT=bench/out/resolver
PY=${PY:-.venv/bin/python}
PORT=5300 # Cordon; Unbound+RPZ on 5301; upstream on 5302; Cordon metrics on 5310
for tool in unbound dnsperf dig; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: apt-get install unbound dnsperf dnsutils" >&2
        exit 1
    }
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ ! -f "$OUT/.entries-$ENTRIES" ]; then
    rm -rf "$OUT"
    "$PY" bench/resolver_data.py "$OUT" --entries "$ENTRIES" --port "$PORT" --upstream-port 5302 \
        --unbound-port 5301
    touch "$OUT/.entries-$ENTRIES"
fi
OUT=$(cd "$OUT" && pwd)

wait_answer() { # port name timeout-seconds -> seconds waited
    local start=$(date +%s.%N) deadline=$(($(date +%s) + $3))
    until dig +time=1 +tries=1 -p "$1" @127.0.0.1 "$2" A 2>/dev/null | grep -q "status: NOERROR"; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "no answer on port $1" >&2; exit 1; }
        sleep 0.1
    done
    echo "$(date +%s.%N) - $start" | bc
}
rss_mb() { echo $(($(awk '/VmRSS/ {print $2}' "/proc/$1/status") / 1024)); }
qps() { # port queryfile
    dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$SECONDS_PER_RUN" -c 4 -T 1 -q 200 2>&1 |
        awk '/Queries per second/ {printf "%d", $4} /Queries lost/ {lost=$3} END {printf " (lost %s)", lost}'
}

unbound -d -c "$OUT/upstream.conf" >"$OUT/upstream.log" 2>&1 &
pids+=($!)
wait_answer 5302 x.miss.example 30 >/dev/null

unbound -d -c "$OUT/unbound.conf" >"$OUT/unbound.log" 2>&1 &
UNBOUND=$!
pids+=($UNBOUND)
unbound_start=$(wait_answer 5301 www.site1.blocked.example 600)
unbound_rss=$(rss_mb $UNBOUND)

"$PY" -m resolver.cli serve --config "$OUT/cordon.toml" --log-level warning >"$OUT/cordon.log" 2>&1 &
CORDON=$!
pids+=($CORDON)
cordon_start=$(wait_answer $PORT www.site1.blocked.example 600)
cordon_rss=$(rss_mb $CORDON)

dig -p $PORT @127.0.0.1 www.site1.blocked.example A | grep -q "192.0.2.80" || {
    echo "Cordon does not block" >&2
    exit 1
}
dig -p 5301 @127.0.0.1 www.site1.blocked.example A | grep -q "192.0.2.80" || {
    echo "Unbound does not block" >&2
    exit 1
}

# Warm both caches with the cached-name set before measuring hits.
for p in $PORT 5301; do
    dnsperf -s 127.0.0.1 -p "$p" -d "$OUT/q-cached.txt" -l 2 -q 50 >/dev/null 2>&1 || true
done

declare -A R
for kind in blocked cached miss; do
    file="$OUT/q-$kind.txt"
    [ "$kind" != miss ] || split -n l/2 -d "$file" "$OUT/q-miss-part" # fresh names for each
    R[cordon_$kind]=$(qps $PORT "${file/q-miss.txt/q-miss-part00}")
    R[unbound_$kind]=$(qps 5301 "${file/q-miss.txt/q-miss-part01}")
done
cordon_rss_after=$(rss_mb $CORDON)
unbound_rss_after=$(rss_mb $UNBOUND)

ratio() { echo "scale=2; ${1%% *} / ${2%% *}" | bc; }
echo
echo "Resolver benchmark: $ENTRIES listed names, one worker/thread each, dnsperf -c 4 -q 200, ${SECONDS_PER_RUN}s per run"
printf "%-22s %22s %22s %8s\n" "" "Cordon" "Unbound (RPZ)" "ratio"
for kind in blocked cached miss; do
    printf "%-22s %22s %22s %8s\n" "$kind qps" "${R[cordon_$kind]}" "${R[unbound_$kind]}" \
        "$(ratio "${R[cordon_$kind]}" "${R[unbound_$kind]}")"
done
printf "%-22s %22s %22s %8s\n" "RSS after load (MB)" "$cordon_rss" "$unbound_rss" "$(ratio "$cordon_rss" "$unbound_rss")"
printf "%-22s %22s %22s %8s\n" "RSS after runs (MB)" "$cordon_rss_after" "$unbound_rss_after" \
    "$(ratio "$cordon_rss_after" "$unbound_rss_after")"
printf "%-22s %22.1f %22.1f %8s\n" "start to answer (s)" "$cordon_start" "$unbound_start" \
    "$(ratio "$cordon_start" "$unbound_start")"
curl -s "http://127.0.0.1:$((PORT + 10))/metrics" 2>/dev/null | grep -E "^cordon_resolver_list_swap_seconds" || true
