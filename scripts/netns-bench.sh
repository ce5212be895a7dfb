#!/usr/bin/env bash
# Packet-rate bench across two network namespaces joined by a veth pair:
# the receiver runs in one, the sender in the other, for each available
# backend and payload size, and a report is written:
#   OUT/netns-bench.json  rows {"backend","payload","pps","gbps","cpu_ns_per_pkt","lost",...}
#   OUT/netns-bench.md    the same as a table, with ratios to the naive loop
#   OUT/netns-bench.svg   a bar chart
#
#   scripts/netns-bench.sh [--quick] [--out DIR] [--mtu N] [--duration SECONDS]
#
# Each backend and size runs twice: unpaced (the most the sender can push;
# the receiver's rate then is its capacity) and paced at 90% of the rate the
# receiver reached (then 70%, then 50%, while packets are lost): the reported row is the
# paced run, so its rate is one the receiver sustains. --quick finishes in
# under a minute. Needs root (namespaces); uses only 198.18.0.0/15 addresses.
# Namespaces and links are named mxpbench-<pid>-* and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 out=out/netns-bench mtu=1500 duration=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --mtu) mtu=$2; shift ;;
    --duration) duration=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "netns-bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" -ne 0 ]; then
  echo "netns-bench: needs root to create network namespaces" >&2
  exit 1
fi
scripts/deps.sh
if [ -z "$duration" ]; then
  if [ $quick = 1 ]; then duration=1.5; else duration=5; fi
fi
if [ $quick = 1 ]; then shard_counts="1"; else shard_counts="1 2"; fi

tag="mxpbench-$$"
nsa="$tag-a" nsb="$tag-b"
work=$(mktemp -d)
cleanup() {
  ip netns del "$nsa" 2>/dev/null || true
  ip netns del "$nsb" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/pktrate" ./perf/pktrate

ip netns add "$nsa"
ip netns add "$nsb"
ip link add "mxpb$$a" netns "$nsa" type veth peer name "mxpb$$b" netns "$nsb"
ip -n "$nsa" link set lo up
ip -n "$nsb" link set lo up
ip -n "$nsa" link set "mxpb$$a" mtu "$mtu" up
ip -n "$nsb" link set "mxpb$$b" mtu "$mtu" up
ip -n "$nsa" addr add 198.18.0.1/30 dev "mxpb$$a"
ip -n "$nsb" addr add 198.18.0.2/30 dev "mxpb$$b"

runs="$work/runs.jsonl"
port=9100
# run BACKEND PAYLOAD SHARDS PHASE [PPS]: one bounded receiver + sender pair.
run() {
  local backend=$1 payload=$2 shards=$3 phase=$4 pps=${5:-0}
  local label="$backend:$payload:$shards:$phase"
  local sel=(--backend "$backend")
  # xdp-generic: the xdp backend with its program attached in generic mode.
  [ "$backend" = xdp-generic ] && sel=(--backend xdp --xdp-mode generic)
  port=$((port + 1))
  rm -f "$work/ready"
  ip netns exec "$nsb" "$work/pktrate" recv "${sel[@]}" --shards "$shards" \
    --addr "198.18.0.2:$port" --idle 700ms --max-duration 30s \
    --ready "$work/ready" --label "$label" --out "$runs" &
  local rpid=$!
  for _ in $(seq 100); do [ -e "$work/ready" ] && break; sleep 0.05; done
  ip netns exec "$nsa" "$work/pktrate" send "${sel[@]}" --shards "$shards" \
    --to "198.18.0.2:$port" --size "$payload" --duration "${duration}s" --pps "$pps" \
    --label "$label" --out "$runs"
  wait "$rpid"
}

# last_rate LABEL: the receiver's packets/s and the loss of that run.
last_field() {
  grep "\"label\":\"$1\"" "$runs" | grep "\"role\":\"$2\"" | tail -1 | sed -E "s/.*\"$3\":([0-9.e+]+).*/\1/"
}

available=""
for backend in naive portable uring xdp; do
  if why=$("$work/pktrate" probe --backend "$backend" 2>&1); then
    available="$available $backend"
    # The full run also measures the XDP program attached in generic mode.
    [ "$backend" = xdp ] && [ $quick = 0 ] && available="$available xdp-generic"
  else
    echo "netns-bench: skipping $backend: $why" >&2
  fi
done

for payload in 64 1200; do
  for backend in $available; do
    for shards in $shard_counts; do
      [ "$backend" = naive ] && [ "$shards" != 1 ] && continue
      # AF_XDP binds one socket per RX queue: this veth has one queue, and
      # the sender opens one engine per shard on it.
      [ "${backend%-generic}" = xdp ] && [ "$shards" != 1 ] && continue
      run "$backend" "$payload" "$shards" max
      rate=$(last_field "$backend:$payload:$shards:max" recv pps)
      for frac in 0.9 0.7 0.5; do
        pps=$(awk -v r="$rate" -v f="$frac" 'BEGIN { printf "%d", r * f }')
        [ "$pps" -gt 0 ] || break
        run "$backend" "$payload" "$shards" paced "$pps"
        sent=$(last_field "$backend:$payload:$shards:paced" send packets)
        got=$(last_field "$backend:$payload:$shards:paced" recv packets)
        [ "$sent" = "$got" ] && break
      done
    done
  done
done

mkdir -p "$out"
cp "$runs" "$out/runs.jsonl"
"$work/pktrate" report --out "$out" "$runs"
echo "netns-bench: wrote $out/netns-bench.json, .md and .svg"
