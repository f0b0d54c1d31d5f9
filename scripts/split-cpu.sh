#!/usr/bin/env bash
# How busy each process of the split layout is: `GOTALK serve --threads 1`
# on CPU 0, `GOTALK bench --threads 1 BENCH_ARGS` on CPU 1, and the CPU time
# each used (user and system, from /proc/PID/stat) over the middle 1.5 s of
# the run, as a share of the wall time. Two processes well under 100 % take
# turns (each waits for the other); at 100 % the slower one is the limit.
#
#   scripts/split-cpu.sh GOTALK "-c 640 --size 32 --duration 3s"
#   SERVE_ARGS=--raw-echo scripts/split-cpu.sh GOTALK "--raw -c 640 --size 32 --duration 3s"
#
# The run must last at least 2.5 s. Prints one line: each side's share
# (and its user part), then the bench's req/s and p50. Loopback only.
set -euo pipefail
bin=$1 args=$2
port=$((20000 + RANDOM % 20000))
report=$(mktemp)
# shellcheck disable=SC2086
taskset -c 0 "$bin" serve --threads 1 ${SERVE_ARGS:-} --addr "127.0.0.1:$port" >/dev/null 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait 2>/dev/null; rm -f "$report"' EXIT
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC2086
taskset -c 1 "$bin" bench --threads 1 "127.0.0.1:$port" $args --json >"$report" &
client=$!
# utime and stime, in clock ticks.
times() { awk '{print $14, $15}' "/proc/$1/stat"; }
sleep 0.7
before="$(times $server) $(times $client) $(date +%s.%N)"
sleep 1.5
after="$(times $server) $(times $client) $(date +%s.%N)"
wait $client
python3 - "$report" "$(getconf CLK_TCK)" $before $after <<'PY'
import json, sys
report, hz = sys.argv[1], float(sys.argv[2])
b = list(map(float, sys.argv[3:8]))
a = list(map(float, sys.argv[8:13]))
wall = a[4] - b[4]
share = lambda i: 100 * (a[i] - b[i]) / hz / wall
d = json.load(open(report))
print(f"server {share(0) + share(1):.0f}% (user {share(0):.0f}%)  "
      f"client {share(2) + share(3):.0f}% (user {share(2):.0f}%)  "
      f"{d['requests_per_sec']:.0f} req/s p50 {d['p50_us']} us")
PY
