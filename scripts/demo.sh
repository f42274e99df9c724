#!/usr/bin/env bash
# Starts a local 3-node in-process Flotilla cluster, writes, reads and prints what it did.
# Installs missing build dependencies first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo run --locked -p flotilla-server --bin flotilla -- demo "$@"
