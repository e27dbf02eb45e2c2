#!/usr/bin/env bash
# slotproxy vs. the cluster it fronts: throughput, latency and the proxy's CPU cost per request.
#
# Run by hand (`make bench`); never part of the test suite. It starts `slotproxy demo` (a local
# 3-master/3-replica cluster plus the proxy, in one process tree), runs redis-benchmark against
# the masters directly and against the proxy, prints one table, and stops the demo.
#
# Environment:
#   BENCH_REQUESTS       requests per run for SET/GET/mixed (default 200000, ~3-5 s a run)
#   BENCH_MSET_REQUESTS  requests per MSET run (default BENCH_REQUESTS/4: each carries 10 keys)
#   BENCH_PIPELINE_SCALE the request counts are multiplied by this at depth 16 (default 4), so
#                        that pipelined runs also last seconds: redis-benchmark times a run in
#                        whole milliseconds and /proc CPU times tick at 1/CLK_TCK s
#   BENCH_WORKERS        `slotproxy demo --workers` (default 1)
#   BENCH_PORT           the proxy's port on 127.0.0.1 (default 7719)
#   BENCH_RUN_TIMEOUT    seconds before one redis-benchmark run is given up (default 300)
#   BENCH_METRICS_LISTEN `slotproxy demo --metrics-listen` (default 127.0.0.1:9617; "" turns
#                        metrics off, to measure what they cost: run once with and once without)
#   BENCH_USERS          1: the proxy runs with users configured (`slotproxy demo --config`):
#                        user "bench", level write, read and write namespace "key:" (every key
#                        the workloads use), a command deny list; proxy runs authenticate with
#                        `--user bench -a ...`, so every request pays the namespace and command
#                        checks. Default 0 (no users: the open proxy). Direct runs never
#                        authenticate (the nodes have no users either way)
#   BENCH_TLS            1: proxy runs go through the proxy's TLS listener (port BENCH_PORT+1,
#                        a certificate made with openssl for this run; redis-benchmark --tls),
#                        so the ratio includes TLS termination; direct runs stay plain (the
#                        demo's nodes have no TLS). Default 0. Combines with BENCH_USERS
#   BENCH_WORKLOADS      space-separated subset of the workloads below (default: all)
#   BENCH_PEER           a shell command that starts another proxy in front of the same cluster,
#                        measured in the same run beside slotproxy (each workload: direct, then
#                        slotproxy, then the peer). It runs with BENCH_PEER_PORT (where it must
#                        listen on 127.0.0.1), BENCH_MASTERS (the masters' host:port, space-
#                        separated) and BENCH_WORK (a scratch directory for its config file) in
#                        its environment, and must keep running until it is sent SIGTERM. Its CPU
#                        is that of the started process and all its descendants. The peer runs
#                        plain and without users (BENCH_USERS / BENCH_TLS apply to slotproxy).
#                        Example (Predixy): see "Benchmarks" in the README
#   BENCH_PEER_PORT      the peer's port (default BENCH_PORT+2)
#   BENCH_PEER_NAME      the peer's name in the table (default "peer")
#   BENCH_READ_FROM      the proxy's `read_from` (`master`, `prefer-replica`, `replica`, `any`;
#                        default: the proxy's default, master). The demo cluster has one
#                        replica per master, so `prefer-replica` serves the proxy runs' GETs
#                        from replicas. `compare`: each workload runs through the proxy twice,
#                        with `read_from` `master` and then `prefer-replica` (rows
#                        slotproxy/master and slotproxy/prefer; switched live with `PROXY
#                        CONFIG SET`, after which the script waits until GETs reach the
#                        replicas), against the same cluster in the same run
#   CARGO_TARGET_DIR     where to find (or build) release/slotproxy (default ./target)
#
# Every run: 50 clients, random keys (-r 100000), 3-byte values, pipeline depth 1 and 16, the
# direct run first and then the proxy run. Workloads:
#
#   set, get   `-t set` / `-t get`. Direct runs use `--cluster` (redis-benchmark puts a per-node
#              hash tag in each key and sends it to the owner); proxy runs use plain keys.
#   mixed      50% GET / 50% SET: redis-benchmark cannot mix commands in one run, so two runs go
#              concurrently, `-t get` and `-t set` with 25 clients and half the requests each
#              (both sides alike).
#   mset       `-t mset` (MSET of 10 keys) as each side natively runs it. With `--cluster`,
#              redis-benchmark 7 gives all 10 keys of a request the same per-node hash tag
#              (`key:{06S}:...`), so the direct MSET is a single-slot command (no CROSSSLOT);
#              a cluster client cannot send 10 unrelated keys in one MSET at all. Against the
#              proxy the keys are untagged, land in ~10 slots on all 3 masters, and the proxy
#              splits the MSET per node and merges the replies. So this row is "what the
#              proxy's multi-slot MSET costs relative to the best a cluster client can do in
#              one command" -- not the same work, and the ratio says so.
#   mset1slot  The like-for-like MSET: 10 keys sharing one hash tag, which the proxy forwards
#              whole. One tag per master (found with EXISTS until a node answers without MOVED)
#              and three concurrent runs of 17/17/16 clients, one per tag: directly, each run
#              talks to its master (no --cluster, no redirections); through the proxy, each
#              run talks to the proxy with the same keys. Same keys, same clients, both sides.
#
# One row per workload, depth and side (direct, slotproxy, the peer). Columns: rps is requests
# (commands) per second; with concurrent runs it is (sum of requests) / (longest run's
# duration), and p50/p99 are the worst of the runs' percentiles, since percentiles of separate
# runs cannot be merged. ratio is rps over the direct row's. user_us and sys_us are the proxy's
# utime and stime (/proc/<pid>/stat: the demo process for slotproxy, in which the proxy runs
# while its redis-servers are separate processes; the peer's process tree) across its run,
# divided by the requests of that run, and cpu_us/rq their sum; rq/s/core is 1e6 / cpu_us/rq,
# the rate one fully busy core could sustain at that cost. On a small machine redis-benchmark,
# six redis-servers and the proxies share the cores, so absolute rates are low and noisy; the
# ratio and the CPU per request are the numbers to compare.
#
# node_us/rq is the CPU time (utime + stime, /proc/<pid>/stat) of the demo's redis-servers
# across the run, per request: masters together (m) and replicas together (r); r_share is the
# replicas' part of the nodes' CPU. With reads on replicas it is where the read load went.

set -euo pipefail

REQUESTS=${BENCH_REQUESTS:-200000}
MSET_REQUESTS=${BENCH_MSET_REQUESTS:-$((REQUESTS / 4))}
PIPELINE_SCALE=${BENCH_PIPELINE_SCALE:-4}
WORKERS=${BENCH_WORKERS:-1}
PORT=${BENCH_PORT:-7719}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-300}
START_TIMEOUT=60
CLIENTS=50
KEYSPACE=100000
DEPTHS=(1 16)
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-set get mixed mset mset1slot}"
METRICS_LISTEN=${BENCH_METRICS_LISTEN-127.0.0.1:9617}
USERS=${BENCH_USERS:-0}
TLS=${BENCH_TLS:-0}
PEER=${BENCH_PEER:-}
PEER_PORT=${BENCH_PEER_PORT:-$((PORT + 2))}
PEER_NAME=${BENCH_PEER_NAME:-peer}
READ_FROM=${BENCH_READ_FROM:-}

for tool in redis-benchmark redis-cli redis-server getconf timeout; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is not on PATH" >&2; exit 1; }
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

CLK_TCK=$(getconf CLK_TCK)
work=$(mktemp -d "${TMPDIR:-/tmp}/slotproxy-bench.XXXXXX")
demo_pid=
peer_pid=
node_pids=()
job_pids=()
RESULT=

# tree_pids PID: PID and every live descendant of it.
tree_pids() {
    local queue=("$1") out=() p c
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        out+=("$p")
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
            queue+=("$c")
        done
    done
    echo "${out[@]}"
}

cleanup() {
    local rc=$?
    local p i
    trap - EXIT INT TERM
    for p in "${job_pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    if [[ -n $peer_pid ]]; then
        # The peer command and whatever it started (a wrapper script's proxy).
        for p in $(tree_pids "$peer_pid"); do
            kill -TERM "$p" 2>/dev/null || true
        done
        wait "$peer_pid" 2>/dev/null || true
    fi
    if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -INT "$demo_pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$demo_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$demo_pid" 2>/dev/null; then
            echo "compare.sh: demo (pid $demo_pid) still running 10 s after SIGINT; SIGKILL" >&2
            kill -KILL "$demo_pid" 2>/dev/null || true
            wait "$demo_pid" 2>/dev/null || true
            # The demo could not tear its cluster down; end the redis-servers it started.
            for p in "${node_pids[@]}"; do
                if [[ $(cat "/proc/$p/comm" 2>/dev/null) == redis-server ]]; then
                    kill -KILL "$p" 2>/dev/null || true
                fi
            done
        else
            wait "$demo_pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- start the demo and read its node list ----------------------------------------------

demo_extra=()
proxy_auth=()
: >"$work/extra.toml"
if [[ $USERS == 1 ]]; then
    cat >>"$work/extra.toml" <<'TOML'
[[users]]
name = "bench"
password = "bench-secret"
level = "write"
read_prefixes = ["key:"]
write_prefixes = ["key:"]
commands_deny = ["@keyspace-wide", "@admin"]
TOML
    proxy_auth=(--user bench -a bench-secret)
fi
proxy_port=$PORT
proxy_tls=()
if [[ $TLS == 1 ]]; then
    command -v openssl >/dev/null || { echo "compare.sh: BENCH_TLS=1 needs openssl" >&2; exit 1; }
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=slotproxy bench" \
        -addext "subjectAltName=IP:127.0.0.1" -keyout "$work/tls.key" -out "$work/tls.pem" \
        2>/dev/null
    proxy_port=$((PORT + 1))
    # Top-level keys must precede the [[users]] table.
    printf 'tls_listen = "127.0.0.1:%s"\ntls_cert_file = "%s"\ntls_key_file = "%s"\n' \
        "$proxy_port" "$work/tls.pem" "$work/tls.key" >"$work/tls.toml"
    cat "$work/extra.toml" >>"$work/tls.toml"
    mv "$work/tls.toml" "$work/extra.toml"
    proxy_tls=(--tls --cacert "$work/tls.pem")
fi
# Admin commands (PROXY CONFIG SET) go to the plain port; with users, as an admin user.
admin_auth=()
if [[ $READ_FROM == compare && $USERS == 1 ]]; then
    printf '\n[[users]]\nname = "benchadmin"\npassword = "bench-admin"\nlevel = "admin"\n' \
        >>"$work/extra.toml"
    admin_auth=(--user benchadmin -a bench-admin --no-auth-warning)
fi
if [[ -n $READ_FROM && $READ_FROM != compare ]]; then
    # Top-level keys must precede the [[users]] table.
    { printf 'read_from = "%s"\n' "$READ_FROM"; cat "$work/extra.toml"; } >"$work/read.toml"
    mv "$work/read.toml" "$work/extra.toml"
fi
[[ -s $work/extra.toml ]] && demo_extra=(--config "$work/extra.toml")
"$bin" demo --listen "127.0.0.1:$PORT" --workers "$WORKERS" --metrics-listen "$METRICS_LISTEN" \
    "${demo_extra[@]}" >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!

for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    grep -q '^slotproxy demo ready' "$work/demo.out" && break
    if ! kill -0 "$demo_pid" 2>/dev/null; then
        echo "compare.sh: slotproxy demo exited during start-up:" >&2
        cat "$work/demo.out" "$work/demo.err" >&2
        demo_pid=
        exit 1
    fi
    sleep 0.1
done
if ! grep -q '^slotproxy demo ready' "$work/demo.out"; then
    echo "compare.sh: no 'slotproxy demo ready' line within ${START_TIMEOUT}s:" >&2
    cat "$work/demo.out" >&2
    tail -n 20 "$work/demo.err" >&2
    exit 1
fi

masters=()
replicas=()
master_pids=()
replica_pids=()
while read -r role addr _ pid _; do
    node_pids+=("$pid")
    if [[ $role == master ]]; then
        masters+=("$addr")
        master_pids+=("$pid")
    else
        replicas+=("$addr")
        replica_pids+=("$pid")
    fi
done < <(grep -E '^ +(master|replica) +[0-9.]+:[0-9]+ pid [0-9]+' "$work/demo.out")
if ((${#masters[@]} != 3)); then
    echo "compare.sh: expected 3 masters in the demo output, found ${#masters[@]}:" >&2
    cat "$work/demo.out" >&2
    exit 1
fi
if [[ $(cat "/proc/$demo_pid/comm") != slotproxy ]]; then
    echo "compare.sh: pid $demo_pid is not the slotproxy process" >&2
    exit 1
fi

# One hash tag owned by each master, for mset1slot.
tags=()
for addr in "${masters[@]}"; do
    tag=
    for ((c = 0; c < 1000; c++)); do
        reply=$(redis-cli -h "${addr%:*}" -p "${addr##*:}" EXISTS "{t$c}" 2>&1)
        if [[ $reply != MOVED* ]]; then
            tag=t$c
            break
        fi
    done
    [[ -n $tag ]] || { echo "compare.sh: no hash tag found for master $addr" >&2; exit 1; }
    tags+=("$tag")
done

# ---- the peer proxy, if one is given ---------------------------------------------------

if [[ -n $PEER ]]; then
    mkdir -p "$work/peer"
    BENCH_PEER_PORT=$PEER_PORT BENCH_MASTERS="${masters[*]}" BENCH_WORK="$work/peer" \
        bash -c "$PEER" >"$work/peer.out" 2>&1 &
    peer_pid=$!
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        [[ $(redis-cli -p "$PEER_PORT" PING 2>/dev/null) == PONG ]] && break
        if ! kill -0 "$peer_pid" 2>/dev/null; then
            echo "compare.sh: BENCH_PEER exited during start-up:" >&2
            tail -n 20 "$work/peer.out" >&2
            peer_pid=
            exit 1
        fi
        sleep 0.1
    done
    if [[ $(redis-cli -p "$PEER_PORT" PING 2>/dev/null) != PONG ]]; then
        echo "compare.sh: BENCH_PEER does not answer PING on 127.0.0.1:$PEER_PORT within ${START_TIMEOUT}s:" >&2
        tail -n 20 "$work/peer.out" >&2
        exit 1
    fi
fi

# ---- running redis-benchmark ------------------------------------------------------------

jobs_n=()   # requests of each job of the current group
jobs_out=() # output file of each job

# start_job SIDE CLIENTS REQUESTS DEPTH [TARGET-ADDR] -- ARGS...: starts one redis-benchmark.
# SIDE is `direct` (--cluster through the first master, unless TARGET-ADDR names one node),
# `proxy` (slotproxy) or `peer` (BENCH_PEER).
start_job() {
    local side=$1 clients=$2 n=$3 depth=$4 addr=$5
    shift 6
    local k=${#jobs_out[@]}
    local out=$work/job.$k
    local conn
    if [[ $side == proxy ]]; then
        conn=(-h 127.0.0.1 -p "$proxy_port" "${proxy_auth[@]}" "${proxy_tls[@]}")
    elif [[ $side == peer ]]; then
        conn=(-h 127.0.0.1 -p "$PEER_PORT")
    elif [[ -n $addr ]]; then
        conn=(-h "${addr%:*}" -p "${addr##*:}")
    else
        conn=(--cluster -h "${masters[0]%:*}" -p "${masters[0]##*:}")
    fi
    timeout "$RUN_TIMEOUT" redis-benchmark "${conn[@]}" -c "$clients" -n "$n" -r "$KEYSPACE" \
        -P "$depth" --csv "$@" >"$out.csv" 2>"$out.err" &
    job_pids+=($!)
    jobs_n+=("$n")
    jobs_out+=("$out")
}

# cpu_ticks PID...: "utime stime" summed over the processes, in clock ticks.
cpu_ticks() {
    local stat f p user=0 sys=0
    for p in "$@"; do
        stat=$(<"/proc/$p/stat") || continue
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        read -r -a f <<<"${stat##*) }"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user $sys"
}

# side_pids SIDE: the processes whose CPU a side's runs are charged: the demo process for
# slotproxy (it runs the proxy; its redis-servers are separate processes and not counted), the
# peer command's whole process tree for the peer, none for direct runs.
side_pids() {
    case $1 in
    proxy) echo "$demo_pid" ;;
    peer) tree_pids "$peer_pid" ;;
    esac
}

# run_group SIDE WORKLOAD DEPTH: runs the workload's jobs and sets RESULT to
# "rps p50 p99 cpu_us user_us sys_us masters_us replicas_us" per request (the proxy CPU fields
# are "-" for the direct side; rps "ERR" on failure).
# It runs in the main shell (not in $(...)) so that cleanup can stop its jobs.
run_group() {
    local side=$1 workload=$2 depth=$3
    local u0 s0 u1 s1 mu0 ms0 mu1 ms1 ru0 rs0 ru1 rs1 i p rc=0 total=0 per scale=1 pids
    ((depth > 1)) && scale=$PIPELINE_SCALE
    local n=$((REQUESTS * scale)) mset_n=$((MSET_REQUESTS * scale))
    job_pids=()
    jobs_n=()
    jobs_out=()
    pids=$(side_pids "$side")
    # shellcheck disable=SC2086 # a list of pids
    read -r u0 s0 <<<"$(cpu_ticks $pids)"
    read -r mu0 ms0 <<<"$(cpu_ticks "${master_pids[@]}")"
    read -r ru0 rs0 <<<"$(cpu_ticks "${replica_pids[@]}")"
    case $workload in
    set | get)
        start_job "$side" "$CLIENTS" "$n" "$depth" "" -- -t "$workload"
        ;;
    mixed)
        start_job "$side" $((CLIENTS / 2)) $((n / 2)) "$depth" "" -- -t get
        start_job "$side" $((CLIENTS - CLIENTS / 2)) $((n / 2)) "$depth" "" -- -t set
        ;;
    mset)
        start_job "$side" "$CLIENTS" "$mset_n" "$depth" "" -- -t mset
        ;;
    mset1slot)
        for i in 0 1 2; do
            local cmd=(MSET)
            for ((p = 0; p < 10; p++)); do
                cmd+=("key:{${tags[i]}}:__rand_int__" xxx)
            done
            local addr=
            [[ $side == direct ]] && addr=${masters[i]}
            per=$((CLIENTS / 3 + (i < CLIENTS % 3 ? 1 : 0)))
            start_job "$side" "$per" $((mset_n / 3)) "$depth" "$addr" -- "${cmd[@]}"
        done
        ;;
    esac
    for p in "${job_pids[@]}"; do
        wait "$p" || rc=$?
    done
    job_pids=()
    # shellcheck disable=SC2086
    read -r u1 s1 <<<"$(cpu_ticks $pids)"
    read -r mu1 ms1 <<<"$(cpu_ticks "${master_pids[@]}")"
    read -r ru1 rs1 <<<"$(cpu_ticks "${replica_pids[@]}")"
    for i in "${!jobs_n[@]}"; do
        total=$((total + jobs_n[i]))
        if [[ $rc != 0 ]] || grep -qi 'error' "${jobs_out[i]}.csv" "${jobs_out[i]}.err"; then
            echo "compare.sh: $side $workload -P $depth failed (exit $rc):" >&2
            grep -vh '^WARNING: Could not fetch server CONFIG' "${jobs_out[i]}.err" "${jobs_out[i]}.csv" |
                head -n 5 >&2
            rc=1
        fi
    done
    if [[ $rc != 0 ]]; then
        RESULT="ERR - - - - - - -"
        return
    fi
    # The last CSV line of each job: "test",rps,avg,min,p50,p95,p99,max (the test name of a
    # custom command has spaces, so count fields from the end).
    RESULT=$(for i in "${!jobs_n[@]}"; do
        printf '%s ' "${jobs_n[i]}"
        tail -n 1 "${jobs_out[i]}.csv" | tr -d '"' | awk -F, '{ print $(NF-6), $(NF-3), $(NF-1) }'
    done | awk -v total="$total" -v ut=$((u1 - u0)) -v st=$((s1 - s0)) -v hz="$CLK_TCK" \
        -v mt=$((mu1 - mu0 + ms1 - ms0)) -v rt=$((ru1 - ru0 + rs1 - rs0)) -v side="$side" '
        { d = $1 / $2; if (d > dur) dur = d; if ($3 > p50) p50 = $3; if ($4 > p99) p99 = $4 }
        END {
            us = 1e6 / hz / total
            if (side == "direct") cpu = "- - -"
            else cpu = sprintf("%.2f %.2f %.2f", (ut + st) * us, ut * us, st * us)
            printf "%.0f %s %s %s %.2f %.2f\n", total / dur, p50, p99, cpu, mt * us, rt * us
        }')
}

# ---- read_from, switched live (BENCH_READ_FROM=compare) ----------------------------------

# admin_cli ARGS...: one command to the proxy's plain port, as an admin.
admin_cli() {
    redis-cli -h 127.0.0.1 -p "$PORT" "${admin_auth[@]}" "$@"
}

# get_calls ADDR...: GETs the nodes have answered so far, summed (their INFO commandstats).
get_calls() {
    local addr sum=0 n
    for addr in "$@"; do
        n=$(redis-cli -h "${addr%:*}" -p "${addr##*:}" INFO commandstats |
            sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p')
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}

# set_read_from MODE: sets the proxy's read_from; for a mode other than master, returns once
# a batch of GETs through the proxy was answered by replicas only (the health poll has found
# them usable), so the measured run does not start on masters.
set_read_from() {
    local mode=$1 reply i k m0 r0 m1 r1
    reply=$(admin_cli PROXY CONFIG SET read_from "$mode" 2>&1)
    [[ $reply == OK ]] || { echo "compare.sh: PROXY CONFIG SET read_from $mode: $reply" >&2; exit 1; }
    [[ $mode == master ]] && return
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        m0=$(get_calls "${masters[@]}")
        r0=$(get_calls "${replicas[@]}")
        for ((k = 0; k < 30; k++)); do
            echo "GET key:$k"
        done | redis-cli -h 127.0.0.1 -p "$PORT" "${proxy_auth[@]}" --no-auth-warning >/dev/null
        m1=$(get_calls "${masters[@]}")
        r1=$(get_calls "${replicas[@]}")
        ((m1 == m0 && r1 - r0 >= 30)) && return
        sleep 0.1
    done
    echo "compare.sh: GETs did not reach the replicas within ${START_TIMEOUT}s of read_from $mode" >&2
    exit 1
}

# ---- the runs ---------------------------------------------------------------------------

# A side is direct, proxy, proxy:<read_from> (compare: the proxy with that read_from) or peer.
sides=(direct proxy)
[[ $READ_FROM == compare ]] && sides=(direct proxy:master proxy:prefer-replica)
[[ -n $PEER ]] && sides+=(peer)
side_name() {
    case $1 in
    proxy) echo slotproxy ;;
    proxy:prefer-replica) echo slotproxy/prefer ;;
    proxy:*) echo "slotproxy/${1#proxy:}" ;;
    peer) echo "$PEER_NAME" ;;
    *) echo "$1" ;;
    esac
}

echo "slotproxy $("$bin" --version | awk '{print $2}') vs. Redis Cluster $(redis-server --version | awk '{print $3}' | tr -d 'v=')"
echo "masters ${masters[*]}; proxy 127.0.0.1:$PORT pid $demo_pid, --workers $WORKERS;" \
    "$(nproc) cores; $CLIENTS clients; -r $KEYSPACE; metrics ${METRICS_LISTEN:-off};" \
    "users $([[ $USERS == 1 ]] && echo on || echo off); client TLS $([[ $TLS == 1 ]] && echo "on (port $proxy_port)" || echo off);" \
    "$REQUESTS requests a run ($MSET_REQUESTS for MSET), x$PIPELINE_SCALE at -P 16"
[[ -n $PEER ]] && echo "peer \"$PEER_NAME\" on 127.0.0.1:$PEER_PORT pid $peer_pid: $PEER"
echo "replicas ${replicas[*]}; read_from ${READ_FROM:-master}"
echo "mset1slot hash tags per master: ${tags[*]}"

# Warm-up (not reported): opens the proxies' backend connections and fills the keyspace for GET.
run_group proxy set 16
[[ -n $PEER ]] && run_group peer set 16

results=()
for workload in "${WORKLOADS[@]}"; do
    for depth in "${DEPTHS[@]}"; do
        printf '  %-9s -P %-2s ... ' "$workload" "$depth" >&2
        d_rps=
        for side in "${sides[@]}"; do
            if [[ $side == proxy:* ]]; then
                set_read_from "${side#proxy:}"
                run_group proxy "$workload" "$depth"
            else
                run_group "$side" "$workload" "$depth"
            fi
            read -r rps p50 p99 cpu usr sys m_us r_us <<<"$RESULT"
            [[ $side == direct ]] && d_rps=$rps
            printf '%s %s  ' "$(side_name "$side")" "$rps" >&2
            results+=("$workload $depth $(side_name "$side") $rps $d_rps $p50 $p99 $cpu $usr $sys $m_us $r_us")
        done
        echo >&2
    done
done

echo
fmt='%-9s %5s %-16s %9s %6s %8s %8s %9s %8s %8s %10s %8s %8s %7s\n'
# shellcheck disable=SC2059 # the format is a constant
printf "$fmt" workload depth side rps ratio p50ms p99ms cpu_us/rq user_us sys_us rq/s/core \
    m_us/rq r_us/rq r_share
for row in "${results[@]}"; do
    read -r workload depth side rps d_rps p50 p99 cpu usr sys m_us r_us <<<"$row"
    ratio=- per_core=- share=-
    if [[ $m_us != - ]]; then
        share=$(awk -v m="$m_us" -v r="$r_us" 'BEGIN { if (m + r > 0) printf "%.0f%%", 100 * r / (m + r); else print "-" }')
    fi
    if [[ $side != direct && $d_rps != ERR && $rps != ERR ]]; then
        ratio=$(awk -v a="$rps" -v b="$d_rps" 'BEGIN { printf "%.2f", a / b }')
    fi
    if [[ $cpu != - ]]; then
        per_core=$(awk -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", 1e6 / c; else print "-" }')
    fi
    # shellcheck disable=SC2059
    printf "$fmt" "$workload" "$depth" "$side" "$rps" "$ratio" "$p50" "$p99" "$cpu" "$usr" \
        "$sys" "$per_core" "$m_us" "$r_us" "$share"
done
echo
echo "rps: requests/s (MSET rows: MSET commands/s, 10 keys each). ratio: rps / the direct row's."
echo "p50/p99: latency percentiles in ms (worst of concurrent runs)."
echo "cpu_us/rq = user_us + sys_us: the proxy process's CPU time per request (/proc/PID/stat);"
echo "rq/s/core = 1e6 / cpu_us/rq."
echo "m_us/rq, r_us/rq: CPU time of the masters / of the replicas (together) per request;"
echo "r_share = r / (m + r): the replicas' part of the nodes' CPU."
[[ $READ_FROM == compare ]] && echo "slotproxy/master, slotproxy/prefer: the proxy with read_from master / prefer-replica (switched live)."
echo "mset: direct MSETs are single-slot (per-node tag); proxy MSETs span ~10 slots and split."
