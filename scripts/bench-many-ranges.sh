#!/usr/bin/env bash
# Many ranges on 3 release-built nodes (issue 13, items 4 and 5): initializes a 3-node
# cluster on 127.0.0.1 with RANGES user ranges (default 100,000; plus the meta range) and
# reports
#   1. the time from `init` until every range has a leader;
#   2. idle cost after IDLE_SETTLE s: RSS per node (/proc/PID/status) and CPU per node
#      over IDLE_SECS s (/proc/PID/stat), as % of one core;
#   3. failover: node 3 is SIGKILLed; `flotilla status` is polled every 0.5 s through
#      node 1 until the live nodes lead every range again (the figure of issue 13);
#   4. restart: node 3 starts again on its data; the time until its `/ready` answers 200,
#      until it leads ranges again, and until every range is led with node 3 live.
#
#   scripts/bench-many-ranges.sh                 # RANGES=100000
#   RANGES=10000 scripts/bench-many-ranges.sh
#   PERF_FAILOVER=DIR scripts/bench-many-ranges.sh
#       # also profiles node 1 (`perf record --call-graph dwarf`) for PERF_SECS (12) s
#       # from the kill, into DIR/perf.data (read it with `perf report -i`)
set -euo pipefail
cd "$(dirname "$0")/.."
ranges="${RANGES:-100000}"
settle="${IDLE_SETTLE:-20}"
idle_secs="${IDLE_SECS:-30}"
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
# Times in microseconds (bash's EPOCHREALTIME: no process per reading, so the polls below
# keep their 0.5 s period).
now() { echo "${EPOCHREALTIME/./}"; }
secs() { printf '%d.%02d' $(($1 / 1000000)) $((($1 % 1000000) / 10000)); }
since() { secs $(($(now) - $1)); }
total=$((ranges + 1))
# "LEADERS_ON_LIVE_NODES REPLICAS_OF_A_LIVE_NODE" as node 1 sees them ("0 0" if it does not answer).
led() {
  { "$bin" status --endpoints 127.0.0.1:7700 -o json 2>/dev/null || true; } | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except Exception:
    print("0 0"); sys.exit()
live = [n for n in v["nodes"] if n["live"]]
print(sum(n["leaders"] for n in live), max([n["replicas"] for n in live] or [0]))'
}
# Polls `flotilla status` every 0.5 s (start to start) until the live nodes lead every
# range; sets `led_after` to the time from $1 to the end of the poll that saw it, and
# `led_not_before` to the end of the poll before (the figure is exact to that interval).
# Gives up after LED_TIMEOUT s (default 600), saying how far it got, and ends the script
# (a cluster that never elects is a result).
wait_led() {
  local l r from="$1" begun ended last=0
  while :; do
    begun="$(now)"
    read -r l r <<<"$(led)"
    ended="$(now)"
    [ -n "${VERBOSE:-}" ] && echo "   $(secs $((ended - from))) s: $l of $total led" >&2
    if [ "$r" -ge "$total" ] && [ "$l" -ge "$total" ]; then break; fi
    last="$ended"
    if [ $((ended - from)) -gt $((${LED_TIMEOUT:-600} * 1000000)) ]; then
      echo "gave up after ${LED_TIMEOUT:-600} s: $l of $total ranges led, $r replicas on a live node" >&2
      exit 1
    fi
    local wait_us=$((500000 - ($(now) - begun)))
    [ "$wait_us" -gt 0 ] && sleep "$(secs "$wait_us")"
  done
  led_after="$(secs $((ended - from)))"
  led_not_before="$(secs $(( last > from ? last - from : 0 )))"
}

t0="$(now)"
start_three "$ranges"
wait_led "$t0"
echo "1. $total ranges created and led $led_after s after the nodes started"

sleep "$settle"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk="$(getconf CLK_TCK)"
declare -a c0
for i in 0 1 2; do c0[$i]="$(ticks "${pids[$i]}")"; done
sleep "$idle_secs"
for i in 0 1 2; do
  p="${pids[$i]}"
  rss="$(awk '/^VmRSS/{print $2}' "/proc/$p/status")"
  python3 -c "print(f'2. node $((i + 1)) idle: RSS {$rss / 1024:.0f} MiB ({$rss * 1024 / $total:.0f} B per range), CPU {($(ticks "$p") - ${c0[$i]}) / $clk / $idle_secs * 100:.2f} % of a core')"
done

kill -9 "${pids[2]}"
tk="$(now)"
pids[2]=0
if [ -n "${PERF_FAILOVER:-}" ]; then
  mkdir -p "$PERF_FAILOVER"
  perf record -F 249 --call-graph dwarf,16384 -p "${pids[0]}" -o "$PERF_FAILOVER/perf.data" \
    -- sleep "${PERF_SECS:-12}" >"$PERF_FAILOVER/perf.log" 2>&1 &
fi
wait_led "$tk"
echo "3. node 3 killed: every range led again $led_after s later (not yet at $led_not_before s)"
for port in 7701 7801; do
  refused="$(curl -s "127.0.0.1:$port/metrics" | awk '/^flotilla_votes_refused/{print $2}')"
  echo "   votes refused by the node of port $port so far: ${refused:-?}"
done

join="127.0.0.1:7700,127.0.0.1:7800"
tr="$(now)"
"$bin" start --insecure --node-id 3 --listen 127.0.0.1:7900 --http-listen 127.0.0.1:7901 --data-dir "$root/n3" \
  --join "$join" >>"$root/log3" 2>&1 &
pids[2]=$!
until [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:7901/ready)" = 200 ]; do sleep 0.2; done
echo "4. node 3 restarted: /ready after $(since "$tr") s"
until "$bin" status --endpoints 127.0.0.1:7900 -o json 2>/dev/null | python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if [n for n in v["nodes"] if n["node_id"] == 3 and n["leaders"] > 0] else 1)'; do
  sleep 0.5
done
echo "   and leads ranges again after $(since "$tr") s"
wait_led "$tr"
echo "   every range led, node 3 live, $led_after s after the restart"
"$bin" status --endpoints 127.0.0.1:7700 || true
