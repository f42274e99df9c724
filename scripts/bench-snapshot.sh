#!/usr/bin/env bash
# Measures adding a replica of a large range (issue 11): starts 4 release-built nodes on
# 127.0.0.1 (fsync on), one user range that never splits, removes node 4's replica of it,
# fills it with MIB MiB of incompressible values, then
#   1. copies the same number of bytes through a loopback TCP socket onto the disk
#      (read, send, receive, write, fsync: the baseline), and
#   2. adds a replica on node 4 (`flotilla change-replicas R --add 4`), timing it and
#      sampling the sender's and receiver's resident memory (VmRSS, every 50 ms) and CPU
#      time (/proc/PID/stat);
#   3. runs LOAD_SECS of foreground puts (16 clients, into the same range, 3 voters) without any
#      change, then again while a follower's replica is replaced by one on node 4 MOVES times
#      (default 1; the first removal happens before the measured window).
# Run once with RATE=0 (no snapshot throttle) and once with the default throttle.
#
#   scripts/bench-snapshot.sh                 # MIB=256 RATE=0
#   RATE=33554432 scripts/bench-snapshot.sh   # 32 MiB/s throttle
set -euo pipefail
cd "$(dirname "$0")/.."
mib="${MIB:-256}"
rate="${RATE:-0}"
load_secs="${LOAD_SECS:-15}"
moves="${MOVES:-1}"
# shellcheck source=scripts/release-env.sh
source scripts/release-env.sh

port() { echo $((7600 + 100 * $1)); }
endpoints=""
for i in 1 2 3 4; do endpoints+="127.0.0.1:$(port "$i"),"; done
endpoints="${endpoints%,}"
for i in 1 2 3 4; do
  join="$(echo "$endpoints" | tr ',' '\n' | grep -v ":$(port "$i")\$" | paste -sd,)"
  "$bin" start --insecure --node-id "$i" --listen "127.0.0.1:$(port "$i")" --http-listen "127.0.0.1:$(( $(port "$i") + 1 ))" \
    --data-dir "$root/n$i" --split-size 4294967296 --snapshot-rate "$rate" --join "$join" >"$root/log$i" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do
  if "$bin" init --endpoints "127.0.0.1:$(port 1)" --initial-ranges 1 >/dev/null 2>&1; then break; fi
  sleep 0.2
done
ep="127.0.0.1:$(port 1)"
cli() { "$bin" "$@" --endpoints "$ep"; }
for _ in $(seq 1 100); do cli status >/dev/null 2>&1 && break; sleep 0.2; done
# The user range: the one that is not the meta range.
range_field() { cli ranges -o json | python3 -c "import json,sys; r=[x for x in json.load(sys.stdin)['ranges'] if not x['meta']][0]; print(r['$1'])"; }
range="$(range_field range_id)"
pid_of() { echo "${pids[$(($1 - 1))]}"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk="$(getconf CLK_TCK)"

cli change-replicas "$range" --remove 4 >/dev/null
keys=$((mib * 256)) # 4 KiB values
echo "== filling range $range with $keys keys of 4 KiB ($mib MiB)"
"$load" --endpoints "$endpoints" --clients 32 --keys "$keys" --key-size 16 --value-size 4096 --read-ratio 0 \
  --preload --ops 1 >/dev/null

# 1. The baseline: the same bytes through loopback onto the disk, fsynced.
bytes=$((mib << 20))
head -c "$bytes" /dev/urandom >"$root/blob"
sync
base_s="$(python3 - "$root/blob" "$root/blob.copy" <<'PY'
import os, socket, sys, threading, time
src, dst = sys.argv[1], sys.argv[2]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def receive():
    conn, _ = srv.accept()
    with open(dst, "wb") as f:
        while True:
            b = conn.recv(1 << 20)
            if not b: break
            f.write(b)
        f.flush(); os.fsync(f.fileno())
t0 = time.time()
th = threading.Thread(target=receive); th.start()
c = socket.create_connection(srv.getsockname())
with open(src, "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b: break
        c.sendall(b)
c.close(); th.join()
print(f"{time.time() - t0:.3f}")
PY
)"
rm -f "$root/blob" "$root/blob.copy"
echo "baseline: $mib MiB through loopback onto disk in ${base_s} s ($(python3 -c "print(round($mib/$base_s))") MiB/s)"

# 2. Add the replica; sample memory and CPU of the sender (leader) and receiver.
leader="$(range_field leader_node)"
spid="$(pid_of "$leader")"; rpid="$(pid_of 4)"
s0="$(cpu_ticks "$spid")"; r0="$(cpu_ticks "$rpid")"
srss0="$(awk '/VmRSS/{print $2}' "/proc/$spid/status")"; rrss0="$(awk '/VmRSS/{print $2}' "/proc/$rpid/status")"
sent0="$(curl -s "127.0.0.1:$(( $(port "$leader") + 1 ))/metrics" | awk '/^flotilla_transport_snapshot_bytes_sent_total/{print $2}')"
(
  smax=0; rmax=0
  while [ ! -f "$root/added" ]; do
    s="$(awk '/VmRSS/{print $2}' "/proc/$spid/status")"; r="$(awk '/VmRSS/{print $2}' "/proc/$rpid/status")"
    [ "$s" -gt "$smax" ] && smax=$s; [ "$r" -gt "$rmax" ] && rmax=$r
    sleep 0.05
  done
  echo "$smax $rmax" >"$root/rss"
) &
t0="$(date +%s.%N)"
cli change-replicas "$range" --add 4 >/dev/null
t1="$(date +%s.%N)"
touch "$root/added"; wait $!
read -r smax rmax <"$root/rss"
s1="$(cpu_ticks "$spid")"; r1="$(cpu_ticks "$rpid")"
sent1="$(curl -s "127.0.0.1:$(( $(port "$leader") + 1 ))/metrics" | awk '/^flotilla_transport_snapshot_bytes_sent_total/{print $2}')"
python3 - <<PY
t = $t1 - $t0; sent = ($sent1 - $sent0) / 2**20
print(f"add replica (node $leader -> node 4, rate limit $rate): {t:.2f} s for the whole change, {sent:.0f} MiB of snapshot files sent, {sent / t:.0f} MiB/s")
print(f"  sender RSS {$srss0/1024:.0f} MiB before, {$smax/1024:.0f} MiB at most during; receiver {$rrss0/1024:.0f} MiB before, {$rmax/1024:.0f} MiB at most")
print(f"  CPU: sender {($s1 - $s0) / $clk:.2f} s, receiver {($r1 - $r0) / $clk:.2f} s ({(($s1 - $s0) + ($r1 - $r0)) / $clk / max(sent, 1) * 1000:.1f} ms per MiB)")
PY

# 3. Foreground puts without, then with, replica moves.
fg=(--endpoints "$endpoints" --clients 16 --keys 100000 --key-size 16 --value-size 128 --read-ratio 0
  --duration-secs "$load_secs" --warmup-secs 2 --seed 7)
cpu_all() { local t=0; for p in "${pids[@]}"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
foreground() {
  local c0 c1 out ops
  c0="$(cpu_all)"
  out="$("$load" "${fg[@]}")"
  c1="$(cpu_all)"
  echo "$out" | grep -E "^(throughput|measured|write)"
  ops="$(echo "$out" | awk '/^measured/{print $4}')"
  python3 -c "print(f'  server CPU (4 nodes, warm-up included): {($c1 - $c0) / $clk:.1f} s, {($c1 - $c0) / $clk / max($ops, 1) * 1e6:.0f} us per measured put')"
}
cli change-replicas "$range" --remove 4 >/dev/null
leader="$(range_field leader_node)"
out=1; [ "$leader" = 1 ] && out=2
echo "== foreground puts, no membership change (3 voters)"
foreground
echo "== foreground puts while a replica moves to node 4 ($moves time(s); 3 voters throughout)"
(
  for _ in $(seq 1 "$moves"); do
    [ -f "$root/stop" ] && break
    cli change-replicas "$range" --remove 4 >/dev/null 2>&1 || true
    cli change-replicas "$range" --add "$out" >/dev/null 2>&1 || true
    sleep 2 # into the measured window (the load warms up for 2 s)
    a0="$(date +%s.%N)"
    # Replace a follower's replica by one on node 4: learner, snapshot, joint step.
    cli change-replicas "$range" --add 4 --remove "$out" >/dev/null 2>&1 &&
      echo "move took $(python3 -c "import time; print(round(time.time() - $a0, 2))") s" >>"$root/moves"
  done
) &
mover=$!
foreground
touch "$root/stop"; wait "$mover" || true
echo "replica moves during the load: $(wc -l <"$root/moves" 2>/dev/null || echo 0)"
cat "$root/moves" 2>/dev/null || true
