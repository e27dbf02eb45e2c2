#!/usr/bin/env bash
# Cluster creation time: slotproxy's online engine vs. the render path vs. redis-cli.
#
# Run by hand; never part of the test suite. For every size N in BENCH_SIZES it builds an
# N-node cluster with one replica per master (N/2 masters) three times, each time from fresh
# redis-server processes spread round-robin over 6 loopback "hosts" 127.0.0.2-7, and measures
# the time until every node reports cluster_state:ok:
#
#   online     `slotproxy --seeds <one node>` and N empty cluster-enabled nodes are started (not
#              timed), then timed: `redis-cli -p <proxy> PROXY CREATE REPLICAS 1 NODES ...`
#              until it returns, plus the wait until every node says cluster_state:ok
#              (the engine waits for that itself, and also for every replication link to be up;
#              the script verifies and reports how many nodes were not ok when it returned).
#   render     timed from `slotproxy render --replicas 1 --out DIR <nodes>` through starting
#              every node from its rendered redis.conf + nodes.conf until every node says
#              cluster_state:ok. This path necessarily includes process start-up; the render
#              command alone is reported in its own column.
#   redis-cli  N empty nodes are started (not timed), then timed: `redis-cli --cluster create
#              <nodes> --cluster-replicas 1 --cluster-yes` until it returns, plus the wait until
#              every node says cluster_state:ok.
#
# "start" is the time to spawn N empty redis-server processes until each answers PING, measured
# in the online run; it is excluded from the online and redis-cli columns (it would be the same
# for both) and included in the render column (starting the nodes is that path's work).
#
# All three use the same node settings: the rendered fragment (port, bind, bind-source-addr,
# cluster-enabled, cluster-config-file nodes.conf, cluster-node-timeout 5000, appendonly no,
# save "") plus what src/admin/localcluster.rs appends (dir, logfile, pidfile, daemonize no,
# repl-diskless-sync-delay 0, protected-mode no: Redis 7 counts only 127.0.0.1 as loopback).
#
# Readiness is polled with CLUSTER INFO sent over bash's /dev/tcp (no process per question: a
# redis-cli per node and round cost up to 20 ms each on a busy 2-core machine, so at 96 nodes
# the polling itself added seconds to every column), re-asking only nodes not yet ok (a node
# that reached ok is checked once more at the end), every 20 ms. One round over 96 nodes takes
# a few tens of ms.
#
# The nodes are fresh in every run: Redis keeps a master's cluster_state at fail for its first
# 2 s (CLUSTER_WRITABLE_DELAY in src/cluster.c), which bounds the small numbers from below; and
# a master that was idle and empty for longer than that turns ok only min(cluster-node-timeout,
# 5 s) after it got its slots (the rejoin delay). BENCH_IDLE shows the second case:
# redis-cli waits it out, PROXY CREATE lowers such a master's cluster-node-timeout meanwhile.
#
# Environment:
#   BENCH_SIZES      node counts, each divisible by 2 and >= 6 (default "12 48 96"; 192 needs
#                    more than 2 cores: see the README's Benchmarks)
#   BENCH_IDLE       seconds the empty nodes idle after answering PING before the online and
#                    redis-cli runs are timed (default 0)
#   BENCH_PORT_BASE  first client port on each host; bus ports are +10000 (default 6400).
#                    Below the kernel's ephemeral range and the test harness's 20000-55000.
#   BENCH_PROXY_PORT the proxy's port on 127.0.0.1 (default 7721)
#   BENCH_TIMEOUT    seconds before one creation is given up (default 300)
#   CARGO_TARGET_DIR where to find (or build) release/slotproxy (default ./target)

set -euo pipefail

SIZES=${BENCH_SIZES:-"12 48 96"}
IDLE=${BENCH_IDLE:-0}
PORT_BASE=${BENCH_PORT_BASE:-6400}
PROXY_PORT=${BENCH_PROXY_PORT:-7721}
TIMEOUT=${BENCH_TIMEOUT:-300}
HOSTS=(127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5 127.0.0.6 127.0.0.7)
NODE_TIMEOUT_MS=5000

for tool in redis-server redis-cli timeout awk sleep; do
    command -v "$tool" >/dev/null || { echo "create.sh: $tool is not on PATH" >&2; exit 1; }
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
# Cargo resolves a relative CARGO_TARGET_DIR against the working directory.
[[ $target == /* ]] || target=$PWD/$target
bin=$target/release/slotproxy
if [[ ! -x $bin ]]; then
    echo "building $bin"
    (cd "$root" && CARGO_TARGET_DIR=$target cargo build --release)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/slotproxy-create-bench.XXXXXX")
node_pids=()
proxy_pid=

# Kills every process this script started, by PID, and reaps it.
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

stop_proxy() {
    if [[ -n $proxy_pid ]]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
        proxy_pid=
    fi
}

cleanup() {
    stop_proxy
    stop_nodes
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "create.sh: $*" >&2
    exit 1
}

now() {
    echo "$EPOCHREALTIME"
}

# elapsed START END -> seconds with 2 decimals
elapsed() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'
}

# The nodes of a size-N layout as "ip:port", round-robin over the hosts so that consecutive
# nodes are on different hosts.
layout() {
    local n=$1 i
    for ((i = 0; i < n; i++)); do
        echo "${HOSTS[i % ${#HOSTS[@]}]}:$((PORT_BASE + i / ${#HOSTS[@]}))"
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
}

# The settings src/admin/localcluster.rs appends to a rendered redis.conf.
local_settings() {
    local dir=$1
    printf 'dir "%s"\nlogfile "%s/redis.log"\npidfile "%s/redis.pid"\ndaemonize no\n' \
        "$dir" "$dir" "$dir"
    printf 'repl-diskless-sync-delay 0\nprotected-mode no\n'
}

# The rendered fragment's settings, for empty nodes.
empty_conf() {
    local ip=$1 port=$2 dir=$3
    printf 'port %s\nbind %s\nbind-source-addr %s\ncluster-enabled yes\n' "$port" "$ip" "$ip"
    printf 'cluster-config-file nodes.conf\ncluster-node-timeout %s\n' "$NODE_TIMEOUT_MS"
    printf 'appendonly no\nsave ""\n'
    local_settings "$dir"
}

# spawn DIR: starts redis-server from DIR/redis.conf in DIR, records its PID.
spawn() {
    local dir=$1
    (cd "$dir" && exec redis-server "$dir/redis.conf" >"$dir/stdout.log" 2>&1) &
    node_pids+=("$!")
}

# Writes empty configs under DIR for the nodes and starts them.
start_empty() {
    local base=$1 addr ip port dir
    shift
    for addr in "$@"; do
        ip=${addr%:*}
        port=${addr##*:}
        dir=$base/$ip-$port
        mkdir -p "$dir"
        empty_conf "$ip" "$port" "$dir" >"$dir/redis.conf"
        spawn "$dir"
    done
}

# ask ADDR COMMAND: sends an inline command over bash's /dev/tcp (no process is spawned) and
# sets REPLY_TEXT to the reply: a bulk string's body, or the status or error line. Fails if
# the node refuses the connection or does not answer within 2 s.
ask() {
    local ip=${1%:*} port=${1##*:} fd line len
    REPLY_TEXT=
    { exec {fd}<>"/dev/tcp/$ip/$port"; } 2>/dev/null || return 1
    printf '%s\r\n' "$2" >&"$fd"
    if IFS= read -r -t 2 line <&"$fd"; then
        line=${line%$'\r'}
        case $line in
        \$-1) ;;
        \$*)
            len=${line#\$}
            if ! IFS= read -r -t 2 -N "$((len + 2))" REPLY_TEXT <&"$fd"; then
                exec {fd}>&-
                return 1
            fi
            ;;
        *) REPLY_TEXT=$line ;;
        esac
        exec {fd}>&-
        return 0
    fi
    exec {fd}>&-
    return 1
}

# Waits until every node answers PING (or dies trying).
wait_ping() {
    local deadline=$((SECONDS + 30)) addr pending
    local -a rest=("$@")
    while ((${#rest[@]} > 0)); do
        pending=()
        for addr in "${rest[@]}"; do
            if ! ask "$addr" PING || [[ $REPLY_TEXT != +PONG ]]; then
                pending+=("$addr")
            fi
        done
        rest=("${pending[@]}")
        ((${#rest[@]} == 0)) && return 0
        ((SECONDS < deadline)) || die "nodes never answered PING: ${rest[*]}"
        sleep 0.02
    done
}

is_ok() {
    ask "$1" "CLUSTER INFO" && [[ $REPLY_TEXT == *cluster_state:ok* ]]
}

# Waits until every node reports cluster_state:ok, asking only nodes not yet ok; then checks
# every node once more (a node that fell back restarts the wait for it). Sets NOT_OK_FIRST to
# how many nodes were not ok in the first round.
wait_all_ok() {
    local deadline=$((SECONDS + TIMEOUT)) addr pending first=1
    local -a rest=("$@")
    while true; do
        while ((${#rest[@]} > 0)); do
            pending=()
            for addr in "${rest[@]}"; do
                is_ok "$addr" || pending+=("$addr")
            done
            rest=("${pending[@]}")
            if ((first)); then
                NOT_OK_FIRST=${#rest[@]}
                first=0
            fi
            ((${#rest[@]} == 0)) && break
            ((SECONDS < deadline)) || die "not cluster_state:ok within ${TIMEOUT}s: ${rest[*]}"
            sleep 0.02
        done
        for addr in "$@"; do
            is_ok "$addr" || rest+=("$addr")
        done
        ((${#rest[@]} == 0)) && return 0
    done
}

# A master, or a replica whose replication link is up.
is_linked() {
    ask "$1" "INFO replication" || return 1
    [[ $REPLY_TEXT != *role:slave* || $REPLY_TEXT == *master_link_status:up* ]]
}

# Waits until every replica's link to its master is up.
wait_all_linked() {
    local deadline=$((SECONDS + TIMEOUT)) addr pending
    local -a rest=("$@")
    while ((${#rest[@]} > 0)); do
        pending=()
        for addr in "${rest[@]}"; do
            is_linked "$addr" || pending+=("$addr")
        done
        rest=("${pending[@]}")
        ((${#rest[@]} == 0)) && return 0
        ((SECONDS < deadline)) || die "replication links not up within ${TIMEOUT}s: ${rest[*]}"
        sleep 0.02
    done
}

wait_proxy() {
    local deadline=$((SECONDS + 20))
    until [[ $(redis-cli -p "$PROXY_PORT" PING 2>/dev/null) == PONG ]]; do
        kill -0 "$proxy_pid" 2>/dev/null || die "the proxy exited; log: $(cat "$work/proxy.log")"
        ((SECONDS < deadline)) || die "the proxy did not answer PING"
        sleep 0.05
    done
}

# run_online N: sets START_S, ONLINE_S, ONLINE_NOT_OK, ONLINE_UNLINKED.
run_online() {
    local base=$work/online-$1 t0 t1 t2 out addr
    local -a nodes
    mapfile -t nodes < <(layout "$1")
    check_ports_free "${nodes[@]}"
    # The proxy starts first (it waits for its seed), so the nodes idle as long before the
    # timed part as in the redis-cli run: a master's state depends on its age (see above).
    "$bin" --listen "127.0.0.1:$PROXY_PORT" --seeds "${nodes[0]}" --log-level warn \
        --metrics-listen "" >"$work/proxy.log" 2>&1 &
    proxy_pid=$!
    wait_proxy
    t0=$(now)
    start_empty "$base" "${nodes[@]}"
    wait_ping "${nodes[@]}"
    t1=$(now)
    START_S=$(elapsed "$t0" "$t1")
    sleep "$IDLE"
    out=$base/create.out
    t1=$(now)
    timeout "$TIMEOUT" redis-cli -p "$PROXY_PORT" PROXY CREATE REPLICAS 1 NODES "${nodes[@]}" \
        TIMEOUT "$TIMEOUT" >"$out" 2>&1 || die "PROXY CREATE failed: $(head -5 "$out")"
    wait_all_ok "${nodes[@]}"
    t2=$(now)
    ONLINE_NOT_OK=$NOT_OK_FIRST
    ONLINE_UNLINKED=0
    for addr in "${nodes[@]}"; do
        is_linked "$addr" || ONLINE_UNLINKED=$((ONLINE_UNLINKED + 1))
    done
    head -1 "$out" | grep -q '^OK created' || die "PROXY CREATE did not succeed: $(head -5 "$out")"
    ONLINE_S=$(elapsed "$t1" "$t2")
    stop_proxy
    stop_nodes
}

# run_render N: sets RENDER_S (render + start + converge), RENDER_CMD_S (render alone) and
# RENDER_LINKED_S (render until every replica's link is up).
run_render() {
    local base=$work/render-$1 t0 t1 t2 t3 addr dir
    local -a nodes
    mapfile -t nodes < <(layout "$1")
    check_ports_free "${nodes[@]}"
    t0=$(now)
    "$bin" render --replicas 1 --node-timeout-ms "$NODE_TIMEOUT_MS" --out "$base" "${nodes[@]}" \
        >"$work/render-$1.out" 2>&1 || die "render failed: $(cat "$work/render-$1.out")"
    t1=$(now)
    for addr in "${nodes[@]}"; do
        dir=$base/${addr%:*}-${addr##*:}
        [[ -f $dir/redis.conf && -f $dir/nodes.conf ]] || die "render wrote no files for $addr"
        local_settings "$dir" >>"$dir/redis.conf"
        spawn "$dir"
    done
    wait_all_ok "${nodes[@]}"
    t2=$(now)
    wait_all_linked "${nodes[@]}"
    t3=$(now)
    RENDER_CMD_S=$(elapsed "$t0" "$t1")
    RENDER_S=$(elapsed "$t0" "$t2")
    RENDER_LINKED_S=$(elapsed "$t0" "$t3")
    stop_nodes
}

# run_redis_cli N: sets CLI_S, CLI_LINKED_S and CLI_START_S.
run_redis_cli() {
    local base=$work/cli-$1 t0 t1 t2 t3 out
    local -a nodes
    mapfile -t nodes < <(layout "$1")
    check_ports_free "${nodes[@]}"
    t0=$(now)
    start_empty "$base" "${nodes[@]}"
    wait_ping "${nodes[@]}"
    t1=$(now)
    CLI_START_S=$(elapsed "$t0" "$t1")
    sleep "$IDLE"
    t1=$(now)
    out=$base/create.out
    timeout "$TIMEOUT" redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 \
        --cluster-yes >"$out" 2>&1 || die "redis-cli --cluster create failed: $(tail -5 "$out")"
    wait_all_ok "${nodes[@]}"
    t2=$(now)
    wait_all_linked "${nodes[@]}"
    t3=$(now)
    CLI_S=$(elapsed "$t1" "$t2")
    CLI_LINKED_S=$(elapsed "$t1" "$t3")
    stop_nodes
}

rows=()
for n in $SIZES; do
    ((n >= 6 && n % 2 == 0)) || die "size $n: need an even number of at least 6 nodes"
    echo "N=$n: online engine ..." >&2
    run_online "$n"
    echo "N=$n: render path ..." >&2
    run_render "$n"
    echo "N=$n: redis-cli --cluster create ..." >&2
    run_redis_cli "$n"
    row="$n $START_S $CLI_START_S $ONLINE_S $RENDER_S $RENDER_CMD_S $CLI_S $ONLINE_NOT_OK"
    rows+=("$row $ONLINE_UNLINKED $RENDER_LINKED_S $CLI_LINKED_S")
done

# Fields: 1 N, 2 start, 3 start (redis-cli run), 4 online, 5 render, 6 render cmd, 7 redis-cli,
# 8 online not ok at return, 9 online unlinked at return, 10 render linked, 11 redis-cli linked.
echo
printf '%s\n' "${rows[@]}" | awk '
function ratio(a, b) { return b > 0 ? sprintf("%.1fx", a / b) : "-" }
function growth(name, t) {
    if (t[1] > 0 && t[NR] > 0)
        printf "  %-10s k = %.2f\n", name, log(t[NR] / t[1]) / log(n[NR] / n[1])
}
{
    n[NR] = $1; st[NR] = $2; st2[NR] = $3; on[NR] = $4; re[NR] = $5; rc[NR] = $6; cl[NR] = $7
    bad[NR] = $8; unl[NR] = $9; rel[NR] = $10; cll[NR] = $11
}
END {
    print "Time until every node reports cluster_state:ok (seconds):"
    printf "%5s %8s %9s %9s %12s %12s %17s %17s\n", "N", "start", "online", "render",
        "(render cmd)", "redis-cli", "redis-cli/online", "redis-cli/render"
    for (i = 1; i <= NR; i++)
        printf "%5d %8.2f %9.2f %9.2f %12.2f %12.2f %17s %17s\n", n[i], st[i], on[i], re[i],
            rc[i], cl[i], ratio(cl[i], on[i]), ratio(cl[i], re[i])
    print ""
    print "Time until, in addition, every replica reports master_link_status:up (seconds; the"
    print "online engine waits for this before it returns, so its column is the same):"
    printf "%5s %9s %9s %12s %17s %17s\n", "N", "online", "render", "redis-cli",
        "redis-cli/online", "redis-cli/render"
    for (i = 1; i <= NR; i++)
        printf "%5d %9.2f %9.2f %12.2f %17s %17s\n", n[i], on[i], rel[i], cll[i],
            ratio(cll[i], on[i]), ratio(cll[i], rel[i])
    print ""
    starts = ""
    for (i = 1; i <= NR; i++) starts = starts (i > 1 ? ", " : "") st2[i]
    print "start: spawning N empty redis-servers until each answers PING (online run; redis-cli"
    print "run: " starts "). Excluded from online and redis-cli, included in render."
    print "render cmd: `slotproxy render` alone, part of the render column."
    for (i = 1; i <= NR; i++) {
        if (bad[i] > 0)
            printf "note: N=%d: %d node(s) not cluster_state:ok when PROXY CREATE returned\n",
                n[i], bad[i]
        if (unl[i] > 0)
            printf "note: N=%d: %d replica(s) not linked when PROXY CREATE returned\n",
                n[i], unl[i]
    }
    if (NR >= 2 && n[NR] > n[1]) {
        printf "growth from N=%d to N=%d as the exponent k of time ~ N^k:\n", n[1], n[NR]
        growth("online", on)
        growth("render", re)
        growth("redis-cli", cl)
    }
}'
