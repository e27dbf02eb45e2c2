#!/usr/bin/env bash
# The cost of `cross_slot = "emulate"`: SUNIONSTORE of two 1,000-member sets whose keys are on
# three different masters (the proxy copies both sources to the destination's node, runs the
# command there and deletes the copies), against the same command on keys of one slot, through
# the proxy (forwarded whole) and straight to the node.
#
# Run by hand; never part of the test suite. It starts `slotproxy demo` (a local
# 3-master/3-replica cluster plus the proxy) with cross_slot = "emulate", runs redis-benchmark
# three times, prints requests per second and average latency, and stops the demo.
#
# Environment:
#   BENCH_REQUESTS    requests per run (default 2000)
#   BENCH_CLIENTS     redis-benchmark clients (default 10)
#   BENCH_PORT        the proxy's port on 127.0.0.1 (default 7729)
#   CARGO_TARGET_DIR  where to find (or build) release/slotproxy (default ./target)
set -euo pipefail

REQUESTS=${BENCH_REQUESTS:-2000}
CLIENTS=${BENCH_CLIENTS:-10}
PORT=${BENCH_PORT:-7729}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$PWD/$target
bin=$target/release/slotproxy
if [[ ! -x $bin ]]; then
    (cd "$root" && CARGO_TARGET_DIR=$target cargo build --release)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/slotproxy-xslot.XXXXXX")
demo_pid=
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -INT "$demo_pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$demo_pid" 2>/dev/null || break
            sleep 0.1
        done
        wait "$demo_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

printf 'cross_slot = "emulate"\n' >"$work/extra.toml"
"$bin" demo --listen "127.0.0.1:$PORT" --workers 1 --metrics-listen "" \
    --config "$work/extra.toml" >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for ((i = 0; i < 600; i++)); do
    grep -q '^slotproxy demo ready' "$work/demo.out" && break
    kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.err" >&2; exit 1; }
    sleep 0.1
done
grep -q '^slotproxy demo ready' "$work/demo.out" || { echo "demo not ready" >&2; exit 1; }

cli() { redis-cli -p "$PORT" "$@"; }
# {a}, {b} and {c} hash to slots 15495, 3300 and 7365: one on each master of the demo.
fill() {
    local key=$1 from=$2 args=() n
    for ((n = from; n < from + 1000; n++)); do args+=("m$n"); done
    cli DEL "$key" >/dev/null
    cli SADD "$key" "${args[@]}" >/dev/null
}
fill '{a}one' 0
fill '{c}two' 500
fill '{a}two' 500

# The master that serves {a}'s slot, for the direct run.
direct=
while read -r role addr _; do
    [[ $role == master ]] || continue
    if [[ $(redis-cli -h "${addr%:*}" -p "${addr#*:}" EXISTS '{a}one') == 1 ]]; then
        direct=$addr
    fi
done < <(grep -E '^ +master +[0-9.]+:[0-9]+' "$work/demo.out")
[[ -n $direct ]] || { echo "no master answers for {a}" >&2; exit 1; }

run() {
    local label=$1 host=$2 port=$3
    shift 3
    local out
    out=$(redis-benchmark -h "$host" -p "$port" -n "$REQUESTS" -c "$CLIENTS" -q "$@" 2>&1 | tr '\r' '\n' | grep -E 'requests per second' | tail -n 1)
    printf '%-44s %s\n' "$label" "$out"
}

echo "SUNIONSTORE of two 1,000-member sets (union: 1,500 members), $REQUESTS requests, $CLIENTS clients"
run "one slot, straight to the node" "${direct%:*}" "${direct#*:}" SUNIONSTORE '{a}dst' '{a}one' '{a}two'
run "one slot, through the proxy" 127.0.0.1 "$PORT" SUNIONSTORE '{a}dst' '{a}one' '{a}two'
run "three masters, emulated by the proxy" 127.0.0.1 "$PORT" SUNIONSTORE '{b}dst' '{a}one' '{c}two'
if [[ $(cli SCARD '{b}dst') != 1500 ]]; then
    echo "unexpected union size: $(cli SCARD '{b}dst')" >&2
    exit 1
fi
