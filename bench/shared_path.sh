#!/usr/bin/env bash
# Links sharing one shaped path: two namespaces joined by one veth pair with tbf at RATE
# Mbit/s both ways (198.18.9.0/24). Measures one TCP connection (cubic) alone, then
# `braid connect tcp://...?count=1` and `?count=N` (cc=cubic) into `braid serve --forward`,
# for each braid binary given (to compare builds in the same run), printing goodput and the
# longest delivery gap. Always cleans up. Needs root, ip, tc, python3.
#
#   sudo RATE=40 N=4 MB=24 bench/shared_path.sh target/release/braid [other/braid ...]
#
# docs/BENCHMARKS.md (session 6) has figures: count=N reaches what one TCP connection does,
# with the shared path window as without it.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "shared_path: SKIPPED: needs root (network namespaces)" >&2
  exit 77
fi
[ $# -ge 1 ] || { echo "usage: $0 BRAID [BRAID...]" >&2; exit 2; }
RATE=${RATE:-40}
N=${N:-4}
MB=${MB:-24}
HELPER=$(cd "$(dirname "$0")/.." && pwd)/tools/testbed_helper.py
A=c4-a-$$; B=c4-b-$$
DIR=$(mktemp -d /tmp/c4.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
ip netns add "$A"; ip netns add "$B"
ip -n "$A" link set lo up; ip -n "$B" link set lo up
ip link add c4a netns "$A" type veth peer name c4b netns "$B"
ip -n "$A" addr add 198.18.9.1/24 dev c4a; ip -n "$B" addr add 198.18.9.2/24 dev c4b
ip -n "$A" link set c4a up; ip -n "$B" link set c4b up
burst=$(( RATE * 1000 / 8 * 4 )); [ $burst -lt 3200 ] && burst=3200
tc -n "$A" qdisc replace dev c4a root tbf rate ${RATE}mbit burst $burst latency 25ms
tc -n "$B" qdisc replace dev c4b root tbf rate ${RATE}mbit burst $burst latency 25ms
ip netns exec "$B" python3 "$HELPER" sink 5000 "$DIR/alone" & p=$!; sleep 0.3
ip netns exec "$A" python3 "$HELPER" send 198.18.9.2 5000 4; wait $p
echo "alone: $(python3 -c "import json;print(round(json.load(open('$DIR/alone.json'))['mbit'],2))") Mbit/s"
head -c $((MB * 1000 * 1000)) /dev/urandom > "$DIR/data"
port=7800
for BRAID in "$@"; do
  KEY=$("$BRAID" keygen "$DIR/key$port" 2>/dev/null; cat "$DIR/key$port"); export BRAID_KEY=$KEY
  for c in 1 $N; do
    port=$((port+1))
    ip netns exec "$B" python3 "$HELPER" sink $((port+100)) "$DIR/b$port" & sinkpid=$!
    ip netns exec "$B" "$BRAID" serve --listen 0.0.0.0:$port --forward 127.0.0.1:$((port+100)) --control "$DIR/s$port.sock" 2>/dev/null & servepid=$!
    PIDS+=($sinkpid $servepid)
    sleep 0.5
    ip netns exec "$A" "$BRAID" connect "tcp://198.18.9.2:$port?count=$c&cc=cubic" --control "$DIR/c$port.sock" < "$DIR/data" > /dev/null 2>/dev/null & connpid=$!
    PIDS+=($connpid)
    wait $sinkpid || true
    sleep 0.3; kill $servepid $connpid 2>/dev/null || true; wait $servepid $connpid 2>/dev/null || true
    echo "$BRAID count=$c: $(python3 -c "import json;r=json.load(open('$DIR/b$port.json'));print(round(r['mbit'],2), 'Mbit/s, gap', round(r['max_gap']*1000), 'ms')")"
  done
done
