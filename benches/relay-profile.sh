#!/usr/bin/env bash
# relay-profile.sh — the corepost leg of relay-vs-postfix.sh, measured from the inside: source ->
# corepost (fsync always) -> sink on loopback, in a private network namespace, and per relayed
# message corepost's CPU time, its syscalls by name and its context switches (perf stat on the
# `corepost run` process, all threads) and its resident memory before and after, or a
# `perf record -g` profile of it.
#
# Usage (as root, after `cargo build --release -p corepost -p corepost-benches`):
#   benches/relay-profile.sh [-m N] [-l SIZE] [-s N] [-r N] [--no-reuse] [--postfix-tools]
#                            [--bin DIR] [--record FILE] [--cpu-only] [--ceiling]
#   --bin DIR       take corepost, corepost-source and corepost-sink from DIR (default
#                   target/release), e.g. to compare two builds in one sitting
#   --record FILE   perf record -g (call graphs) of corepost into FILE instead of counting
#   --cpu-only      no perf at all: counting every syscall through tracepoints costs corepost
#                   CPU of its own, so compare CPU figures from runs with this flag
#   --ceiling       also run source -> sink directly first and print corepost/ceiling
# Prints one line per leg: msg/s, corepost CPU ms per message, syscalls per message (total and
# the most frequent ones), context switches per message.
set -euo pipefail

MESSAGES=20000 SIZE=4k SESSIONS=20 RCPTS=1 REUSE=1 TOOLS=corepost RECORD="" CEILING=0 COUNT=1
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO/target/release
ARGS=("$@")
while (($#)); do
    case "$1" in
        -m) MESSAGES=$2; shift 2 ;;
        -l) SIZE=$2; shift 2 ;;
        -s) SESSIONS=$2; shift 2 ;;
        -r) RCPTS=$2; shift 2 ;;
        --no-reuse) REUSE=0; shift ;;
        --postfix-tools) TOOLS=postfix; shift ;;
        --bin) BIN=$(cd "$2" && pwd); shift 2 ;;
        --record) RECORD=$(realpath -m "$2"); shift 2 ;;
        --ceiling) CEILING=1; shift ;;
        --cpu-only) COUNT=0; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "relay-profile: unknown option $1" >&2; exit 2 ;;
    esac
done
NAME=relay-profile
# shellcheck source=benches/leg-lib.sh
source "$REPO/benches/leg-lib.sh"
enter_netns
SIZE_BYTES=$(numfmt --from=iec "${SIZE^^}")
make_scratch
SINK_PORT=32525 MTA_PORT=32526 HZ=$(getconf CLK_TCK)

start_sink() { # QUIT: 1 to exit after MESSAGES messages
    local quit=()
    [[ $1 == 1 ]] && quit=(-M "$MESSAGES")
    if [[ $TOOLS == corepost ]]; then
        "$BIN/corepost-sink" "127.0.0.1:$SINK_PORT" 1024 "${quit[@]}" >/dev/null 2>&1 &
    else
        smtp-sink -u postfix "${quit[@]}" "127.0.0.1:$SINK_PORT" 1024 >/dev/null 2>&1 &
    fi
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_port "$SINK_PORT"
}

run_source() { # PORT: the load, in the foreground
    local reuse=()
    ((REUSE)) && reuse=(-d)
    if [[ $TOOLS == corepost ]]; then
        "$BIN/corepost-source" -q -m "$MESSAGES" -s "$SESSIONS" -r "$RCPTS" -l "$SIZE_BYTES" "${reuse[@]}" \
            -f sender@source.test -t rcpt@dest.test "127.0.0.1:$1" >/dev/null
    else
        smtp-source -m "$MESSAGES" -s "$SESSIONS" -r "$RCPTS" -l "$SIZE_BYTES" "${reuse[@]}" \
            -f sender@source.test -t rcpt@dest.test "127.0.0.1:$1" >/dev/null
    fi
}

now() { date +%s.%N; }
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg); $MESSAGES x $SIZE, $SESSIONS sessions, $RCPTS rcpt, reuse=$REUSE, tools=$TOOLS, bin=$BIN"

CEILING_RATE=""
if ((CEILING)); then
    start_sink 1
    t0=$(now)
    run_source "$SINK_PORT"
    wait "$SINK_PID" 2>/dev/null || true
    CEILING_RATE=$(echo "$MESSAGES / ($(now) - $t0)" | bc -l)
    printf 'ceiling: %.0f msg/s\n' "$CEILING_RATE"
fi

DIR=$TMP/corepost
mkdir -p "$DIR"
cat >"$DIR/main.cf" <<EOF
queue_directory = $DIR/queue
myhostname = relay.bench.test
mydestination =
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK_PORT
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
corepost_fsync_policy = always
mail_owner = root
maillog_file = $DIR/maillog
maillog_file_prefixes = /tmp
EOF
printf '127.0.0.1:%s inet n - n - - smtpd\nsmtp unix - - n - - smtp\nrelay unix - - n - - smtp\n' \
    "$MTA_PORT" >"$DIR/master.cf"
start_sink 1
"$BIN/corepost" run -c "$DIR" >"$DIR/run.out" 2>&1 &
MTA=$!
PIDS+=("$MTA")
wait_port "$MTA_PORT"
if ((!COUNT)); then
    sleep infinity &
elif [[ -n $RECORD ]]; then
    perf record -g -o "$RECORD" -p "$MTA" 2>"$DIR/perf.err" &
else
    perf stat -x, -o "$DIR/perf.csv" -e 'raw_syscalls:sys_enter,context-switches,syscalls:sys_enter_*' \
        -p "$MTA" 2>"$DIR/perf.err" &
fi
PERF=$!
sleep 0.5
cpu0=$(awk '{print $14+$15}' "/proc/$MTA/stat")
rss0=$(awk '/^VmRSS/ {print $2}' "/proc/$MTA/status")
t0=$(now)
run_source "$MTA_PORT"
wait "$SINK_PID" 2>/dev/null || true
t1=$(now)
cpu1=$(awk '{print $14+$15}' "/proc/$MTA/stat")
rss1=$(awk '/^VmRSS/ {print $2}' "/proc/$MTA/status")
# perf stops (and writes its counts) on SIGINT; the placeholder of --cpu-only ignores SIGINT,
# as background jobs of a script do.
kill -INT "$PERF"
((COUNT)) || kill "$PERF"
wait "$PERF" 2>/dev/null || true
rate=$(echo "$MESSAGES / ($t1 - $t0)" | bc -l)
printf 'corepost: %.0f msg/s, CPU %.3f ms/msg' "$rate" "$(echo "($cpu1 - $cpu0) * 1000 / $HZ / $MESSAGES" | bc -l)"
[[ -n $CEILING_RATE ]] && printf ', corepost/ceiling %.2f' "$(echo "$rate / $CEILING_RATE" | bc -l)"
printf ', RSS %d -> %d KiB\n' "$rss0" "$rss1"
if ((COUNT)) && [[ -z $RECORD ]]; then
    # The counts cover the whole attachment (start-up idle included: negligible).
    awk -F, -v n="$MESSAGES" '
        $3 == "raw_syscalls:sys_enter" { printf "syscalls/msg %.2f", $1 / n }
        $3 == "context-switches" { printf ", context switches/msg %.2f\n", $1 / n }' "$DIR/perf.csv"
    awk -F, -v n="$MESSAGES" '$3 ~ /^syscalls:sys_enter_/ && $1 + 0 > n / 100 {
            sub("syscalls:sys_enter_", "", $3); printf "%s %.2f\n", $3, $1 / n }' "$DIR/perf.csv" |
        sort -k2 -nr | tr '\n' ' ' | sed 's/^/  /; s/ $/\n/'
fi
