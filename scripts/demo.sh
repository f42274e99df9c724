#!/usr/bin/env bash
# Starts a local 3-node in-process Flotilla cluster, writes, reads and scans through the
# embeddable Db API, and prints what it did. Installs missing build dependencies first.
#
# Builds the whole workspace rather than `cargo run -p flotilla-server`: selecting one
# package changes cargo's feature unification and would compile RocksDB a second time
# (15 minutes on 2 cores) next to the build the test suite uses.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --workspace --locked >&2
target="${CARGO_TARGET_DIR:-target}"
exec "$target/debug/flotilla" demo "$@"
