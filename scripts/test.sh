#!/usr/bin/env bash
# Runs Flotilla's whole test suite (unit, deterministic cluster harness, driver tests).
# Installs missing build dependencies first. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --locked "$@"
