#!/usr/bin/env bash
# Load test: the tower-cdn edge server against nginx proxy_cache and Varnish.
#
# What it does
#   Starts a local origin (nginx serving one 64 KiB object with
#   "Cache-Control: public, max-age=3600" and an ETag), then three caches in
#   front of it, all on 127.0.0.1:
#     - tower-cdn (release build, default runtime), once with RUST_LOG=info
#       (its default: every request is logged to a file) and once with
#       RUST_LOG=warn (no per-request logging);
#     - nginx proxy_cache: 1 worker process, cache on tmpfs, keep-alive upstream;
#     - Varnish: malloc storage, one thread pool.
#   The same size (256 MiB) and TTL (the origin's max-age) everywhere.
#   Each cache is warmed and checked to answer from cache, then measured with
#     taskset -c $LOAD_CPU wrk -t1 -c$C -d$DURATION --latency http://127.0.0.1:PORT/object
#   while the cache runs pinned with taskset -c $SERVER_CPU. Servers are
#   alternated (A B C D A B C D ...) for $RUNS runs per connection count, in one
#   session, and a markdown table is printed: requests/s, p50 and p99 per run,
#   the median per server, and the ratios tower-cdn / nginx and / Varnish.
#   Everything it starts is stopped on exit (also on error or Ctrl-C); config,
#   pid, log and cache files live in a temp dir that is removed at the end.
#
# How to run it (from anywhere; as root, or with sudo available if the
# packages are missing):
#   benches/loadtest/run.sh
#   TOWER_CDN_BIN=target/release/tower-cdn CONNECTIONS="32 128" benches/loadtest/run.sh
#
# What it needs
#   Linux with at least 2 cores, bash, curl, taskset, and the Debian packages
#   nginx-light (or nginx), varnish and wrk (installed with apt-get if missing;
#   note that on a system with systemd, installing them may also start their
#   system services on port 80 / 6081: this script never uses those).
#   cargo, unless TOWER_CDN_BIN names an already built binary.
#
# Settings (environment variables)
#   TOWER_CDN_BIN  path of the tower-cdn binary [default: build it with
#                  cargo build --release --features server, honouring CARGO_TARGET_DIR]
#   SERVERS        which servers, in the order they alternate
#                  [default: "tower-cdn tower-cdn-warn nginx varnish"]
#   CONNECTIONS    wrk connection counts, e.g. "32 128" [default: 32]
#   RUNS           runs per server and connection count [default: 3]
#   DURATION       length of each wrk run [default: 15s]
#   WARMUP         length of an unrecorded wrk run per server first [default: 3s]
#   SERVER_CPU     core the servers are pinned to [default: 0]
#   LOAD_CPU       core wrk (and the origin) are pinned to [default: 1]
#   BASE_PORT      first of 5 consecutive loopback ports used [default: 38180]
#   RESULTS_DIR    where raw wrk outputs and the table are kept
#                  [default: a new /tmp/tower-cdn-loadtest.XXXXXX]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

SERVERS=${SERVERS:-"tower-cdn tower-cdn-warn nginx varnish"}
CONNECTIONS=${CONNECTIONS:-32}
RUNS=${RUNS:-3}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-38180}
OBJECT_SIZE=65536
OBJECT_PATH=/object

ORIGIN_PORT=$BASE_PORT
declare -A PORT=(
    [tower-cdn]=$((BASE_PORT + 1))
    [tower-cdn-warn]=$((BASE_PORT + 2))
    [nginx]=$((BASE_PORT + 3))
    [varnish]=$((BASE_PORT + 4))
)
declare -A PID=()

log() { printf '[loadtest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for server in $SERVERS; do
    [[ -n ${PORT[$server]:-} ]] || die "unknown server '$server' (tower-cdn, tower-cdn-warn, nginx, varnish)"
done
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 && $RUNS -le 50 ]] || die "RUNS must be 1..50"
for c in $CONNECTIONS; do
    [[ $c =~ ^[0-9]+$ && $c -ge 1 && $c -le 10000 ]] || die "bad connection count '$c'"
done

# ---------------------------------------------------------------- packages
need_packages=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_packages+=(nginx-light)
command -v varnishd >/dev/null 2>&1 || [[ -x /usr/sbin/varnishd ]] || need_packages+=(varnish)
command -v wrk >/dev/null 2>&1 || need_packages+=(wrk)
if ((${#need_packages[@]})); then
    log "installing ${need_packages[*]} with apt-get"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${need_packages[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx varnishd wrk curl taskset; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

# ---------------------------------------------------------------- tower-cdn
if [[ -z ${TOWER_CDN_BIN:-} ]]; then
    log "building tower-cdn (cargo build --release --features server)"
    (cd "$REPO" && cargo build --release --features server --bin tower-cdn)
    TOWER_CDN_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/tower-cdn
    BUILT_FROM="built here from commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        BUILT_FROM+=" with local changes"
    fi
else
    BUILT_FROM="prebuilt, given by TOWER_CDN_BIN"
fi
[[ -x $TOWER_CDN_BIN ]] || die "no tower-cdn binary at $TOWER_CDN_BIN"
TOWER_CDN_BIN=$(cd "$(dirname "$TOWER_CDN_BIN")" && pwd)/$(basename "$TOWER_CDN_BIN")

# ---------------------------------------------------------------- work dir
# On tmpfs when there is one, so that nginx's cache is memory-backed like the others'.
if [[ -d /dev/shm && -w /dev/shm ]]; then
    WORK=$(mktemp -d /dev/shm/tower-cdn-loadtest.XXXXXX)
else
    WORK=$(mktemp -d /tmp/tower-cdn-loadtest.XXXXXX)
fi
chmod 755 "$WORK" # nginx workers and Varnish drop to other users and must reach it
RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d /tmp/tower-cdn-loadtest-results.XXXXXX)}
mkdir -p "$RESULTS_DIR"

stop_pid() { # pid name: SIGTERM, wait up to 10 s, then SIGKILL
    local pid=$1 name=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name ($pid) did not stop on SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    for name in "${!PID[@]}"; do
        stop_pid "${PID[$name]}" "$name"
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for p in "$ORIGIN_PORT" "${PORT[@]}"; do
    port_free "$p" || die "port $p is in use (set BASE_PORT)"
done

fill() { # template output
    sed -e "s|@WORK@|$WORK|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
        -e "s|@PORT@|${PORT[nginx]}|g" "$1" >"$2"
}

wait_http() { # url name pid: up to 10 s for any HTTP answer
    local url=$1 name=$2 pid=$3 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start (logs in $WORK were: $(tail -n 5 "$WORK/$name.log" 2>/dev/null))"
        curl -s -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    die "$name did not answer on $url within 10 s"
}

# ---------------------------------------------------------------- origin
mkdir -p "$WORK/origin-root" "$WORK/origin-tmp" "$WORK/nginx-tmp"
head -c "$OBJECT_SIZE" /dev/urandom >"$WORK/origin-root${OBJECT_PATH}"
chmod 644 "$WORK/origin-root${OBJECT_PATH}"
fill "$HERE/origin.nginx.conf.in" "$WORK/origin.conf"
taskset -c "$LOAD_CPU" nginx -e "$WORK/origin.error.log" -p "$WORK" -c "$WORK/origin.conf" \
    >"$WORK/origin.log" 2>&1 &
PID[origin]=$!
wait_http "http://127.0.0.1:$ORIGIN_PORT$OBJECT_PATH" origin "${PID[origin]}"
origin_headers=$(curl -s -D - -o /dev/null "http://127.0.0.1:$ORIGIN_PORT$OBJECT_PATH")
grep -qi '^cache-control: public, max-age=3600' <<<"$origin_headers" || die "origin sends no Cache-Control"
grep -qi '^etag:' <<<"$origin_headers" || die "origin sends no ETag"

# ---------------------------------------------------------------- caches
start_server() { # name
    local name=$1 port=${PORT[$1]}
    case $name in
    tower-cdn | tower-cdn-warn)
        local level=info
        if [[ $name == tower-cdn-warn ]]; then level=warn; fi
        # stderr (the logs) goes to a file, appended so that it can be truncated between runs.
        RUST_LOG=$level taskset -c "$SERVER_CPU" "$TOWER_CDN_BIN" \
            --origin "http://127.0.0.1:$ORIGIN_PORT" --listen "127.0.0.1:$port" \
            >"$WORK/$name.out" 2>>"$WORK/$name.log" &
        ;;
    nginx)
        fill "$HERE/cache.nginx.conf.in" "$WORK/nginx.conf"
        taskset -c "$SERVER_CPU" nginx -e "$WORK/nginx.error.log" -p "$WORK" -c "$WORK/nginx.conf" \
            >"$WORK/$name.log" 2>&1 &
        ;;
    varnish)
        fill "$HERE/default.vcl.in" "$WORK/default.vcl"
        chmod 644 "$WORK/default.vcl"
        taskset -c "$SERVER_CPU" varnishd -F -n "$WORK/varnish" -a "127.0.0.1:$port" \
            -T none -f "$WORK/default.vcl" -s malloc,256m \
            -p thread_pools=1 -p thread_pool_min=200 -p thread_pool_max=1000 \
            >"$WORK/$name.log" 2>&1 &
        ;;
    esac
    PID[$name]=$!
    wait_http "http://127.0.0.1:$port/" "$name" "${PID[$name]}"
}

# Prints "hit" when the server answered from its cache, with the full object.
cache_state() { # name
    local name=$1 url="http://127.0.0.1:${PORT[$1]}$OBJECT_PATH" headers size
    headers=$(curl -s --max-time 5 -D - -o "$WORK/body" "$url") || { echo "error"; return; }
    size=$(stat -c %s "$WORK/body")
    [[ $size -eq $OBJECT_SIZE ]] || { echo "short body ($size bytes)"; return; }
    case $name in
    tower-cdn*) grep -qi '^x-cache: Hit from tower-cdn' <<<"$headers" ;;
    nginx) grep -qi '^x-cache-status: HIT' <<<"$headers" ;;
    varnish) grep -qi '^x-cache: HIT' <<<"$headers" ;;
    esac && echo hit || echo miss
}

warm() { # name: a few requests until the object is a hit
    local name=$1 i state=none
    for ((i = 0; i < 10; i++)); do
        state=$(cache_state "$name")
        [[ $state == hit ]] && return 0
        sleep 0.2
    done
    die "$name: object not served from cache after 10 requests (last: $state)"
}

proc_tree() { # pid: it and its children (nginx worker, Varnish child)
    echo "$1"
    pgrep -P "$1" 2>/dev/null || true
}

cpu_ticks() { # pids...: user+system clock ticks, threads included
    local total=0 pid fields
    for pid in "$@"; do
        fields=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + ${fields% *} + ${fields#* }))
    done
    echo "$total"
}

to_ms() { # wrk duration (850.00us, 1.23ms, 1.02s, 2.00m) -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0;
        else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000;
        printf "%.3f", n }'
}

median() { # numbers... -> median
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

CLK_TCK=$(getconf CLK_TCK)
duration_s() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /m$/) n *= 60; else if (v ~ /h$/) n *= 3600; print n }'; }

for server in $SERVERS; do
    log "starting $server on 127.0.0.1:${PORT[$server]}"
    start_server "$server"
    warm "$server"
done

# ---------------------------------------------------------------- machine
{
    echo "## Machine and versions"
    echo
    echo '```'
    lscpu | head -n 20
    echo "nproc: $(nproc); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "varnish: $(varnishd -V 2>&1 | head -n 1)"
    echo "wrk: $(wrk -v 2>&1 | head -n 1)"
    echo "tower-cdn: $("$TOWER_CDN_BIN" --version) ($TOWER_CDN_BIN, $BUILT_FROM)"
    for server in $SERVERS; do
        [[ $server == tower-cdn* ]] || continue
        echo "$server threads: $(cat /proc/"${PID[$server]}"/task/*/comm | sort | uniq -c | tr -s ' \n' ' ')"
    done
    echo "servers pinned to core $SERVER_CPU, wrk (and the origin) to core $LOAD_CPU"
    echo '```'
} | tee "$RESULTS_DIR/machine.md"

# ---------------------------------------------------------------- runs
declare -A RPS=() P50=() P99=() EFF=()
ROWS=()
secs=$(duration_s "$DURATION")

if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
    for server in $SERVERS; do
        log "warm-up: $server, $WARMUP"
        taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"$WARMUP" --timeout 5s \
            "http://127.0.0.1:${PORT[$server]}$OBJECT_PATH" >/dev/null
        if [[ $server == tower-cdn* ]]; then : >"$WORK/$server.log"; fi
    done
fi

for c in $CONNECTIONS; do
    for ((run = 1; run <= RUNS; run++)); do
        for server in $SERVERS; do
            url="http://127.0.0.1:${PORT[$server]}$OBJECT_PATH"
            out="$RESULTS_DIR/wrk-c$c-run$run-$server.txt"
            load=$(cut -d' ' -f1 /proc/loadavg)
            read -r -a pids <<<"$(proc_tree "${PID[$server]}" | tr '\n' ' ')"
            before=$(cpu_ticks "${pids[@]}")
            log "c=$c run $run/$RUNS: $server"
            taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"$DURATION" --timeout 5s --latency "$url" >"$out" 2>&1 ||
                die "wrk failed against $server: $(tail -n 3 "$out")"
            after=$(cpu_ticks "${pids[@]}")
            state=$(cache_state "$server")
            [[ $state == hit ]] || log "warning: $server answered '$state' after the run"
            rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
            p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
            p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
            errors=$(awk '/Socket errors:|Non-2xx/ { printf "%s%s", sep, $0; sep = "; " }' "$out" | tr -s ' ')
            cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.0f", 100 * t / hz / s }')
            # Requests per second of the server's own CPU time: on a shared machine the
            # server may not get its whole core, and this figure does not depend on that.
            requests=$(awk '/ requests in / { print $1 }' "$out")
            eff=$(awk -v n="$requests" -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { if (t > 0) printf "%.0f", n * hz / t; else print "nan" }')
            [[ -n $rps ]] || die "no Requests/sec in $out"
            RPS[$c,$server]+="$rps "
            P50[$c,$server]+="$p50 "
            P99[$c,$server]+="$p99 "
            EFF[$c,$server]+="$eff "
            ROWS+=("| $c | $run | $server | $rps | $p50 | $p99 | $cpu% | $eff | $load | ${errors:-none} |")
            if [[ $server == tower-cdn* ]]; then
                echo "$server log after c=$c run $run: $(stat -c %s "$WORK/$server.log") bytes" >>"$RESULTS_DIR/logsize.txt"
                : >"$WORK/$server.log" # keep the tmpfs small
            fi
            sleep 1
        done
    done
done

# ---------------------------------------------------------------- table
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
{
    echo
    echo "## Runs (wrk -t1 -c<C> -d$DURATION --latency, GET $OBJECT_PATH, $OBJECT_SIZE bytes, all cache hits)"
    echo
    echo "| conns | run | server | req/s | p50 ms | p99 ms | server CPU | req per CPU-s | load avg | errors |"
    echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "## Median of $RUNS runs"
    echo
    echo "| conns | server | req/s | p50 ms | p99 ms | req per CPU-s | req/s vs nginx | req/s vs Varnish | p99 vs nginx | p99 vs Varnish |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in $CONNECTIONS; do
        declare -A MR=() M50=() M99=() MEFF=()
        for server in $SERVERS; do
            # shellcheck disable=SC2086
            MR[$server]=$(median ${RPS[$c,$server]})
            # shellcheck disable=SC2086
            M50[$server]=$(median ${P50[$c,$server]})
            # shellcheck disable=SC2086
            M99[$server]=$(median ${P99[$c,$server]})
            # shellcheck disable=SC2086
            MEFF[$server]=$(median ${EFF[$c,$server]})
        done
        for server in $SERVERS; do
            rn="-" rv="-" pn="-" pv="-"
            if [[ $server == tower-cdn* ]]; then
                if [[ -n ${MR[nginx]:-} ]]; then
                    rn=$(ratio "${MR[$server]}" "${MR[nginx]}")
                    pn=$(ratio "${M99[$server]}" "${M99[nginx]}")
                fi
                if [[ -n ${MR[varnish]:-} ]]; then
                    rv=$(ratio "${MR[$server]}" "${MR[varnish]}")
                    pv=$(ratio "${M99[$server]}" "${M99[varnish]}")
                fi
            fi
            echo "| $c | $server | ${MR[$server]} | ${M50[$server]} | ${M99[$server]} | ${MEFF[$server]%.*} | $rn | $rv | $pn | $pv |"
        done
        unset MR M50 M99 MEFF
    done
    echo
    echo "tower-cdn: RUST_LOG=info (default; logs to a file), tower-cdn-warn: RUST_LOG=warn."
    echo "server CPU: user+system time of the server's processes over the run, in % of one core;"
    echo "req per CPU-s: requests served per second of that CPU time (less sensitive to other load)."
    echo "Load average at end: $(cut -d' ' -f1-3 /proc/loadavg). Raw wrk output: $RESULTS_DIR"
} | tee "$RESULTS_DIR/table.md"
