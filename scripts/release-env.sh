# Sourced by the benchmark scripts: builds the release binaries, sets `bin` (flotilla)
# and `load` (flotilla-load), makes a temporary directory `root`, and on exit stops every
# process whose pid the caller added to `pids` (SIGTERM) and removes `root` (KEEP_LOGS=DIR
# copies the nodes' logs to DIR first). Also defines
# `start_three` (a 3-node cluster, below).
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --locked >&2
# FLOTILLA_BIN runs another build of the server (an A/B of two commits on one machine).
bin="${FLOTILLA_BIN:-$target/release/flotilla}"
load="$target/release/flotilla-load"
root="$(mktemp -d /tmp/flotilla-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do [ "$p" -gt 0 ] && kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # KEEP_LOGS=DIR keeps the nodes' logs there.
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$root"/log* "$KEEP_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$root"
}
trap cleanup EXIT

# Makes (once) a CA, the `root` client's certificate ($root/certs) and node I's
# ($root/certsI), for secure mode.
make_certs() {
  [ -d "$root/certs" ] && return
  "$bin" cert create-ca --certs-dir "$root/certs" --ca-key "$root/ca.key" >/dev/null
  "$bin" cert create-client --certs-dir "$root/certs" --ca-key "$root/ca.key" root >/dev/null
  local i
  for i in 1 2 3; do
    mkdir -p "$root/certs$i" && cp "$root/certs/ca.crt" "$root/certs$i/"
    "$bin" cert create-node --certs-dir "$root/certs$i" --ca-key "$root/ca.key" --node-id "$i" 127.0.0.1 localhost >/dev/null
  done
}

# Starts 3 nodes on 127.0.0.1 (gRPC ports 7700, 7800, 7900; data in $root/nI, logs in
# $root/logI), initializes them with $1 initial ranges (default 8), waits until they
# answer, appends their pids to `pids` and sets `endpoints`. With `secure` set the nodes
# run in secure mode (make_certs) and FLOTILLA_CERTS_DIR points the CLI at the root
# client's certificate; otherwise --insecure.
start_three() {
  local ranges="${1:-8}" all="" join i mode=(--insecure)
  unset FLOTILLA_CERTS_DIR
  if [ -n "${secure:-}" ]; then make_certs; export FLOTILLA_CERTS_DIR="$root/certs"; fi
  for i in 1 2 3; do all+="127.0.0.1:$((7600 + 100 * i)),"; done
  all="${all%,}"
  for i in 1 2 3; do
    join="$(echo "$all" | tr ',' '\n' | grep -v ":$((7600 + 100 * i))\$" | paste -sd,)"
    [ -n "${secure:-}" ] && mode=(--certs-dir "$root/certs$i")
    "$bin" start "${mode[@]}" --node-id "$i" --listen "127.0.0.1:$((7600 + 100 * i))" --http-listen "127.0.0.1:$((7601 + 100 * i))" \
      --data-dir "$root/n$i" --join "$join" >"$root/log$i" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 100); do
    "$bin" init --endpoints "127.0.0.1:7700" --initial-ranges "$ranges" >/dev/null 2>&1 && break
    sleep 0.2
  done
  for _ in $(seq 1 150); do "$bin" status --endpoints "127.0.0.1:7700" >/dev/null 2>&1 && break; sleep 0.2; done
  endpoints="$all"
}
