#!/usr/bin/env bash
# Profiles a 3-node release cluster under load (issue 13: "profile first"): starts 3 nodes
# on 127.0.0.1 (fsync on, 8 initial ranges), runs `flotilla-load` (LOAD_ARGS, default 100
# clients of 16-byte random-key puts, 256-byte values) and, after a warm-up, records
# `perf record --call-graph dwarf` on every node for SECS seconds. Writes perf.data and
# the folded stacks to OUT (default ./profile), and a flame graph (out/flame.svg) when
# inferno is installed (`cargo install inferno`).
#
#   scripts/profile-cluster.sh
#   LOAD_ARGS="--read-ratio 1" OUT=profile-gets scripts/profile-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SECS:-10}"
out="$(realpath -m "${OUT:-profile}")"
load_args=(${LOAD_ARGS:---read-ratio 0})
mkdir -p "$out"
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
start_three 8
"$load" --endpoints "$endpoints" --clients 100 --key-size 16 --value-size 256 --keys 20000 --duration-secs $((secs + 8)) \
  "${load_args[@]}" >"$out/load.txt" &
loader=$!
sleep 5
perf record -F 249 --call-graph dwarf,16384 -o "$out/perf.data" -p "$(IFS=,; echo "${pids[*]}")" -- sleep "$secs" 2>"$out/perf.err" >/dev/null
wait "$loader"
cat "$out/load.txt"
perf report -i "$out/perf.data" --no-children --sort symbol -g none --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -60 >"$out/top.txt" || true
perf script -i "$out/perf.data" 2>/dev/null >"$out/stacks.txt"
if command -v inferno-collapse-perf >/dev/null 2>&1; then
  inferno-collapse-perf <"$out/stacks.txt" >"$out/folded.txt"
  inferno-flamegraph --title "Flotilla, 3 nodes, $(echo "${load_args[@]}")" <"$out/folded.txt" >"$out/flame.svg"
fi
echo "profile in $out (top.txt; flame.svg with inferno)"
