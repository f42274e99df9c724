#!/usr/bin/env bash
# Long runs of the Jepsen-style suite (server/tests/jepsen/): a real 3-node cluster,
# concurrent clients, one nemesis schedule, a linearizability check per key and a
# durability check through every node.
#
#   scripts/jepsen.sh --schedule mixed --seconds 300 --seed 42
#   scripts/jepsen.sh --all --seconds 120          # every schedule, one after another
#
# Schedules: none kill kill-leaseholder kill-two pause pause-leaseholder partition
# partition-leaseholder ring clock-within clock-beyond split snapshot transfer mixed.
# A failing run keeps its cluster directory (node logs, data, history.txt) and prints
# the command that replays its seed. Uses the test profile and the whole workspace's
# selection, as CI does (another selection of targets rebuilds RocksDB).
set -euo pipefail
cd "$(dirname "$0")/.."
schedules=() seconds=120 seed="${JEPSEN_SEED:-$(date +%s)}"
while [ $# -gt 0 ]; do
  case "$1" in
    --schedule) schedules+=("$2"); shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --all) schedules=(none kill kill-leaseholder kill-two pause pause-leaseholder partition
                      partition-leaseholder ring clock-within split snapshot transfer mixed); shift ;;
    *) echo "jepsen.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ ${#schedules[@]} -gt 0 ] || schedules=(mixed)
./scripts/setup.sh
status=0
for s in "${schedules[@]}"; do
  echo "jepsen.sh: schedule $s, seed $seed, ${seconds}s" >&2
  JEPSEN_SCHEDULE="$s" JEPSEN_SEED="$seed" JEPSEN_SECONDS="$seconds" \
    cargo test --workspace --locked -- --ignored --exact replay --nocapture \
    || status=1
done
exit $status
