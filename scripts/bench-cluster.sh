#!/usr/bin/env bash
# Measures a local Flotilla cluster with the load generator: starts NODES release-built
# `flotilla` processes on 127.0.0.1 (data under a temporary directory), bootstraps them,
# preloads KEYS keys, runs the loads listed below one after the other, and stops the
# cluster. NODES=1 gives the unreplicated baseline for the same loads.
#
#   scripts/bench-cluster.sh 3            # the 3-node figures of docs/benchmarks.md
#   scripts/bench-cluster.sh 1            # the single-node baseline
#   ROWS=scale scripts/bench-cluster.sh 6 # 6 nodes at factor 3: 100-client puts and gets only
#
# Builds `cargo build --release --workspace` first (the first release build compiles
# RocksDB: about 15 minutes on 2 cores). Every node writes with fsync on.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:-3}"
secs="${SECS:-15}"
keys="${KEYS:-20000}"
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh

port() { echo $((7600 + 100 * $1)); }
endpoints=""
for i in $(seq 1 "$nodes"); do endpoints+="127.0.0.1:$(port "$i"),"; done
endpoints="${endpoints%,}"
for i in $(seq 1 "$nodes"); do
  join=""
  if [ "$nodes" -gt 1 ]; then
    join="--join $(echo "$endpoints" | tr ',' '\n' | grep -v ":$(port "$i")\$" | paste -sd,)"
  fi
  # shellcheck disable=SC2086
  "$bin" start --insecure --node-id "$i" --listen "127.0.0.1:$(port "$i")" --http-listen "127.0.0.1:$(( $(port "$i") + 1 ))" \
    --data-dir "$root/n$i" --initial-ranges 8 $join >"$root/log$i" 2>&1 &
  pids+=($!)
done
if [ "$nodes" -gt 1 ]; then
  for _ in $(seq 1 50); do
    if "$bin" init --endpoints "127.0.0.1:$(port 1)" --initial-ranges 8 >&2 2>/dev/null; then break; fi
    sleep 0.2
  done
fi

common=(--endpoints "$endpoints" --keys "$keys" --key-size 16 --value-size 128 --duration-secs "$secs" --warmup-secs 2)
cpu_all() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
clk="$(getconf CLK_TCK)"
run() {
  echo "== $nodes node(s): $*"
  local c0 c1 out ops
  c0="$(cpu_all)"
  out="$("$load" "${common[@]}" "$@")"
  c1="$(cpu_all)"
  echo "$out"
  ops="$(echo "$out" | awk '/^measured/{print $4}')"
  python3 -c "print(f'server CPU (all nodes, warm-up included): {($c1 - $c0) / $clk:.1f} s, {($c1 - $c0) / $clk / max($ops, 1) * 1e6:.0f} us per op')"
  echo
}
# Wait for placement to settle (more nodes than the factor: init spreads the ranges, and
# nothing should move), then the rows.
for _ in $(seq 1 150); do "$bin" status --endpoints "127.0.0.1:$(port 1)" >/dev/null 2>&1 && break; sleep 0.2; done
run --clients 100 --read-ratio 0 --preload
if [ "${ROWS:-all}" = scale ]; then
  run --clients 100 --read-ratio 1
  exit 0
fi
run --clients 1 --read-ratio 0
run --clients 1 --read-ratio 1
run --clients 1 --read-ratio 0.5
run --clients 100 --read-ratio 1
run --clients 100 --read-ratio 0.5
run --clients 100 --read-ratio 0.5 --distribution zipfian
run --clients 100 --read-ratio 0 --distribution sequential
