# Sourced by the benchmark scripts: builds the release binaries, sets `bin` (flotilla)
# and `load` (flotilla-load), makes a temporary directory `root`, and on exit stops every
# process whose pid the caller added to `pids` (SIGTERM) and removes `root`.
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --locked >&2
bin="$target/release/flotilla"
load="$target/release/flotilla-load"
root="$(mktemp -d /tmp/flotilla-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do [ "$p" -gt 0 ] && kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
