#!/usr/bin/env bash
# relay-vs-postfix.sh — side-by-side relay benchmark, on one machine, in one run:
#
#   1. ceiling:  source -> sink directly
#   2. corepost: source -> corepost (durable spool) -> sink   (skipped until `corepost run` exists)
#   3. postfix:  source -> Postfix (durable spool)  -> sink   (a throwaway instance, no DNS)
#
# and prints messages/s end to end, the end-to-end latency (when the sink can read the source's
# timestamp header), CPU seconds per message for the MTA, and the ratios corepost/Postfix and
# corepost/ceiling. With --pairings it instead runs the four direct pairings of
# {corepost-source, smtp-source} x {corepost-sink, smtp-sink}, so our tools can be checked
# against Postfix's.
#
# Every server runs in a loopback-only network namespace (unshare -n; ip link set lo up): no DNS
# and no traffic leaves the machine. Every process the script starts is stopped by PID.
#
# Usage: benches/relay-vs-postfix.sh [options]
#   -m N              messages (default 20000)
#   -l SIZE           body size, e.g. 4k (default 4k)
#   -s N              concurrent sessions (default 20)
#   -r N              recipients per message (default 1)
#   --domain-mix MIX  recipient domain mix for corepost-source, e.g. gmail.test=40,yahoo.test=30,tail:10000=30;
#                     the MTAs then route by DNS: a loopback name server (127.0.0.1:53, corepost's
#                     test server, target/release/examples/bench_dns) gives each domain an MX host
#                     with its own address in 127.1.0.0/16, the sink listens on 0.0.0.0:25, and
#                     /etc/resolv.conf is replaced inside a private mount namespace for Postfix
#   --postfix-tools   drive the load with Postfix's smtp-source and smtp-sink instead of ours
#   --no-reuse        one connection per message (default: -d, connections reused)
#   --pipelining      corepost-source pipelines MAIL, RCPT and DATA (RFC 2920), as MTAs do;
#                     the default is one command per round trip, as smtp-source
#   --pairings        run the four source/sink pairings instead of the relay comparison
#   --accept          acceptance only: source -> MTA, whose transports discard (Postfix) or which
#                     only queues (corepost); measures smtpd + durable queueing
#   --timeout SECS    give up on a leg after this long (default 300)
#   --keep            keep the temporary directory (logs, configs, JSON reports)
#   --no-build        use the release binaries already in target/release
#   --corepost-cf 'NAME = VALUE'  an extra main.cf line for corepost (repeatable), e.g.
#                     'smtp_connection_cache_on_demand = no' for a new outbound connection per message
#   --no-postfix      skip the Postfix leg (ceiling and corepost only, e.g. for paired runs)
#   --bin DIR         take corepost and the load tools from DIR (default target/release)
#   --syscalls        perf stat on corepost during its leg: syscalls and context switches per
#                     message, the most frequent syscalls by name (costs corepost some CPU)
#   --record FILE     perf record -g of corepost during its leg into FILE (a --profile
#                     profiling build via --bin target/profiling has the symbols); with
#                     $PERF_EVENTS set (e.g. io_uring:io_uring_submit_req) those events
#                     instead, for `perf script`
# Needs root (network namespace, Postfix), Postfix installed (postfix, postconf, smtp-source,
# smtp-sink), jq, and GNU time.
set -euo pipefail

MESSAGES=20000
SIZE=4k
SESSIONS=20
RCPTS=1
DOMAIN_MIX=""
TOOLS=corepost
REUSE=1
PIPELINING=0
MODE=relay
TIMEOUT=300
KEEP=0
BUILD=1
POSTFIX_LEG=1
BIN_DIR=""
PERF_MODE=""
RECORD=""
COREPOST_CF=""
ARGS=("$@")
while (($#)); do
    case "$1" in
        -m) MESSAGES=$2; shift 2 ;;
        -l) SIZE=$2; shift 2 ;;
        -s) SESSIONS=$2; shift 2 ;;
        -r) RCPTS=$2; shift 2 ;;
        --domain-mix) DOMAIN_MIX=$2; shift 2 ;;
        --postfix-tools) TOOLS=postfix; shift ;;
        --no-reuse) REUSE=0; shift ;;
        --pipelining) PIPELINING=1; shift ;;
        --pairings) MODE=pairings; shift ;;
        --accept) MODE=accept; shift ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-postfix) POSTFIX_LEG=0; shift ;;
        --corepost-cf) COREPOST_CF+="$2"$'\n'; shift 2 ;;
        --syscalls) PERF_MODE=stat; shift ;;
        --record) PERF_MODE=record; RECORD=$(realpath -m "$2"); shift 2 ;;
        --bin) BIN_DIR=$(cd "$2" && pwd); BUILD=0; shift 2 ;;
        -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
        *) echo "relay-vs-postfix: unknown option $1" >&2; exit 2 ;;
    esac
done

if ((PIPELINING)) && [[ $TOOLS == postfix ]]; then
    echo "relay-vs-postfix: --pipelining needs corepost-source (smtp-source does not pipeline)" >&2
    exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN_DIR:-$REPO/target/release}

# Build outside the namespace (cargo may need the network for the registry index).
if [[ -z "${COREPOST_BENCH_NETNS:-}" ]]; then
    if ((BUILD)); then
        (cd "$REPO" && cargo build --release -q -p corepost-benches --bins) >&2
        (cd "$REPO" && cargo build --release -q -p corepost) >&2 ||
            echo "relay-vs-postfix: corepost does not build; its leg will be skipped" >&2
        if [[ -n "$DOMAIN_MIX" ]]; then
            (cd "$REPO" && cargo build --release -q -p corepost --example bench_dns) >&2
        fi
    fi
    exec unshare -n -m env COREPOST_BENCH_NETNS=1 COREPOST_BENCH_CMD="benches/relay-vs-postfix.sh ${ARGS[*]}" \
        "$0" "${ARGS[@]}" --no-build
fi
ip link set lo up

SIZE_BYTES=$(numfmt --from=iec "${SIZE^^}" 2>/dev/null || echo "$SIZE")
TMP=$(mktemp -d /tmp/relay-bench.XXXXXX)
chmod 755 "$TMP" # Postfix's unprivileged processes must reach their queue below it.
PIDS=()
POSTFIX_DIR=""
cleanup() {
    if [[ -n "$POSTFIX_DIR" ]]; then postfix -c "$POSTFIX_DIR/etc" stop >/dev/null 2>&1 || true; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n "$POSTFIX_DIR" && -f "$POSTFIX_DIR/queue/pid/master.pid" ]]; then
        pid=$(tr -d ' ' <"$POSTFIX_DIR/queue/pid/master.pid")
        kill "$pid" 2>/dev/null || true
    fi
    if ((KEEP)); then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

SINK_PORT=22525
SINK_HOST=127.0.0.1
MTA_PORT=22526
if [[ -n "$DOMAIN_MIX" && $MODE == relay ]]; then
    # Delivery by MX: every domain's mail host is an address in 127.1.0.0/16 on port 25.
    SINK_PORT=25
    SINK_HOST=0.0.0.0
    echo "nameserver 127.0.0.1" >"$TMP/resolv.conf"
    mount --bind "$TMP/resolv.conf" /etc/resolv.conf
    "$BIN/examples/bench_dns" 127.0.0.1:53 "$DOMAIN_MIX" 2>"$TMP/dns.err" &
    PIDS+=("$!")
    for _ in $(seq 1 200); do grep -q domains "$TMP/dns.err" && break; sleep 0.05; done
    grep -q domains "$TMP/dns.err" || { cat "$TMP/dns.err" >&2; exit 1; }
fi
HZ=$(getconf CLK_TCK)

wait_port() { # PORT: wait until something listens there
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "relay-vs-postfix: nothing listens on port $1" >&2
    return 1
}

now() { date +%s.%N; }

tree_cpu() { # PID: CPU seconds of the process, its reaped children and its live descendants
    local total=0 pid
    for pid in $1 $(pgrep -P "$1" 2>/dev/null || true); do
        # Fields 14-17 of /proc/PID/stat: utime stime cutime cstime (after the ")" of comm).
        local t
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12+$13+$14+$15}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# start_sink KIND LEG [QUIT]: a sink on SINK_PORT; with QUIT=1 it exits after MESSAGES messages.
start_sink() {
    local kind=$1 leg=$2 quit=()
    [[ ${3:-0} == 1 ]] && quit=(-M "$MESSAGES")
    if [[ $kind == corepost ]]; then
        "$BIN/corepost-sink" "$SINK_HOST:$SINK_PORT" 1024 "${quit[@]}" --json \
            >"$TMP/sink-$leg.out" 2>"$TMP/sink-$leg.err" &
    else
        smtp-sink -u postfix "${quit[@]}" "$SINK_HOST:$SINK_PORT" 1024 \
            >"$TMP/sink-$leg.out" 2>&1 &
    fi
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_port "$SINK_PORT"
}

# start_source KIND PORT LEG: the load, in the background, under GNU time.
start_source() {
    local kind=$1 port=$2 leg=$3 reuse=()
    ((REUSE)) && reuse=(-d)
    if [[ $kind == corepost ]]; then
        local mix=()
        [[ -n "$DOMAIN_MIX" ]] && mix=(--domain-mix "$DOMAIN_MIX")
        ((PIPELINING)) && mix+=(--pipelining)
        /usr/bin/time -f '%e %U %S' -o "$TMP/source-$leg.time" \
            "$BIN/corepost-source" -q --json -m "$MESSAGES" -s "$SESSIONS" -r "$RCPTS" -l "$SIZE_BYTES" \
            "${reuse[@]}" "${mix[@]}" -f sender@source.test -t rcpt@dest.test "127.0.0.1:$port" \
            >"$TMP/source-$leg.json" 2>"$TMP/source-$leg.err" &
    else
        /usr/bin/time -f '%e %U %S' -o "$TMP/source-$leg.time" \
            smtp-source -m "$MESSAGES" -s "$SESSIONS" -r "$RCPTS" -l "$SIZE_BYTES" "${reuse[@]}" \
            -f sender@source.test -t rcpt@dest.test "127.0.0.1:$port" \
            >"$TMP/source-$leg.out" 2>&1 &
    fi
    SOURCE_PID=$!
    PIDS+=("$SOURCE_PID")
}

# wait_sink LEG T0: wait (bounded) for the sink to exit after the last message; sets RATE.
wait_sink() {
    local leg=$1 t0=$2 deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$SINK_PID" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            echo "relay-vs-postfix: $leg: timed out after ${TIMEOUT}s" >&2
            kill "$SINK_PID" "$SOURCE_PID" 2>/dev/null || true
            RATE=0
            return 1
        fi
        sleep 0.02
    done
    local t1
    t1=$(now)
    wait "$SINK_PID" 2>/dev/null || true
    wait "$SOURCE_PID" 2>/dev/null || true
    RATE=$(echo "$MESSAGES / ($t1 - $t0)" | bc -l)
    # corepost-sink prints its listening line, then the JSON summary as the last line.
    tail -n 1 "$TMP/sink-$leg.out" >"$TMP/sink-$leg.json"
}

# Result rows: leg|source|sink|e2e msg/s|source msg/s|source CPU s|e2e p50 ms|e2e p99 ms|MTA CPU s
ROWS=()
record_row() {
    local leg=$1 src=$2 sink=$3 mta_cpu=${4:--}
    local el us sy src_rate src_cpu p50=- p99=-
    read -r el us sy < <(tail -n 1 "$TMP/source-$leg.time")
    src_cpu=$(echo "$us + $sy" | bc -l)
    if [[ $src == corepost ]]; then
        src_rate=$(jq -r .msgs_per_sec "$TMP/source-$leg.json")
    else
        src_rate=$(echo "$MESSAGES / $el" | bc -l)
    fi
    if [[ $sink == corepost ]] && [[ $(jq -r .e2e_latency_us.count "$TMP/sink-$leg.json") != 0 ]]; then
        p50=$(jq -r '.e2e_latency_us.p50 / 1000' "$TMP/sink-$leg.json")
        p99=$(jq -r '.e2e_latency_us.p99 / 1000' "$TMP/sink-$leg.json")
    fi
    ROWS+=("$leg|$src|$sink|$RATE|$src_rate|$src_cpu|$p50|$p99|$mta_cpu")
}

# wait_source LEG T0: direct runs end when the source has had every message acknowledged by the
# sink; then the sink is stopped (corepost-sink prints its summary on SIGTERM). Sets RATE.
wait_source() {
    wait_accept "$1" "$2"
    kill -TERM "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    tail -n 1 "$TMP/sink-$1.out" >"$TMP/sink-$1.json"
}

leg_direct() { # LEG SOURCE SINK
    local leg=$1 src=$2 sink=$3
    start_sink "$sink" "$leg"
    local t0
    t0=$(now)
    start_source "$src" "$SINK_PORT" "$leg"
    wait_source "$leg" "$t0"
    record_row "$leg" "$src" "$sink"
}

# route_cf: main.cf lines for the route to the sink: the relayhost, or DNS with --domain-mix.
route_cf() {
    if [[ -n "$DOMAIN_MIX" ]]; then
        echo "smtp_dns_support_level = enabled"
    else
        printf 'relayhost = [127.0.0.1]:%s\nsmtp_dns_support_level = disabled\n' "$SINK_PORT"
    fi
}

setup_postfix() {
    POSTFIX_DIR=$TMP/postfix
    mkdir -p "$POSTFIX_DIR/etc" "$POSTFIX_DIR/queue" "$POSTFIX_DIR/data"
    chown postfix "$POSTFIX_DIR/data"
    cat >"$POSTFIX_DIR/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $POSTFIX_DIR/queue
data_directory = $POSTFIX_DIR/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
$(route_cf)
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = $POSTFIX_DIR/maillog
maillog_file_prefixes = $TMP
biff = no
EOF
    # Debian's master.cf with the SMTP server on our port and no chroot (the temporary queue
    # has no chroot environment).
    awk -v port="$MTA_PORT" '
        /^#/ || /^[ \t]/ || NF < 8 { print; next }
        $1 == "smtp" && $2 == "inet" { $1 = "127.0.0.1:" port }
        { $5 = "n"; print }' /etc/postfix/master.cf >"$POSTFIX_DIR/etc/master.cf"
    postfix -c "$POSTFIX_DIR/etc" check >"$TMP/postfix-check.log" 2>&1 || {
        cat "$TMP/postfix-check.log" >&2
        return 1
    }
}

leg_postfix() {
    local src=$1 sink=$2
    setup_postfix
    start_sink "$sink" postfix 1
    postfix -c "$POSTFIX_DIR/etc" start >"$TMP/postfix-start.log" 2>&1
    wait_port "$MTA_PORT"
    local master
    master=$(tr -d ' ' <"$POSTFIX_DIR/queue/pid/master.pid")
    PIDS+=("$master")
    local cpu0 t0
    cpu0=$(tree_cpu "$master")
    t0=$(now)
    start_source "$src" "$MTA_PORT" postfix
    wait_sink postfix "$t0" || true
    local cpu1
    cpu1=$(tree_cpu "$master")
    postfix -c "$POSTFIX_DIR/etc" stop >/dev/null 2>&1 || true
    POSTFIX_DIR=""
    record_row postfix "$src" "$sink" "$(echo "($cpu1 - $cpu0) / $HZ" | bc -l)"
}

# Set to 1 when corepost delivers (the queue manager and SMTP client); until then it accepts
# and queues but never reaches the sink, and the relay leg would only time out.
COREPOST_DELIVERS=1

leg_corepost() {
    local src=$1 sink=$2
    if ((!COREPOST_DELIVERS)); then
        echo "corepost leg skipped: corepost accepts and queues but does not deliver yet (see --accept)"
        return 0
    fi
    local dir=$TMP/corepost
    mkdir -p "$dir/etc" "$dir/queue"
    cat >"$dir/etc/main.cf" <<EOF
queue_directory = $dir/queue
myhostname = relay.bench.test
mydestination =
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
$(route_cf)
${DOMAIN_MIX:+corepost_dns_servers = 127.0.0.1:53}
smtpd_peername_lookup = no
corepost_fsync_policy = always
$COREPOST_CF
EOF
    cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$MTA_PORT inet n - n - - smtpd
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
EOF
    start_sink "$sink" corepost 1
    "$BIN/corepost" run -c "$dir/etc" >"$TMP/corepost.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$MTA_PORT"
    local perf=""
    if [[ $PERF_MODE == stat ]]; then
        # Attaching to every syscall tracepoint takes seconds on a loaded machine: perf starts
        # with its counters off and the load waits for the acknowledgement of "enable".
        mkfifo "$TMP/perf.ctl" "$TMP/perf.ack"
        perf stat -x, -o "$TMP/perf.csv" -e 'raw_syscalls:sys_enter,context-switches,syscalls:sys_enter_*' \
            -D -1 --control "fifo:$TMP/perf.ctl,$TMP/perf.ack" -p "$pid" 2>"$TMP/perf.err" &
        perf=$!
        exec {ctl}>"$TMP/perf.ctl" {ack}<"$TMP/perf.ack"
        echo enable >&"$ctl"
        read -r -t 60 _ <&"$ack" || echo "relay-vs-postfix: perf did not start counting" >&2
    elif [[ $PERF_MODE == record ]]; then
        if [[ -n ${PERF_EVENTS:-} ]]; then
            perf record -g -e "$PERF_EVENTS" -o "$RECORD" -p "$pid" 2>"$TMP/perf.err" &
        else
            perf record -g -o "$RECORD" -p "$pid" 2>"$TMP/perf.err" &
        fi
        perf=$!
        sleep 0.5
    fi
    local cpu0 t0
    cpu0=$(tree_cpu "$pid")
    t0=$(now)
    start_source "$src" "$MTA_PORT" corepost
    wait_sink corepost "$t0" || true
    local cpu1
    cpu1=$(tree_cpu "$pid")
    if [[ -n $perf ]]; then
        [[ $PERF_MODE == stat ]] && exec {ctl}>&- {ack}<&-
        kill -INT "$perf"
        wait "$perf" 2>/dev/null || true
    fi
    # Memory: the resident set after the run and its peak (destinations, cached connections).
    if [[ -n ${URING_FDINFO:-} ]]; then # debugging: corepost's io_uring instances after the run
        for fd in /proc/$pid/fd/*; do
            [[ $(readlink "$fd") == *io_uring* ]] && cat "/proc/$pid/fdinfo/${fd##*/}"
        done >"$TMP/uring-fdinfo.txt" 2>/dev/null || true
    fi
    COREPOST_RSS=$(awk '/^VmRSS|^VmHWM/ {printf "%s %s MB  ", $1, $2 / 1024}' "/proc/$pid/status")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    record_row corepost "$src" "$sink" "$(echo "($cpu1 - $cpu0) / $HZ" | bc -l)"
}

# wait_accept LEG T0: acceptance legs end when the source has had every message acknowledged
# by the MTA. Sets RATE.
wait_accept() {
    local leg=$1 t0=$2 deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$SOURCE_PID" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            echo "relay-vs-postfix: $leg: timed out after ${TIMEOUT}s" >&2
            kill "$SOURCE_PID" 2>/dev/null || true
            break
        fi
        sleep 0.01
    done
    local t1
    t1=$(now)
    wait "$SOURCE_PID" 2>/dev/null || true
    RATE=$(echo "$MESSAGES / ($t1 - $t0)" | bc -l)
}

leg_accept_corepost() {
    local src=$1 dir=$TMP/corepost-accept
    mkdir -p "$dir/etc"
    cat >"$dir/etc/main.cf" <<EOF
queue_directory = $dir/queue
myhostname = mx.bench.test
mydestination =
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
corepost_fsync_policy = always
maillog_file = $dir/maillog
maillog_file_prefixes = $TMP
EOF
    echo "127.0.0.1:$MTA_PORT inet n - n - - smtpd" >"$dir/etc/master.cf"
    "$BIN/corepost" run -c "$dir/etc" >"$TMP/corepost-accept.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$MTA_PORT"
    local cpu0 t0 cpu1
    cpu0=$(tree_cpu "$pid")
    t0=$(now)
    start_source "$src" "$MTA_PORT" corepost
    wait_accept corepost "$t0"
    cpu1=$(tree_cpu "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    record_row corepost "$src" none "$(echo "($cpu1 - $cpu0) / $HZ" | bc -l)"
}

leg_accept_postfix() {
    local src=$1
    setup_postfix
    # Deliver nothing: every transport discards, as corepost's queue-only run does.
    printf 'default_transport = discard\nrelay_transport = discard\n' >>"$POSTFIX_DIR/etc/main.cf"
    postfix -c "$POSTFIX_DIR/etc" start >"$TMP/postfix-start.log" 2>&1
    wait_port "$MTA_PORT"
    local master cpu0 t0 cpu1
    master=$(tr -d ' ' <"$POSTFIX_DIR/queue/pid/master.pid")
    PIDS+=("$master")
    cpu0=$(tree_cpu "$master")
    t0=$(now)
    start_source "$src" "$MTA_PORT" postfix
    wait_accept postfix "$t0"
    cpu1=$(tree_cpu "$master")
    postfix -c "$POSTFIX_DIR/etc" stop >/dev/null 2>&1 || true
    POSTFIX_DIR=""
    record_row postfix "$src" none "$(echo "($cpu1 - $cpu0) / $HZ" | bc -l)"
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(postconf -h mail_version 2>/dev/null | sed 's/^/Postfix /')"
echo "# ${COREPOST_BENCH_CMD:-benches/relay-vs-postfix.sh ${ARGS[*]}}"
echo "# workload: $MESSAGES messages, body $SIZE, $SESSIONS sessions, $RCPTS recipient(s)/message, reuse=$REUSE, pipelining=$PIPELINING${DOMAIN_MIX:+, domains $DOMAIN_MIX}, tools=$TOOLS"

if [[ $MODE == pairings ]]; then
    for src in corepost postfix; do
        for sink in corepost postfix; do
            leg_direct "$src-to-$sink" "$src" "$sink"
        done
    done
    echo
    echo "| source | sink | end-to-end msg/s | source-side msg/s | source CPU s | source CPU µs/msg |"
    echo "|---|---|---|---|---|---|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r _ src sink rate src_rate src_cpu _ _ _ <<<"$row"
        name() { [[ $1 == corepost ]] && echo "corepost-$2" || echo "smtp-$2"; }
        printf '| %s | %s | %.0f | %.0f | %.2f | %.1f |\n' "$(name "$src" source)" "$(name "$sink" sink)" \
            "$rate" "$src_rate" "$src_cpu" "$(echo "$src_cpu * 1000000 / $MESSAGES" | bc -l)"
    done
    exit 0
fi

if [[ $MODE == accept ]]; then
    leg_accept_corepost "$TOOLS"
    leg_accept_postfix "$TOOLS"
    echo
    echo "| MTA | accepted msg/s | source p50 ms | source p99 ms | MTA CPU s | MTA CPU ms/msg |"
    echo "|---|---|---|---|---|---|"
    declare -A ACC
    for row in "${ROWS[@]}"; do
        IFS='|' read -r leg src _ rate _ _ _ _ mta_cpu <<<"$row"
        ACC[$leg]=$rate
        p50=- p99=-
        if [[ $src == corepost ]]; then
            p50=$(jq -r '.latency_us.transaction.p50 / 1000' "$TMP/source-$leg.json")
            p99=$(jq -r '.latency_us.transaction.p99 / 1000' "$TMP/source-$leg.json")
        fi
        printf '| %s | %.0f | %s | %s | %.2f | %.3f |\n' "$leg" "$rate" "$p50" "$p99" "$mta_cpu" \
            "$(echo "$mta_cpu * 1000 / $MESSAGES" | bc -l)"
    done
    echo
    printf 'corepost/Postfix: %.2f\n' "$(echo "${ACC[corepost]} / ${ACC[postfix]}" | bc -l)"
    exit 0
fi

leg_direct ceiling "$TOOLS" "$TOOLS"
leg_corepost "$TOOLS" "$TOOLS"
((POSTFIX_LEG)) && leg_postfix "$TOOLS" "$TOOLS"

echo
echo "| leg | end-to-end msg/s | e2e p50 ms | e2e p99 ms | MTA CPU s | MTA CPU ms/msg |"
echo "|---|---|---|---|---|---|"
declare -A RATE_OF
for row in "${ROWS[@]}"; do
    IFS='|' read -r leg _ _ rate _ _ p50 p99 mta_cpu <<<"$row"
    RATE_OF[$leg]=$rate
    per_msg=-
    if [[ $mta_cpu != - ]]; then
        per_msg=$(printf '%.3f' "$(echo "$mta_cpu * 1000 / $MESSAGES" | bc -l)")
        mta_cpu=$(printf '%.2f' "$mta_cpu")
    fi
    printf '| %s | %.0f | %s | %s | %s | %s |\n' "$leg" "$rate" "$p50" "$p99" "$mta_cpu" "$per_msg"
done
echo
[[ -n "${COREPOST_RSS:-}" ]] && echo "corepost memory: $COREPOST_RSS"
if [[ $PERF_MODE == stat && -f $TMP/perf.csv ]]; then
    awk -F, -v n="$MESSAGES" '
        $3 == "raw_syscalls:sys_enter" { printf "corepost syscalls/msg %.2f", $1 / n }
        $3 == "context-switches" { printf ", context switches/msg %.2f\n", $1 / n }' "$TMP/perf.csv"
    awk -F, -v n="$MESSAGES" '$3 ~ /^syscalls:sys_enter_/ && $1 + 0 > n / 100 {
            sub("syscalls:sys_enter_", "", $3); printf "%s %.2f\n", $3, $1 / n }' "$TMP/perf.csv" |
        sort -k2 -nr | tr '\n' ' ' | sed 's/^/  /; s/ $/\n/'
fi
if [[ -f $TMP/corepost.log ]]; then
    # Outbound connections: deliveries over a fresh connection (no conn_use=) and reused ones.
    awk '/status=sent/ { if (/conn_use=/) reused++; else fresh++ }
        END { printf "corepost deliveries: %d over new connections, %d over reused ones\n", fresh, reused }' \
        "$TMP/corepost.log"
fi
if [[ -z "${RATE_OF[postfix]:-}" ]]; then
    printf 'corepost/ceiling: %.2f\n' "$(echo "${RATE_OF[corepost]} / ${RATE_OF[ceiling]}" | bc -l)"
elif [[ -n "${RATE_OF[corepost]:-}" ]]; then
    printf 'corepost/Postfix: %.2f   corepost/ceiling: %.2f\n' \
        "$(echo "${RATE_OF[corepost]} / ${RATE_OF[postfix]}" | bc -l)" \
        "$(echo "${RATE_OF[corepost]} / ${RATE_OF[ceiling]}" | bc -l)"
else
    printf 'corepost/Postfix: n/a   corepost/ceiling: n/a   (Postfix/ceiling: %.2f)\n' \
        "$(echo "${RATE_OF[postfix]} / ${RATE_OF[ceiling]}" | bc -l)"
fi
