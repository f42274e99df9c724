#!/usr/bin/env bash
# Measures what losing a node costs a running load: starts 3 release-built nodes on
# 127.0.0.1, runs flotilla-load (16 clients, 50% reads, through nodes 1 and 2) for 20 s
# with a throughput line per second, and stops node 3 at about second 5 — with
# `kill -9` (default) or SIGTERM (`scripts/bench-failover.sh term`, which drains first).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-kill}"
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
addr() { echo "127.0.0.1:$((7600 + 10 * $1))"; }
for i in 1 2 3; do
  join="$(for j in 1 2 3; do if [ "$j" != "$i" ]; then addr "$j"; fi; done | paste -sd,)"
  "$bin" start --insecure --node-id "$i" --listen "$(addr "$i")" --http-listen "127.0.0.1:$((7601 + 10 * i))" \
    --join "$join" --data-dir "$root/n$i" >"$root/log$i" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 50); do
  if "$bin" init --endpoints "$(addr 1)" --initial-ranges 8 >/dev/null 2>&1; then break; fi
  sleep 0.2
done
sleep 3   # let the new ranges elect and spread their leaders
"$bin" status --endpoints "$(addr 1)" || true
"$load" --endpoints "$(addr 1),$(addr 2)" --clients 16 --duration-secs 20 --read-ratio 0.5 \
  --keys 10000 --preload --progress-secs 1 --timeout-ms 30000 &
loadpid=$!
sleep 7   # the preload takes about 3 s; then about 4 s of steady load
if [ "$mode" = term ]; then kill -TERM "${pids[2]}"; else kill -9 "${pids[2]}"; fi
echo "node 3 stopped ($mode)" >&2
wait "$loadpid"
