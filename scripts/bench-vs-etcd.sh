#!/usr/bin/env bash
# Flotilla against etcd on this machine, in one run (issue 13): 3 Flotilla nodes, then 3
# etcd members (Debian's etcd-server, installed if missing), on 127.0.0.1 with fsync on,
# one system at a time (the other stopped), driven by the same load generator
# (`flotilla-load`, `--backend etcd` for etcd) with identical keys, values, client counts
# and warm-up. Rows: puts and linearizable gets, 1 and 100 clients, for 8-byte ASCII keys
# (zero-padded decimal, uniform over KEYS) and 16-byte uniform random keys, 256-byte
# values. Each row: ops/s, p50/p99/p999 ms, and the server CPU seconds per 1,000
# operations summed over the three server processes (/proc/PID/stat, sampled around the
# measured window only: the warm-up is a run of its own before it), then the
# Flotilla/etcd ratios.
#
# Flotilla's rows use `Kv.Commands` streams (flotilla-load's default `--rpc stream`);
# UNARY=1 adds the same rows over one unary call per request ("flotilla-unary"), on the
# same cluster. SETS limits the key sets (default "ascii8 random16"), SYSTEMS the systems
# (default "flotilla etcd"; "flotilla-tls" adds a fresh cluster in secure mode, the same
# rows over TLS with client certificates, and its ratios to plaintext), KINDS the operations (default "puts gets") and CLIENTS the
# client counts (default "1 100"): `SYSTEMS=flotilla KINDS=puts CLIENTS=100` is a quick A/B.
#
#   scripts/bench-vs-etcd.sh                 # SECS=15 KEYS=20000 per row
#   SECS=30 scripts/bench-vs-etcd.sh
#   UNARY=1 SETS=random16 scripts/bench-vs-etcd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SECS:-15}"
keys="${KEYS:-20000}"
warmup="${WARMUP:-3}"
ranges="${RANGES:-8}"
sets="${SETS:-ascii8 random16}"
systems="${SYSTEMS:-flotilla etcd}"
kinds="${KINDS:-puts gets}"
client_counts="${CLIENTS:-1 100}"

if ! command -v etcd >/dev/null 2>&1; then
  echo "bench-vs-etcd: installing etcd-server" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
fi
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh
etcd_bin="$(command -v etcd)"
results="$root/results"
: >"$results"

cpu_all() { local t=0; for p in "${pids[@]}"; do [ "$p" -gt 0 ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
clk="$(getconf CLK_TCK)"
stop_all() {
  for p in "${pids[@]}"; do [ "$p" -gt 0 ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do [ "$p" -gt 0 ] && wait "$p" 2>/dev/null || true; done
  pids=()
}

start_etcd() {
  local cluster="" i
  for i in 1 2 3; do cluster+="e$i=http://127.0.0.1:$((12380 + 10 * i)),"; done
  cluster="${cluster%,}"
  for i in 1 2 3; do
    "$etcd_bin" --name "e$i" --data-dir "$root/e$i" \
      --listen-client-urls "http://127.0.0.1:$((12379 + 10 * i))" --advertise-client-urls "http://127.0.0.1:$((12379 + 10 * i))" \
      --listen-peer-urls "http://127.0.0.1:$((12380 + 10 * i))" --initial-advertise-peer-urls "http://127.0.0.1:$((12380 + 10 * i))" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token flotilla-bench \
      --log-level error >"$root/elog$i" 2>&1 &
    pids+=($!)
  done
  endpoints="127.0.0.1:12389,127.0.0.1:12399,127.0.0.1:12409"
}

# One row: warm-up run, then the measured run with the server CPU sampled around it.
row() { # system label clients read-ratio keyargs...
  local system="$1" label="$2" clients="$3" ratio="$4"
  shift 4
  local backend="${system%%-*}" rpc=()
  [ "$system" = flotilla-unary ] && rpc=(--rpc unary)
  [ "$system" = flotilla-tls ] && rpc=(--certs-dir "$root/certs")
  local args=(--backend "$backend" --endpoints "$endpoints" --clients "$clients" --read-ratio "$ratio"
    --keys "$keys" --value-size 256 --seed 7 "${rpc[@]}" "$@")
  "$load" "${args[@]}" --duration-secs "$warmup" >/dev/null
  local c0 c1 out
  c0="$(cpu_all)"
  out="$("$load" "${args[@]}" --duration-secs "$secs" --json)"
  c1="$(cpu_all)"
  python3 - "$system" "$label" "$(( c1 - c0 ))" "$clk" "$out" >>"$results" <<'PY'
import json, sys
system, label, ticks, clk, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = json.loads(out)
kind = r["reads"] if r["reads"]["ops"] else r["writes"]
ops = max(r["ops"], 1)
cpu_per_1000 = ticks / clk / ops * 1000
print(json.dumps({"system": system, "row": label, "ops_per_sec": r["ops_per_sec"], "errors": r["errors"],
                  "p50": kind["p50_ms"], "p99": kind["p99_ms"], "p999": kind["p999_ms"], "cpu_per_1000": cpu_per_1000}))
PY
  tail -1 "$results" >&2
}

rows() { # system
  local set
  for set in $sets; do
    local keyargs
    if [ "$set" = ascii8 ]; then keyargs=(--key-size 8 --ascii-keys); else keyargs=(--key-size 16); fi
    # Write every key once, so that gets find values.
    local tls=()
    [ "$1" = flotilla-tls ] && tls=(--certs-dir "$root/certs")
    "$load" --backend "${1%%-*}" --endpoints "$endpoints" --clients 32 --keys "$keys" --value-size 256 --read-ratio 0 \
      --preload --ops 1 "${keyargs[@]}" "${tls[@]}" >/dev/null
    local clients kind
    for clients in $client_counts; do
      for kind in $kinds; do
        local ratio=0 noun="clients"
        [ "$kind" = gets ] && ratio=1
        [ "$clients" = 1 ] && noun="client"
        row "$1" "$set $kind, $clients $noun" "$clients" "$ratio" "${keyargs[@]}"
      done
    done
  done
}

if [[ " $systems " == *" flotilla "* ]]; then
  echo "== Flotilla: 3 nodes, $ranges initial ranges" >&2
  start_three "$ranges"
  rows flotilla
  if [ -n "${UNARY:-}" ]; then rows flotilla-unary; fi
  stop_all
fi
if [[ " $systems " == *" flotilla-tls "* ]]; then
  echo "== Flotilla in secure mode (TLS, mutual TLS between nodes): 3 nodes, $ranges initial ranges" >&2
  rm -rf "$root/n1" "$root/n2" "$root/n3"
  secure=1 start_three "$ranges"
  rows flotilla-tls
  stop_all
fi
if [[ " $systems " == *" etcd "* ]]; then
  echo "== etcd $("$etcd_bin" --version | head -1 | awk '{print $3}'): 3 members" >&2
  start_etcd
  rows etcd
  stop_all
fi

python3 - "$results" "$secs" "$keys" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["system"], r["row"]): r for r in rows}
labels = list(dict.fromkeys(r["row"] for r in rows))
print(f"3 nodes each, 127.0.0.1, fsync on; {sys.argv[2]} s per row after a warm-up; {sys.argv[3]} keys; 256-byte values")
print(f"{'row':<26} {'system':<14} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} {'CPU s/1k ops':>13}  errors")
for label in labels:
    for system in ("flotilla", "flotilla-unary", "flotilla-tls", "etcd"):
        r = by.get((system, label))
        if r:
            print(f"{label:<26} {system:<14} {r['ops_per_sec']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['p999']:>8.2f} {r['cpu_per_1000']:>13.3f}  {r['errors']}")
    f, t = by.get(("flotilla", label)), by.get(("flotilla-tls", label))
    if f and t:
        print(f"{'':<26} {'tls/plain':<14} {t['ops_per_sec'] / max(f['ops_per_sec'], 1e-9):>8.2f}x "
              f"{t['p50'] / max(f['p50'], 1e-9):>7.2f}x {'':>8} {'':>8} {t['cpu_per_1000'] / max(f['cpu_per_1000'], 1e-9):>12.2f}x")
    e = by.get(("etcd", label))
    if f and e:
        tput = f["ops_per_sec"] / max(e["ops_per_sec"], 1e-9)
        cpu = f["cpu_per_1000"] / max(e["cpu_per_1000"], 1e-9)
        lat = f["p50"] / max(e["p50"], 1e-9)
        print(f"{'':<26} {'ratio':<14} {tput:>8.2f}x {lat:>7.2f}x {'':>8} {'':>8} {cpu:>12.2f}x")
PY
