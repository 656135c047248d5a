#!/usr/bin/env bash
# idle-wakeups.sh — how often an idle corepost wakes up: starts `corepost run` with a minimal
# relay configuration (two cores, one smtpd on loopback, nothing queued), lets it settle, then
# over SECONDS prints each thread's voluntary and involuntary context switches (from
# /proc/PID/task/*/status: a voluntary one is a wake-up after a wait) and, unless --no-perf,
# the process's syscalls by name (perf stat on all its threads).
#
# Usage (as root, after `cargo build --release -p corepost`):
#   benches/idle-wakeups.sh [--bin DIR] [-t SECONDS] [--pickup] [--no-perf]
#   --bin DIR    take corepost from DIR (default target/release)
#   --pickup     with master.cf's pickup service (Postfix's default master.cf has one)
#   -t SECONDS   the idle span measured (default 10)
#   --no-perf    only the context switches: perf's tracepoints on every syscall, and its own
#                start, add switches of their own, so compare switch counts from such runs
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO/target/release SECS=10 PERF=1 PICKUP=0
ARGS=("$@")
while (($#)); do
    case "$1" in
        --bin) BIN=$(cd "$2" && pwd); shift 2 ;;
        -t) SECS=$2; shift 2 ;;
        --no-perf) PERF=0; shift ;;
        --pickup) PICKUP=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "idle-wakeups: unknown option $1" >&2; exit 2 ;;
    esac
done
NAME=idle-wakeups
# shellcheck source=benches/leg-lib.sh
source "$REPO/benches/leg-lib.sh"
enter_netns
make_scratch
DIR=$TMP PORT=32526
cat >"$DIR/main.cf" <<EOF
queue_directory = $DIR/queue
myhostname = relay.bench.test
mydestination =
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:9
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
corepost_cores = 2
corepost_fsync_policy = always
mail_owner = root
maillog_file = $DIR/maillog
maillog_file_prefixes = /tmp
EOF
printf '127.0.0.1:%s inet n - n - - smtpd\nsmtp unix - - n - - smtp\nrelay unix - - n - - smtp\n' \
    "$PORT" >"$DIR/master.cf"
((PICKUP)) && echo 'pickup unix n - n 60 1 pickup' >>"$DIR/master.cf"
"$BIN/corepost" run -c "$DIR" >"$DIR/run.out" 2>&1 &
MTA=$!
PIDS+=("$MTA")
wait_port "$PORT"
sleep 2 # the start settles (spare segments, first housekeeping)

switches() { # tid name voluntary involuntary, one line per thread
    for t in /proc/$MTA/task/*; do
        echo "${t##*/} $(cat "$t/comm") $(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' "$t/status")"
    done | sort
}
switches >"$DIR/before"
if ((PERF)); then
    perf stat -x, -o "$DIR/perf.csv" -e 'context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_*' \
        -p "$MTA" -- sleep "$SECS" 2>/dev/null
else
    sleep "$SECS"
fi
switches >"$DIR/after"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg); idle ${SECS}s, bin=$BIN, pickup=$PICKUP, perf=$PERF"
join "$DIR/before" "$DIR/after" |
    awk -v s="$SECS" '{v=$6-$3; n=$7-$4; tv+=v; tn+=n; printf "%-8s %-16s voluntary %6d (%.1f/s)  involuntary %4d\n", $1, $2, v, v/s, n}
                      END {printf "all threads      voluntary %6d (%.1f/s)  involuntary %4d\n", tv, tv/s, tn}'
if ((PERF)); then
    echo "# perf stat over the same span (nonzero counts, per second)"
    awk -F, -v s="$SECS" '$1+0>0 {printf "%8d %8.1f/s  %s\n", $1, $1/s, $3}' "$DIR/perf.csv" | sort -rn
fi
