#!/usr/bin/env bash
# tool-cost.sh — what the load tools themselves cost: source -> sink directly (the ceiling leg
# of relay-vs-postfix.sh), the source under GNU time and the sink read from /proc, printing msg/s and the CPU each spends per
# message. A relay sits between the two and does the sink's receiving and the source's sending
# itself, plus its queue: this is the yardstick for its CPU per message (relay-profile.sh).
#
# Usage (as root, after `cargo build --release -p corepost-benches`):
#   benches/tool-cost.sh [-m N] [-l SIZE] [-s N] [-r N] [--no-reuse] [--postfix-tools]
set -euo pipefail

MESSAGES=20000 SIZE=4k SESSIONS=20 RCPTS=1 REUSE=1 TOOLS=corepost
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
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "tool-cost: unknown option $1" >&2; exit 2 ;;
    esac
done
NAME=tool-cost
# shellcheck source=benches/leg-lib.sh
source "$REPO/benches/leg-lib.sh"
enter_netns
SIZE_BYTES=$(numfmt --from=iec "${SIZE^^}")
make_scratch
PORT=32525
reuse=()
((REUSE)) && reuse=(-d)
if [[ $TOOLS == corepost ]]; then
    sink=("$BIN/corepost-sink" "127.0.0.1:$PORT" 1024)
    source=("$BIN/corepost-source" -q -m "$MESSAGES" -s "$SESSIONS" -r "$RCPTS" -l "$SIZE_BYTES")
else
    sink=(smtp-sink -u postfix "127.0.0.1:$PORT" 1024)
    source=(smtp-source -m "$MESSAGES" -s "$SESSIONS" -r "$RCPTS" -l "$SIZE_BYTES")
fi
"${sink[@]}" >/dev/null 2>&1 &
SINK=$!
PIDS+=("$SINK")
wait_port "$PORT"
t0=$(date +%s.%N)
/usr/bin/time -f '%U %S' -o "$TMP/source.time" "${source[@]}" "${reuse[@]}" \
    -f sender@source.test -t rcpt@dest.test "127.0.0.1:$PORT" >/dev/null 2>&1
t1=$(date +%s.%N)
# The sink runs until stopped (with -M it could quit before the source's last QUIT): its CPU so
# far, utime and stime from /proc (fields 14 and 15), in clock ticks.
sed 's/^.*) //' "/proc/$SINK/stat" | awk -v hz="$(getconf CLK_TCK)" '{print $12 / hz, $13 / hz}' \
    >"$TMP/sink.time"
per_msg() { # FILE of "user system" seconds: total (user + system) per message
    awk -v n="$MESSAGES" '{printf "%.3f (%.3f + %.3f)", ($1 + $2) * 1000 / n, $1 * 1000 / n, $2 * 1000 / n}' "$1"
}
printf '%s tools, %s x %s, %s sessions, %s rcpt, reuse=%s: %.0f msg/s; CPU ms/msg (user + system): source %s, sink %s\n' \
    "$TOOLS" "$MESSAGES" "$SIZE" "$SESSIONS" "$RCPTS" "$REUSE" \
    "$(echo "$MESSAGES / ($t1 - $t0)" | bc -l)" "$(per_msg "$TMP/source.time")" "$(per_msg "$TMP/sink.time")"
