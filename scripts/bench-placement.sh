#!/usr/bin/env bash
# Measures placement (issue 12) on release-built nodes on 127.0.0.1 (fsync on):
#   1. restore: 5 nodes at factor 3 with RANGES user ranges holding MIB MiB of 4 KiB
#      values; node 5 is SIGKILLed and left down; `flotilla nodes` is polled every 0.5 s
#      until no range is under-replicated and none lists node 5. Reported: the time until
#      node 5 is shown dead (the dead timeout, DEAD s, and its detection), the time from
#      then until the factor is restored (the snapshots and the rest), and the moves made;
#   2. foreground puts (16 clients) on the 4 survivors with nothing moving (the baseline),
#      then while node 4 is decommissioned (the window starts with the decommission), then
#      while a new node 6 joins and is given its share of replicas and leaders
#      (rebalancing).
# Each load row: throughput, p99 and the server CPU time per put summed over the nodes.
#
#   RANGES=10 MIB=1024 scripts/bench-placement.sh
#   RANGES=1000 MIB=1024 scripts/bench-placement.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ranges="${RANGES:-10}"
mib="${MIB:-256}"
dead="${DEAD:-10}"
load_secs="${LOAD_SECS:-20}"
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh

port() { echo $((7600 + 100 * $1)); }
all=""
for i in 1 2 3 4 5; do all+="127.0.0.1:$(port "$i"),"; done
all="${all%,}"
start_node() { # id join
  "$bin" start --insecure --node-id "$1" --listen "127.0.0.1:$(port "$1")" --http-listen "127.0.0.1:$(( $(port "$1") + 1 ))" \
    --data-dir "$root/n$1" --join "$2" --dead-node-timeout "$dead" >"$root/log$1" 2>&1 &
  pids[$1]=$!
}
pids=(0)
for i in 1 2 3 4 5; do start_node "$i" "$(echo "$all" | tr ',' '\n' | grep -v ":$(port "$i")\$" | paste -sd,)"; done
for _ in $(seq 1 100); do
  if "$bin" init --endpoints "127.0.0.1:$(port 1)" --initial-ranges "$ranges" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
ep="127.0.0.1:$(port 1)"
cli() { "$bin" "$@" --endpoints "$ep"; }
for _ in $(seq 1 150); do cli status >/dev/null 2>&1 && break; sleep 0.2; done
# A field of `flotilla nodes` (whose exit code says whether the cluster is healthy: not
# an error here).
nodes_field() { { cli nodes --no-sizes -o json 2>/dev/null || true; } | python3 -c "$1" 2>/dev/null || echo "?"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_all() { local t=0; for p in "${pids[@]:1}"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
clk="$(getconf CLK_TCK)"
now() { date +%s.%N; }

keys=$((mib * 256))
echo "== $ranges user ranges, filling $keys keys of 4 KiB ($mib MiB) at factor 3 on 5 nodes"
"$load" --endpoints "$all" --clients 32 --keys "$keys" --key-size 16 --value-size 4096 --read-ratio 0 \
  --preload --ops 1 >/dev/null

# 1. Restore after a node is lost.
victim=5
t0="$(now)"
kill -9 "${pids[$victim]}"
pids[$victim]=0
t_dead=""
while :; do
  state="$(nodes_field "import json,sys; v=json.load(sys.stdin); n=[x for x in v['nodes'] if x['node_id']==$victim][0]; print(n['liveness'], n['replicas_in_meta'], v['under_replicated'])")"
  read -r live listed under <<<"$state"
  if [ -z "$t_dead" ] && [ "$live" = dead ]; then t_dead="$(now)"; fi
  if [ -n "$t_dead" ] && [ "$listed" = 0 ] && [ "$under" = 0 ]; then break; fi
  sleep 0.5
done
t1="$(now)"
moves=0
for i in 1 2 3 4; do
  m="$(curl -s "127.0.0.1:$(( $(port "$i") + 1 ))/metrics" | awk '/^flotilla_replica_moves_done /{print $2}')"
  moves=$((moves + ${m:-0}))
done
python3 - <<PY
t0, td, t1 = $t0, $t_dead, $t1
print(f"restore: node $victim killed; shown dead after {td - t0:.1f} s (dead timeout $dead s); factor restored {t1 - td:.1f} s later; {t1 - t0:.1f} s in all, {$moves} moves")
PY
cpu_reset="$(cpu_all)"

fg=(--clients 16 --keys 100000 --key-size 16 --value-size 128 --read-ratio 0 --duration-secs "$load_secs" --seed 7)
foreground() { # label endpoints
  local c0 c1 out ops
  c0="$(cpu_all)"
  out="$("$load" --endpoints "$2" "${fg[@]}")"
  c1="$(cpu_all)"
  ops="$(echo "$out" | awk '/^measured/{print $4}')"
  echo "$1:"
  echo "$out" | grep -E "^(throughput|write)" | sed 's/^/  /'
  python3 -c "print(f'  server CPU: {($c1 - $c0) / $clk:.1f} s, {($c1 - $c0) / $clk / max($ops, 1) * 1e6:.0f} us per put')"
}
survivors="$(echo "$all" | tr ',' '\n' | grep -v ":$(port $victim)\$" | paste -sd,)"
foreground "puts, nothing moving (4 nodes)" "$survivors"

# 2. A decommission under load.
rest="$(echo "$survivors" | tr ',' '\n' | grep -v ":$(port 4)\$" | paste -sd,)"
td0="$(now)"
cli node decommission 4 >/dev/null
( while [ "$(nodes_field "import json,sys; v=json.load(sys.stdin); print([x for x in v['nodes'] if x['node_id']==4][0]['liveness'])")" != decommissioned ]; do sleep 0.5; done; now >"$root/decom" ) &
watcher=$!
foreground "puts while node 4 is decommissioned" "$rest"
# (A bare `wait` would wait for the nodes too.)
wait "$watcher"
python3 -c "print(f'  node 4 decommissioned {$(cat "$root/decom") - $td0:.1f} s after the command')"
kill -TERM "${pids[4]}"; wait "${pids[4]}" 2>/dev/null || true; pids[4]=0

# 3. Rebalancing onto a new node under load.
start_node 6 "$ep"
tj="$(now)"
# Its share: replica counts of the live nodes within 3, and node 6 leading ranges too
# (placement records preferred leaders). Given up after 20 minutes.
( for _ in $(seq 1 2400); do
    r="$(nodes_field "import json,sys; v=json.load(sys.stdin); c=[x['replicas'] for x in v['nodes'] if x['liveness']=='live']; m=[(x['replicas'], x['leaders']) for x in v['nodes'] if x['node_id']==6]; print(1 if m and len(c)==4 and max(c)-min(c)<=3 and m[0][0]>0 and m[0][1]>0 else 0)")"
    [ "$r" = 1 ] && break; sleep 0.5
  done; now >"$root/joined" ) &
watcher=$!
foreground "puts while node 6 joins and is rebalanced onto" "$rest"
wait "$watcher"
python3 -c "print(f'  node 6 had its share {$(cat "$root/joined") - $tj:.1f} s after it started')"
cli nodes || true
