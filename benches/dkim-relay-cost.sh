#!/bin/bash
# The relay leg of BENCHMARKS.md with DKIM signing off, with Ed25519 or with RSA-2048:
# corepost-source (20 sessions, 4 KiB) -> corepost (fsync always) -> corepost-sink on loopback.
# usage: benches/dkim-relay-cost.sh none|ed|rsa [MESSAGES]  (after cargo build --release
#   -p corepost -p corepost-benches; as root: the daemon keeps mail_owner = root)
# prints the sink's msg/s, the CPU of `corepost run` per message, and how many were signed.
MODE=$1; N=${2:-20000}
B=$(cd "$(dirname "$0")/.." && pwd)/target/release
WORK=${TMPDIR:-/tmp}/corepost-dkim-bench
mkdir -p "$WORK"
DIR=$(mktemp -d "$WORK/run.XXXX")
[ -f "$WORK/rsa.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.pem" 2>/dev/null
[ -f "$WORK/ed.pem" ] || openssl genpkey -algorithm ed25519 -out "$WORK/ed.pem"
printf 'rsa source.test:s:%s\ned source.test:s:%s\n' "$WORK/rsa.pem" "$WORK/ed.pem" > "$WORK/keys"
EXTRA=""
if [ "$MODE" != none ]; then
  echo "*@source.test $MODE" > $DIR/signing
  EXTRA="corepost_dkim_key_table = $WORK/keys
corepost_dkim_signing_table = refile:$DIR/signing"
fi
cat > $DIR/main.cf <<EOC
queue_directory = $DIR/q
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:42525
smtp_dns_support_level = disabled
corepost_fsync_policy = always
mail_owner = root
maillog_file = $DIR/maillog
maillog_file_prefixes = /
$EXTRA
EOC
printf '127.0.0.1:42526 inet n - n - - smtpd\nsmtp unix - - n - - smtp\nrelay unix - - n - - smtp\n' > $DIR/master.cf
$B/corepost-sink 127.0.0.1:42525 1024 -M $N --json > $DIR/sink.json &
SINK=$!
$B/corepost run -c $DIR > $DIR/run.out 2>&1 &
MTA=$!
sleep 1.5
timeout 300 $B/corepost-source -q --json -m $N -s 20 -l 4096 -d -f s@source.test -t r@dest.test 127.0.0.1:42526 > $DIR/source.json || echo "source failed: $(cat $DIR/run.out)"
timeout 120 tail --pid=$SINK -f /dev/null
T=$(awk '{print $14+$15}' /proc/$MTA/stat)
kill $MTA 2>/dev/null; kill $SINK 2>/dev/null; wait
HZ=$(getconf CLK_TCK)
RATE=$(python3 -c "import json;print(round(json.loads(open('$DIR/sink.json').read().splitlines()[-1])['msgs_per_sec']))" 2>&1)
SIGNED=$(grep -c "DKIM-Signature field added" $DIR/maillog)
rm -rf "$DIR/q"
echo "$MODE msg/s=$RATE cpu_ms_per_msg=$(python3 -c "print(round($T/$HZ*1000/$N,3))") signed=$SIGNED"
rm -rf "$DIR"
