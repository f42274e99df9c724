#!/usr/bin/env bash
# Runs Flotilla's whole test suite (unit, deterministic cluster harness, driver tests),
# after the gates: formatting (`cargo fmt`) and lints (`cargo clippy`, warnings are
# errors). Installs missing build dependencies first. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
