#!/usr/bin/env bash
# spool-cost.sh — what one relayed message costs corepost, counted rather than timed: the corepost
# leg of relay-vs-postfix.sh (corepost-source -> corepost -> corepost-sink, loopback-only network
# namespace), with `perf stat` attached to `corepost run` for the load (all its threads, including
# io_uring workers it starts meanwhile) and `perf record` of the block I/O its threads submit.
#
# Prints one line per run: sink msg/s, and per message: corepost CPU ms (perf's task-clock, and
# utime+stime from /proc/PID/stat, which also covers threads perf may miss), context
# switches, file syncs (ext4_sync_file: the group commits, however issued), syscalls (all, and pwrite/futex/io_uring_enter/msync/fdatasync/sendto/recvfrom/write),
# KiB of block writes its threads submitted (the syncs' writeback, the spare segments' zeros —
# writes issued by io_uring's kernel workers are not seen;
# not /proc/PID/io's write_bytes, which counts a whole large folio for a 4 KiB write into it) —
# and the same run's ceiling (source -> sink directly) for the ratio.
#
# Usage: benches/spool-cost.sh [-m N] [-s SESSIONS] [-r RCPTS] [-l BYTES] [--policy always|never]
#                              [--bin DIR] [--no-ceiling] [--pipelining] [--profile FILE]
# --profile FILE also records call graphs of corepost (`perf record -g`) into FILE for `perf report`.
# Needs root (unshare -n, perf), a release build of corepost and corepost-benches.
set -euo pipefail

MESSAGES=40000
SESSIONS=20
RCPTS=1
SIZE=4096
POLICY=always
CEILING=1
PIPE=()
PROFILE=""
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO/target/release
ARGS=("$@")
while (($#)); do
    case "$1" in
        -m) MESSAGES=$2; shift 2 ;;
        -s) SESSIONS=$2; shift 2 ;;
        -r) RCPTS=$2; shift 2 ;;
        -l) SIZE=$2; shift 2 ;;
        --policy) POLICY=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --no-ceiling) CEILING=0; shift ;;
        --pipelining) PIPE=(--pipelining); shift ;;
        --profile) PROFILE=$(realpath -m "$2"); shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "spool-cost: unknown option $1" >&2; exit 2 ;;
    esac
done
NAME=spool-cost
# shellcheck source=benches/leg-lib.sh
source "$REPO/benches/leg-lib.sh"
enter_netns
make_scratch
SINK_PORT=32525
MTA_PORT=32526

source_to() { # PORT
    "$BIN/corepost-source" -q --json -m "$MESSAGES" -s "$SESSIONS" -r "$RCPTS" -l "$SIZE" -d \
        "${PIPE[@]}" -f s@source.test -t r@dest.test "127.0.0.1:$1" >"$TMP/source.json"
}

sink_rate() { # start a sink that quits after MESSAGES; wait for it; print its msg/s
    "$BIN/corepost-sink" "127.0.0.1:$SINK_PORT" 1024 -M "$MESSAGES" --json >"$TMP/sink.out" 2>/dev/null &
    echo $! >"$TMP/sink.pid"
}

ceiling=-
if ((CEILING)); then
    sink_rate
    wait_port "$SINK_PORT"
    source_to "$SINK_PORT"
    wait "$(cat "$TMP/sink.pid")" || true
    ceiling=$(tail -1 "$TMP/sink.out" | jq -r '.msgs_per_sec | floor')
fi

dir=$TMP/corepost
mkdir -p "$dir/etc"
cat >"$dir/etc/main.cf" <<EOF
queue_directory = $dir/q
myhostname = relay.bench.test
mydestination =
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK_PORT
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
corepost_fsync_policy = $POLICY
EOF
cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$MTA_PORT inet n - n - - smtpd
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
EOF
sink_rate
wait_port "$SINK_PORT"
"$BIN/corepost" run -c "$dir/etc" >"$TMP/corepost.log" 2>&1 &
pid=$!
PIDS+=("$pid")
wait_port "$MTA_PORT"
sleep 0.5
if ! kill -0 "$pid" 2>/dev/null; then
    cat "$TMP/corepost.log" >&2
    exit 1
fi
EVENTS=task-clock,context-switches,raw_syscalls:sys_enter,ext4:ext4_sync_file_enter
for s in pwrite64 futex io_uring_enter msync fdatasync sendto recvfrom write; do
    EVENTS+=",syscalls:sys_enter_$s"
done
proc_cpu() { sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'; } # utime+stime, all threads
cpu0=$(proc_cpu)
perf stat -x, -e "$EVENTS" -p "$pid" -o "$TMP/perf.csv" &
perf_pid=$!
perf record -q -e block:block_bio_queue -p "$pid" -o "$TMP/bio.data" 2>/dev/null &
bio_pid=$!
prof_pid=""
if [[ -n $PROFILE ]]; then
    perf record -q -g -p "$pid" -o "$PROFILE" 2>/dev/null &
    prof_pid=$!
fi
sleep 0.2
source_to "$MTA_PORT"
wait "$(cat "$TMP/sink.pid")" || true
cpu1=$(proc_cpu)
kill -INT "$perf_pid" "$bio_pid" $prof_pid
[[ -n $prof_pid ]] && { wait "$prof_pid" || true; }
wait "$perf_pid" || true
wait "$bio_pid" || true
# block_bio_queue lines: ... 254,0 WS 321827600 + 16 [comm]: sectors written.
disk=$(perf script -i "$TMP/bio.data" 2>/dev/null |
    awk -v n="$MESSAGES" '{for (i = 1; i < NF; i++) if ($i == "+" && $(i-2) ~ /W/) s += $(i+1)}
        END {printf "%.1f", s * 512 / 1024 / n}')
rate=$(tail -1 "$TMP/sink.out" | jq -r '.msgs_per_sec | floor')
per() { # EVENT: count per message, from perf's CSV
    awk -F, -v e="$1" -v n="$MESSAGES" '$3 == e {printf "%.2f", $1 / n}' "$TMP/perf.csv"
}
cpu=$(awk -F, -v n="$MESSAGES" '$3 == "task-clock" {printf "%.3f", $1 / n}' "$TMP/perf.csv")
printf 'policy=%s m=%s s=%s r=%s ceiling=%s corepost=%s ratio=%s cpu_ms=%s proc_cpu_ms=%s cs=%s syncs=%s syscalls=%s' \
    "$POLICY" "$MESSAGES" "$SESSIONS" "$RCPTS" "$ceiling" "$rate" \
    "$( [[ $ceiling == - ]] && echo - || echo "scale=2; $rate / $ceiling" | bc -l)" \
    "$cpu" "$(echo "scale=3; ($cpu1 - $cpu0) * 1000 / $(getconf CLK_TCK) / $MESSAGES" | bc -l)" \
    "$(per context-switches)" "$(per ext4:ext4_sync_file_enter)" "$(per raw_syscalls:sys_enter)"
for s in pwrite64 futex io_uring_enter msync fdatasync sendto recvfrom write; do
    printf ' %s=%s' "$s" "$(per "syscalls:sys_enter_$s")"
done
printf ' disk_kib=%s\n' "$disk"
