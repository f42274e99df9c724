#!/usr/bin/env bash
# Starts a local 3-node in-process Flotilla cluster, writes, reads and prints what it did.
# Installs missing build dependencies first.
#
# The binary is built the way the test suite builds it (`cargo test --no-run`): a plain
# `cargo build` unifies dependency features differently and would compile RocksDB a
# second time (15 minutes on 2 cores) after the tests have compiled it once.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --locked --no-run >&2
target="${CARGO_TARGET_DIR:-target}"
exec "$target/debug/flotilla" demo "$@"
