#!/usr/bin/env bash
# Scale-out rebalancing: slotproxy's `PROXY REBALANCE SLOTS` vs. `redis-cli --cluster rebalance`.
#
# Run by hand; never part of the test suite. For every ADD in BENCH_ADD and for each tool, on a
# fresh, identical setup in the same run, it measures how long the tool takes to spread the slots
# (and their keys) of a loaded 3-master cluster evenly over 3 + ADD masters, and the latency
# clients see through the proxy while it does.
#
# One setup (nothing here is timed):
#   - 3 * (1 + BENCH_REPLICAS) redis-server processes on the loopback "hosts" 127.0.0.2-4 and
#     ADD empty ones on new hosts 127.0.0.5, 127.0.0.6, ..., all with the node settings of
#     benches/create.sh (cluster-node-timeout 5000, no persistence, the localcluster extras);
#   - `redis-cli --cluster create <the first ones> --cluster-replicas R --cluster-yes`, then the
#     wait until every node says cluster_state:ok;
#   - `slotproxy --listen 127.0.0.1:BENCH_PROXY_PORT --seeds <every original node>`;
#   - BENCH_KEYS keys `key:%012d` (0 .. BENCH_KEYS-1: the keys redis-benchmark's `-r BENCH_KEYS`
#     draws from) with BENCH_VALUE_SIZE-byte values, written through the proxy by
#     `redis-cli --pipe` from awk-generated RESP; the masters' DBSIZE must add up to BENCH_KEYS;
#   - `redis-cli --cluster add-node <new> <seed>` for each new node, one at a time, each followed
#     by the wait until every node lists every node (none in handshake, fail or noaddr), every
#     node has the same slot map (node ID + slots of every master: what redis-cli compares
#     before it moves anything) and says cluster_state:ok;
#   - one redis-benchmark run on the idle cluster (the "idle p99" column).
#
# Then the load starts: a loop of `redis-benchmark -p PROXY -t get,set -r BENCH_KEYS
# -d BENCH_VALUE_SIZE -c BENCH_CLIENTS -n BENCH_LOAD_REQUESTS --csv` through the proxy, run after
# run, until the move has returned (the run in flight then finishes and counts). Each run gives
# two p99 samples (its SET test and its GET test). SETs only overwrite keys that exist, so the key
# count stays BENCH_KEYS.
#
# Timed: from sending the command until it returns, and nothing else:
#   slotproxy  `redis-cli -p PROXY PROXY REBALANCE SLOTS` (+ BENCH_SLOTPROXY_ARGS); the engine
#              surveys, plans, takes the cluster lease and moves the slots, PARALLEL (default 8) at
#              once; it must answer
#              `OK moved ...`
#   redis-cli  `redis-cli --cluster rebalance <seed> --cluster-use-empty-masters`
#              (+ BENCH_CLI_ARGS); it must exit 0
# Both run with their defaults (threshold 2%; slotproxy MIGRATEs 100 keys per command, 4 in
# flight; redis-cli 10 keys per command, one at a time) unless the knobs say otherwise.
#
# Checked after the move (not timed); a failure is printed loudly, marks the row and makes the
# script exit 1: no node has an importing/migrating slot, every master owns slots, the masters
# own 16384 slots together, and the masters' DBSIZE still adds up to BENCH_KEYS (a key lost).
#
# Columns: seconds (the timed part), slots and keys on the new masters afterwards (keys via
# DBSIZE: the keys moved), keys/s = keys / seconds, p99 idle (ms), p99 during the move (max and
# median over the samples, ms), samples, client errors during the move (lines "Error from server"
# the load printed, and load runs that exited non-zero; redis-benchmark prints at most one error a
# second, so this counts seconds with an error), and for the slotproxy row the ratio of its keys/s
# to redis-cli's for the same ADD. "p99 idle" is the larger of the idle run's SET and GET p99.
#
# Environment:
#   BENCH_ADD             numbers of empty masters to add, one setup pair each (default "1 3")
#   BENCH_KEYS            keys loaded before the move (default 200000)
#   BENCH_VALUE_SIZE      bytes per value (default 100)
#   BENCH_REPLICAS        replicas per original master (default 0; new masters get none)
#   BENCH_CLIENTS         redis-benchmark clients of the load (default 20)
#   BENCH_LOAD_REQUESTS   requests per test of one load run (default 20000)
#   BENCH_LOAD            0: no load during the move (the p99 columns stay empty), to see the
#                         tools' own speed; default 1
#   BENCH_TOOLS           which tools, in order (default "slotproxy redis-cli")
#   BENCH_SLOTPROXY_ARGS  extra words for PROXY REBALANCE SLOTS, e.g. "BATCH 200 PIPELINE 8"
#   BENCH_CLI_ARGS        extra words for redis-cli --cluster rebalance, e.g.
#                         "--cluster-pipeline 100"
#   BENCH_WORKERS         slotproxy --workers (default: the proxy's default, one per core)
#   BENCH_PORT_BASE       client port of every node; bus ports are +10000 (default 6600).
#                         Below the kernel's ephemeral range and the test harness's 20000-55000
#   BENCH_PROXY_PORT      the proxy's port on 127.0.0.1 (default 7723)
#   BENCH_TIMEOUT         seconds before a move (or a wait) is given up (default 1800)
#   BENCH_KEEP            1: keep the work directory (every node's log and INFO commandstats
#                         after the move, the proxy's log, each move's output, slotproxy's
#                         PROXY JOB, the load's CSV files)
#   CARGO_TARGET_DIR      where to find (or build) release/slotproxy (default ./target)

set -euo pipefail
shopt -s nullglob

ADDS=${BENCH_ADD:-"1 3"}
KEYS=${BENCH_KEYS:-200000}
VALUE_SIZE=${BENCH_VALUE_SIZE:-100}
REPLICAS=${BENCH_REPLICAS:-0}
CLIENTS=${BENCH_CLIENTS:-20}
LOAD_REQUESTS=${BENCH_LOAD_REQUESTS:-20000}
TOOLS=${BENCH_TOOLS:-"slotproxy redis-cli"}
LOAD=${BENCH_LOAD:-1}
KEEP=${BENCH_KEEP:-0}
SLOTPROXY_ARGS=${BENCH_SLOTPROXY_ARGS:-}
CLI_ARGS=${BENCH_CLI_ARGS:-}
WORKERS=${BENCH_WORKERS:-}
PORT_BASE=${BENCH_PORT_BASE:-6600}
PROXY_PORT=${BENCH_PROXY_PORT:-7723}
TIMEOUT=${BENCH_TIMEOUT:-1800}
MASTERS=3
ORIGINAL_HOSTS=(127.0.0.2 127.0.0.3 127.0.0.4)
NODE_TIMEOUT_MS=5000

for tool in redis-server redis-cli redis-benchmark timeout awk sort; do
    command -v "$tool" >/dev/null || { echo "scale.sh: $tool is not on PATH" >&2; exit 1; }
done
die() {
    echo "scale.sh: $*" >&2
    exit 1
}
[[ $KEYS =~ ^[1-9][0-9]*$ ]] || die "BENCH_KEYS must be a positive integer"
[[ $VALUE_SIZE =~ ^[1-9][0-9]*$ ]] || die "BENCH_VALUE_SIZE must be a positive integer"
[[ $REPLICAS =~ ^[0-9]+$ ]] || die "BENCH_REPLICAS must be an integer"
for add in $ADDS; do
    [[ $add =~ ^[1-9][0-9]?$ ]] || die "BENCH_ADD: $add is not a number from 1 to 99"
done
for tool in $TOOLS; do
    [[ $tool == slotproxy || $tool == redis-cli ]] || die "BENCH_TOOLS: unknown tool $tool"
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
# Cargo resolves a relative CARGO_TARGET_DIR against the working directory.
[[ $target == /* ]] || target=$PWD/$target
bin=$target/release/slotproxy
if [[ ! -x $bin ]]; then
    echo "building $bin" >&2
    (cd "$root" && CARGO_TARGET_DIR=$target cargo build --release --bin slotproxy)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/slotproxy-scale-bench.XXXXXX")
node_pids=()
proxy_pid=
loop_pid=
loop_dir=

# Stops the load loop, then the redis-benchmark run it has in flight (its PID is in a file the
# loop writes before it waits for the run).
stop_load() {
    local pid
    if [[ -n $loop_pid ]]; then
        kill -9 "$loop_pid" 2>/dev/null || true
        wait "$loop_pid" 2>/dev/null || true
        loop_pid=
    fi
    if [[ -n $loop_dir && -f $loop_dir/bench.pid ]]; then
        pid=$(cat "$loop_dir/bench.pid")
        [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
        rm -f "$loop_dir/bench.pid"
    fi
}

stop_proxy() {
    if [[ -n $proxy_pid ]]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
        proxy_pid=
    fi
}

# Kills every node this script started, by PID, and reaps it.
stop_nodes() {
    local pid
    for pid in "${node_pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
    done
    for pid in "${node_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    node_pids=()
}

stop_all() {
    stop_load
    stop_proxy
    stop_nodes
}

cleanup() {
    stop_all
    if [[ $KEEP == 1 ]]; then
        echo "scale.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() {
    echo "$EPOCHREALTIME"
}

# nodes_cpu -> CPU seconds (user + system) the running nodes used since they started, from
# /proc/PID/stat (fields 14 and 15, in clock ticks; the comm field has no spaces here).
nodes_cpu() {
    local pid hz total=0
    hz=$(getconf CLK_TCK)
    for pid in "${node_pids[@]}"; do
        [[ -r /proc/$pid/stat ]] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    awk -v t="$total" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'
}

# elapsed START END -> seconds with 2 decimals
elapsed() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'
}

# cli ADDR ARGS...: redis-cli against one node.
cli() {
    local addr=$1
    shift
    redis-cli -h "${addr%:*}" -p "${addr##*:}" "$@"
}

# The original nodes (masters and their replicas), round-robin over the three original hosts.
original_nodes() {
    local n=$((MASTERS * (1 + REPLICAS))) i
    for ((i = 0; i < n; i++)); do
        echo "${ORIGINAL_HOSTS[i % 3]}:$((PORT_BASE + i / 3))"
    done
}

# The ADD new nodes, each on a host of its own.
new_nodes() {
    local i
    for ((i = 0; i < $1; i++)); do
        echo "127.0.0.$((5 + i)):$PORT_BASE"
    done
}

# Fails if anything already listens on a node's client or bus port.
check_ports_free() {
    local addr ip port p
    for addr in "$@"; do
        ip=${addr%:*}
        port=${addr##*:}
        for p in "$port" $((port + 10000)); do
            if (exec 3<>"/dev/tcp/$ip/$p") 2>/dev/null; then
                die "$ip:$p is in use; set BENCH_PORT_BASE to a free range"
            fi
        done
    done
    if (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null; then
        die "127.0.0.1:$PROXY_PORT is in use; set BENCH_PROXY_PORT"
    fi
}

# A node's redis.conf: benches/create.sh's settings for an empty node.
node_conf() {
    local ip=$1 port=$2 dir=$3
    printf 'port %s\nbind %s\nbind-source-addr %s\ncluster-enabled yes\n' "$port" "$ip" "$ip"
    printf 'cluster-config-file nodes.conf\ncluster-node-timeout %s\n' "$NODE_TIMEOUT_MS"
    printf 'appendonly no\nsave ""\n'
    printf 'dir "%s"\nlogfile "%s/redis.log"\npidfile "%s/redis.pid"\ndaemonize no\n' \
        "$dir" "$dir" "$dir"
    printf 'repl-diskless-sync-delay 0\nprotected-mode no\n'
}

# start_nodes BASE ADDR...: writes each node's config under BASE and starts it.
start_nodes() {
    local base=$1 addr ip port dir
    shift
    for addr in "$@"; do
        ip=${addr%:*}
        port=${addr##*:}
        dir=$base/$ip-$port
        mkdir -p "$dir"
        node_conf "$ip" "$port" "$dir" >"$dir/redis.conf"
        (cd "$dir" && exec redis-server "$dir/redis.conf" >"$dir/stdout.log" 2>&1) &
        node_pids+=("$!")
    done
}

# Waits until every node answers PING.
wait_ping() {
    local deadline=$((SECONDS + 30)) addr pending
    local -a rest=("$@")
    while ((${#rest[@]} > 0)); do
        pending=()
        for addr in "${rest[@]}"; do
            [[ $(cli "$addr" PING 2>/dev/null) == PONG ]] || pending+=("$addr")
        done
        rest=("${pending[@]}")
        ((${#rest[@]} == 0)) && return 0
        ((SECONDS < deadline)) || die "nodes never answered PING: ${rest[*]}"
        sleep 0.05
    done
}

# What one node says of the cluster, as one line: "<nodes listed> <bad flags> <state>
# <slot map>", the slot map being every master's ID and slots (as redis-cli's config signature).
node_view() {
    local nodes info
    nodes=$(cli "$1" CLUSTER NODES 2>/dev/null) || return 1
    info=$(cli "$1" CLUSTER INFO 2>/dev/null) || return 1
    awk -v state="$(echo "$info" | tr -d '\r' | awk -F: '/^cluster_state:/ { print $2 }')" '
    NF >= 8 {
        n++
        if ($3 ~ /handshake|fail|noaddr/) bad++
        if ($3 ~ /master/) {
            s = $1
            for (i = 9; i <= NF; i++) s = s "," $i
            sig[++m] = s
        }
    }
    END {
        # A stable order for the signature.
        for (i = 1; i <= m; i++)
            for (j = i + 1; j <= m; j++)
                if (sig[j] < sig[i]) { t = sig[i]; sig[i] = sig[j]; sig[j] = t }
        out = ""
        for (i = 1; i <= m; i++) out = out sig[i] ";"
        printf "%d %d %s %s\n", n, bad + 0, state, out
    }' <<<"$nodes"
}

# Waits until every node lists all of them, none flagged bad, all ok, all with one slot map.
wait_agree() {
    local deadline=$((SECONDS + TIMEOUT)) addr view= first ok n bad state sig
    local total=$#
    while true; do
        ok=1
        first=
        for addr in "$@"; do
            view=$(node_view "$addr") || { ok=0; break; }
            read -r n bad state sig <<<"$view"
            if ((n != total || bad != 0)) || [[ $state != ok ]]; then
                ok=0
                break
            fi
            if [[ -z $first ]]; then
                first=$sig
            elif [[ $sig != "$first" ]]; then
                ok=0
                break
            fi
        done
        ((ok)) && return 0
        ((SECONDS < deadline)) || die "the nodes did not agree within ${TIMEOUT}s (last: $addr: $view)"
        sleep 0.1
    done
}

# The masters among the given nodes, per what the first one says.
masters_of() {
    cli "$1" CLUSTER NODES | awk '$3 ~ /master/ { split($2, a, "@"); print a[1] }' | sort
}

# The number of slots a node owns, per its own line.
own_slots() {
    cli "$1" CLUSTER NODES | awk '
    $3 ~ /myself/ {
        for (i = 9; i <= NF; i++) {
            if ($i ~ /^\[/) continue
            n = split($i, r, "-")
            slots += (n == 2 ? r[2] - r[1] + 1 : 1)
        }
    }
    END { print slots + 0 }'
}

# The number of slots a node has open (importing or migrating), per its own line.
open_slots() {
    cli "$1" CLUSTER NODES | awk '$3 ~ /myself/ { for (i = 9; i <= NF; i++) if ($i ~ /^\[/) n++ }
    END { print n + 0 }'
}

dbsize_sum() {
    local sum=0 addr n
    for addr in "$@"; do
        n=$(cli "$addr" DBSIZE) || return 1
        sum=$((sum + n))
    done
    echo "$sum"
}

wait_proxy() {
    local deadline=$((SECONDS + 20))
    until [[ $(redis-cli -p "$PROXY_PORT" PING 2>/dev/null) == PONG ]]; do
        kill -0 "$proxy_pid" 2>/dev/null || die "the proxy exited; log: $(cat "$1")"
        ((SECONDS < deadline)) || die "the proxy did not answer PING"
        sleep 0.05
    done
}

# Writes the keys through the proxy.
load_keys() {
    local out=$1
    awk -v n="$KEYS" -v size="$VALUE_SIZE" 'BEGIN {
        v = sprintf("%" size "s", "")
        gsub(/ /, "x", v)
        for (i = 0; i < n; i++) {
            k = sprintf("key:%012d", i)
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, size, v
        }
    }' | redis-cli -p "$PROXY_PORT" --pipe >"$out" 2>&1 || true
    # redis-cli prints each error reply, then "errors: E, replies: R".
    grep -q "^errors: 0, replies: $KEYS\$" "$out" ||
        die "loading keys through the proxy failed: $(grep '^errors:' "$out"); replies:
$(grep -v -e '^All data transferred' -e '^Last reply received' -e '^errors:' "$out" | head -5)"
}

# One load run into FILE; its PID goes to DIR/bench.pid so stop_load can end it.
bench_run() {
    local dir=$1 file=$2
    redis-benchmark -p "$PROXY_PORT" -t get,set -r "$KEYS" -d "$VALUE_SIZE" -c "$CLIENTS" \
        -n "$LOAD_REQUESTS" --csv >"$file" 2>&1 &
    echo "$!" >"$dir/bench.pid"
    wait "$!" || echo "redis-benchmark exited with $?" >>"$file"
    : >"$dir/bench.pid"
}

# The load loop: runs until DIR/stop exists.
load_loop() {
    local dir=$1 i=0
    while [[ ! -e $dir/stop ]]; do
        i=$((i + 1))
        bench_run "$dir" "$dir/run-$i.csv"
    done
}

# p99 samples (ms), one a line, from redis-benchmark CSV files.
p99s() {
    awk -F, '/^"(SET|GET)"/ { gsub(/"/, "", $7); print $7 }'
}

# "<max> <median> <samples>" of numbers on stdin ("- - 0" when none).
max_median() {
    sort -g | awk '{ v[++n] = $1 }
    END {
        if (n == 0) { print "- - 0"; exit }
        med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "%.2f %.2f %d\n", v[n], med, n
    }'
}

# run_one ADD TOOL: one fresh setup, one timed move; appends a row to ROWS, sets FAILED.
run_one() {
    local add=$1 tool=$2 base=$work/$2-$1 t0 t1 secs out status=ok addr r
    local -a originals fresh all masters
    mapfile -t originals < <(original_nodes)
    mapfile -t fresh < <(new_nodes "$add")
    all=("${originals[@]}" "${fresh[@]}")
    check_ports_free "${all[@]}"
    mkdir -p "$base"

    echo "ADD=$add $tool: starting $((${#all[@]})) nodes, creating the cluster ..." >&2
    start_nodes "$base" "${all[@]}"
    wait_ping "${all[@]}"
    out=$base/create.out
    timeout "$TIMEOUT" redis-cli --cluster create "${originals[@]}" \
        --cluster-replicas "$REPLICAS" --cluster-yes >"$out" 2>&1 ||
        die "redis-cli --cluster create failed: $(tail -5 "$out")"
    wait_agree "${originals[@]}"

    local seeds
    seeds=$(IFS=,; echo "${originals[*]}")
    local -a pargs=(--listen "127.0.0.1:$PROXY_PORT" --seeds "$seeds" --log-level warn
        --metrics-listen "")
    [[ -n $WORKERS ]] && pargs+=(--workers "$WORKERS")
    "$bin" "${pargs[@]}" >"$base/proxy.log" 2>&1 &
    proxy_pid=$!
    wait_proxy "$base/proxy.log"

    echo "ADD=$add $tool: loading $KEYS keys through the proxy ..." >&2
    load_keys "$base/load.out"
    mapfile -t masters < <(masters_of "${originals[0]}")
    ((${#masters[@]} == MASTERS)) || die "expected $MASTERS masters, found: ${masters[*]}"
    r=$(dbsize_sum "${masters[@]}")
    ((r == KEYS)) || die "after loading, the masters hold $r keys, not $KEYS"

    echo "ADD=$add $tool: adding $add empty master(s) ..." >&2
    local joined=("${originals[@]}")
    for addr in "${fresh[@]}"; do
        timeout "$TIMEOUT" redis-cli --cluster add-node "$addr" "${originals[0]}" \
            >"$base/add-$addr.out" 2>&1 ||
            die "redis-cli --cluster add-node $addr failed: $(tail -5 "$base/add-$addr.out")"
        joined+=("$addr")
        wait_agree "${joined[@]}"
    done
    masters+=("${fresh[@]}")

    # The idle latency, then the load for the move.
    loop_dir=$base/load
    mkdir -p "$loop_dir"
    : >"$base/idle.csv"
    if [[ $LOAD == 1 ]]; then
        bench_run "$loop_dir" "$base/idle.csv"
        load_loop "$loop_dir" &
        loop_pid=$!
        # Let the first run connect its clients before the move starts.
        sleep 0.5
    fi
    local idle
    idle=$(p99s <"$base/idle.csv" | max_median)

    echo "ADD=$add $tool: moving ..." >&2
    out=$base/move.out
    local cpu0 cpu1
    cpu0=$(nodes_cpu)
    t0=$(now)
    if [[ $tool == slotproxy ]]; then
        # shellcheck disable=SC2086 # the extra words are meant to split
        timeout "$TIMEOUT" redis-cli -p "$PROXY_PORT" PROXY REBALANCE SLOTS $SLOTPROXY_ARGS \
            >"$out" 2>&1 || true
        t1=$(now)
        head -1 "$out" | grep -q '^OK moved' || status=FAILED
    else
        # shellcheck disable=SC2086
        timeout "$TIMEOUT" redis-cli --cluster rebalance "${originals[0]}" \
            --cluster-use-empty-masters $CLI_ARGS >"$out" 2>&1 || status=FAILED
        t1=$(now)
    fi
    cpu1=$(nodes_cpu)
    touch "$loop_dir/stop"
    if [[ -n $loop_pid ]]; then
        wait "$loop_pid" || true
        loop_pid=
    fi
    secs=$(elapsed "$t0" "$t1")
    if [[ $status != ok ]]; then
        echo "!!! ADD=$add $tool: the move FAILED after ${secs}s:" >&2
        head -20 "$out" >&2
    fi
    if [[ $tool == slotproxy ]]; then
        # The job's log (per range, with keys) for whoever reads the work directory.
        local job
        job=$(redis-cli -p "$PROXY_PORT" PROXY JOBS 2>/dev/null |
            awk '$1 == "job" && $3 == "rebalance-slots" { id = $2 } END { print id }') || true
        [[ -n $job ]] && redis-cli -p "$PROXY_PORT" PROXY JOB "$job" >"$base/job.out" 2>&1 || true
    fi

    # What the move cost each node, for whoever reads the work directory.
    for addr in "${all[@]}"; do
        cli "$addr" INFO commandstats >"$base/commandstats-$addr.txt" 2>&1 || true
    done

    # Checks (not timed).
    local slots_total=0 new_slots=0 open=0 empty=0 s
    for addr in "${masters[@]}"; do
        s=$(own_slots "$addr")
        slots_total=$((slots_total + s))
        ((s > 0)) || empty=$((empty + 1))
    done
    for addr in "${fresh[@]}"; do
        s=$(own_slots "$addr")
        new_slots=$((new_slots + s))
    done
    for addr in "${all[@]}"; do
        open=$((open + $(open_slots "$addr")))
    done
    local total moved
    total=$(dbsize_sum "${masters[@]}")
    moved=$(dbsize_sum "${fresh[@]}")
    if ((total != KEYS)); then
        echo "!!! ADD=$add $tool: KEYS LOST: the masters hold $total keys, not $KEYS !!!" >&2
        status=KEYS-LOST
    fi
    if ((open > 0)); then
        echo "!!! ADD=$add $tool: $open slot(s) left open (importing/migrating) !!!" >&2
        [[ $status == ok ]] && status=OPEN-SLOT
    fi
    if ((empty > 0 || slots_total != 16384)); then
        echo "!!! ADD=$add $tool: $empty master(s) without slots, $slots_total slots owned !!!" >&2
        [[ $status == ok ]] && status=UNEVEN
    fi
    [[ $status == ok ]] || FAILED=1

    local during errors
    during=$(cat /dev/null "$loop_dir"/run-*.csv | p99s | max_median)
    errors=$(cat /dev/null "$loop_dir"/run-*.csv |
        grep -c -e 'Error from server' -e 'redis-benchmark exited' || true)
    ROWS+=("$add $tool $secs $new_slots $moved ${idle%% *} $during $errors $status $(elapsed "$cpu0" "$cpu1")")

    stop_all
    loop_dir=
}

echo "scale.sh: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start;" \
    "$KEYS keys of $VALUE_SIZE bytes, $MASTERS masters x $REPLICAS replicas, load" \
    "-c $CLIENTS -n $LOAD_REQUESTS; work directory $work" >&2
ROWS=()
FAILED=0
for add in $ADDS; do
    for tool in $TOOLS; do
        run_one "$add" "$tool"
    done
done

# Fields: 1 ADD, 2 tool, 3 seconds, 4 slots on new masters, 5 keys on new masters, 6 idle p99,
# 7 p99 max, 8 p99 median, 9 samples, 10 client error lines, 11 status, 12 nodes' CPU seconds.
echo
printf '%s\n' "${ROWS[@]}" | awk -v keys="$KEYS" '
{
    row[NR] = $0; add[NR] = $1; tool[NR] = $2; secs[NR] = $3
    kps[NR] = ($3 > 0) ? $5 / $3 : 0
    if ($2 == "redis-cli") cli[$1] = kps[NR]
}
END {
    printf "Rebalance after adding ADD empty masters to 3 masters holding %d keys:\n", keys
    printf "%4s %-10s %8s %6s %8s %8s %9s %9s %9s %7s %6s %8s %9s %11s %s\n", "ADD", "tool",
        "seconds", "slots", "keys", "keys/s", "p99 idle", "p99 max", "p99 med", "samples",
        "errors", "node CPU", "ms/1k key", "vs redis-cli", "status"
    for (i = 1; i <= NR; i++) {
        split(row[i], f, " ")
        ratio = "-"
        if (f[2] == "slotproxy" && (f[1] in cli) && cli[f[1]] > 0)
            ratio = sprintf("%.2fx", kps[i] / cli[f[1]])
        per = (f[5] > 0) ? sprintf("%.1f", 1000000 * f[12] / f[5]) : "-"
        printf "%4d %-10s %8.2f %6d %8d %8.0f %9s %9s %9s %7d %6d %8.2f %9s %11s %s\n", f[1],
            f[2], f[3], f[4], f[5], kps[i], f[6], f[7], f[8], f[9], f[10], f[12], per, ratio,
            f[11]
    }
    print ""
    print "seconds: the rebalance command until it returned. slots, keys: owned by the new masters"
    print "afterwards (the keys moved). p99 (ms): redis-benchmark through the proxy, idle before the"
    print "move, and max / median over the SET and GET tests of the runs during the move. errors:"
    print "seconds in which the load saw an error reply during the move. node CPU: user + system"
    print "seconds every node used during the move (serving the load too, unless BENCH_LOAD=0),"
    print "and per 1,000 keys moved. vs redis-cli: keys/s ratio."
}'
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$FAILED"
