#!/usr/bin/env bash
# client-tls-cost.sh — what outbound TLS costs per connection.
#
# One leg: corepost-source -> corepost -> corepost-sink (--tls) over loopback, with
# smtp_connection_reuse_count_limit = 1, so every message is one outbound connection, and the
# given smtp_tls_security_level: none (plaintext), may (any certificate), verify (the sink's
# certificate as smtp_tls_CAfile, matched against the next hop's name). Prints the sink's
# msg/s and the CPU of `corepost run` per message (= per connection).
#
# Usage: benches/client-tls-cost.sh LEVEL [MESSAGES] [EXTRA main.cf LINE]
#   e.g. for l in none may verify; do benches/client-tls-cost.sh $l 5000; done
#        benches/client-tls-cost.sh verify 5000 "smtp_tls_loglevel = 1"
# Needs a release build (cargo build --release -p corepost -p corepost-benches). Uses ports
# 41525 (sink) and 41526 (corepost); stops what it starts by PID.
set -euo pipefail
level=$1
n=${2:-5000}
extra=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
R=$root/target/release
DIR=$(mktemp -d /tmp/client-tls-cost.XXXX)
mkdir -p "$DIR/q"
"$R/corepost-sink" 127.0.0.1:41525 1024 --tls --tls-cert-out "$DIR/sink.pem" -h localhost \
  -M "$n" --summary "$DIR/sink.json" > "$DIR/sink.out" 2>&1 &
sink=$!
sleep 0.5
ca=""
[ "$level" = verify ] && ca="$DIR/sink.pem"
cat > "$DIR/main.cf" <<CF
queue_directory = $DIR/q
mail_owner = root
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [localhost]:41525
smtp_dns_support_level = disabled
smtp_host_lookup = native
corepost_fsync_policy = never
maillog_file = $DIR/maillog
maillog_file_prefixes = /
smtp_connection_reuse_count_limit = 1
smtp_tls_security_level = $level
smtp_tls_CAfile = $ca
smtpd_peername_lookup = no
alias_maps =
alias_database =
$extra
CF
printf '127.0.0.1:41526 inet n - n - - smtpd\nsmtp unix - - n - - smtp\nrelay unix - - n - - smtp\n' \
  > "$DIR/master.cf"
"$R/corepost" run -c "$DIR" > "$DIR/run.out" 2>&1 &
mta=$!
for _ in $(seq 100); do
  grep -q "daemon started" "$DIR/maillog" 2>/dev/null && break
  sleep 0.1
done
"$R/corepost-source" -q --json -m "$n" -s 20 -l 4096 -d -f s@source.test -t r@dest.test \
  127.0.0.1:41526 > "$DIR/source.json"
wait "$sink" || true
read -r ut st < <(awk '{print $14, $15}' "/proc/$mta/stat")
tck=$(getconf CLK_TCK)
kill "$mta"
wait "$mta" 2>/dev/null || true
python3 - "$DIR/sink.json" "$ut" "$st" "$tck" "$n" "$level" <<'PY'
import json, sys
path, ut, st, tck, n, level = sys.argv[1:]
s = json.load(open(path))
cpu = (int(ut) + int(st)) / int(tck) * 1000 / int(n)
print(f"level={level} messages={n} connections={s['connections']} "
      f"sink msg/s={s['msgs_per_sec']:.0f} corepost CPU ms/connection={cpu:.3f}")
PY
rm -rf "$DIR"
