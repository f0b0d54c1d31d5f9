#!/usr/bin/env bash
# gotalk against the raw baseline of the same shape (`bench --raw`), spread
# over many connections: 640 requests in flight as 1×640, 10×64, 100×6 and
# 1000×1 (connections × in flight per connection), 32 B, rounds alternating
# which goes first.
#
#   scripts/many-conns.sh GOTALK self  [ROUNDS] [DURATION]
#   scripts/many-conns.sh GOTALK split [ROUNDS] [DURATION]
#   scripts/many-conns.sh GOTALK mem   [ROUNDS] [DURATION]
#
# self: `bench --self` (server and client in one process, one thread).
# split: `serve --threads 1` and `serve --raw-echo --threads 1` on CPU 0,
# `bench --threads 1` on CPU 1. Prints one line per run, then the medians
# per shape.
# mem: as split, but a fresh server for every run, and its resident memory
# (VmRSS of /proc/PID/status) read before the run and halfway through it:
# the growth per busy connection (the rates of this layout include the
# fresh server's warm-up: compare them in split).
# SHAPES="1x640 10x64" overrides the shapes. Loopback only; stops by itself.
set -euo pipefail
bin=$1 layout=$2 rounds=${3:-3} dur=${4:-2}
shapes=${SHAPES:-1x640 10x64 100x6 1000x1}
ulimit -n 8192
pg=$((20000 + RANDOM % 10000)) pr=$((30000 + RANDOM % 10000))
servers() {
  taskset -c 0 "$bin" serve --threads 1 --addr 127.0.0.1:$pg >/dev/null 2>&1 & sg=$!
  taskset -c 0 "$bin" serve --raw-echo --threads 1 --addr 127.0.0.1:$pr >/dev/null 2>&1 & sr=$!
  sleep 0.5
}
sg="" sr=""
trap 'kill -INT $sg $sr 2>/dev/null; wait 2>/dev/null' EXIT
[ "$layout" = split ] && servers
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# The JSON report's req/s, p50 and p99, or a line saying the run failed.
fields() {
  python3 -c "import json,sys; d=json.load(sys.stdin); assert d['errors'] == 0; print(d['requests_per_sec'], d['p50_us'], d['p99_us'])" 2>/dev/null ||
    echo "FAILED"
}
# run KIND CONNS C: prints "KIND CONNS C req/s p50_us p99_us [rss_before_kib rss_busy_kib]"
run() {
  local kind=$1 n=$2 c=$3 raw="" json pid port before busy
  [ "$kind" = raw ] && raw=--raw
  if [ "$layout" = self ]; then
    json=$("$bin" bench --self $raw --conns "$n" -c "$c" --duration "${dur}s" --json || true)
    echo "$kind $n $c $(echo "$json" | fields)"
    return
  fi
  if [ "$layout" = mem ]; then
    # A fresh server of this kind only, once it accepts.
    port=$((20000 + RANDOM % 20000))
    local serve_raw=""
    [ "$kind" = raw ] && serve_raw=--raw-echo
    taskset -c 0 "$bin" serve --threads 1 $serve_raw --addr 127.0.0.1:$port >/dev/null 2>&1 &
    pid=$!
    if [ "$kind" = raw ]; then sr=$pid; else sg=$pid; fi
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    sleep 0.3
  elif [ "$kind" = raw ]; then pid=$sr port=$pr
  else pid=$sg port=$pg; fi
  before=$(rss $pid)
  (sleep "$(python3 -c "print($dur / 2 + 0.3)")"; rss $pid >"/tmp/many-conns.$$") &
  json=$(taskset -c 1 "$bin" bench --threads 1 $raw --conns "$n" -c "$c" --duration "${dur}s" --json "127.0.0.1:$port" || true)
  wait $!
  busy=$(cat "/tmp/many-conns.$$")
  echo "$kind $n $c $(echo "$json" | fields) $before $busy"
  if [ "$layout" = mem ]; then
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  fi
}
out=$(for r in $(seq 1 "$rounds"); do
  for shape in $shapes; do
    n=${shape%x*} c=${shape#*x}
    if [ $((r % 2)) = 1 ]; then run gotalk "$n" "$c"; run raw "$n" "$c"
    else run raw "$n" "$c"; run gotalk "$n" "$c"; fi
  done
done)
rm -f "/tmp/many-conns.$$"
echo "$out"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
summary=$(cat <<'PY'
import statistics, sys
rows = [l.split() for l in sys.stdin if l.strip() and "FAILED" not in l]
shapes = []
for r in rows:
    if (r[1], r[2]) not in shapes: shapes.append((r[1], r[2]))
med = lambda xs: statistics.median(xs) if xs else float("nan")
for n, c in shapes:
    pick = lambda k: [r for r in rows if r[0] == k and (r[1], r[2]) == (n, c)]
    g, w = pick("gotalk"), pick("raw")
    rate = lambda rs: med([float(r[3]) for r in rs])
    line = "%5sx%-3s gotalk %8.0f req/s p50 %7.0f p99 %7.0f us | raw %8.0f req/s p50 %7.0f p99 %7.0f us | ratio %.2f" % (
        n, c, rate(g), med([float(r[4]) for r in g]), med([float(r[5]) for r in g]),
        rate(w), med([float(r[4]) for r in w]), med([float(r[5]) for r in w]), rate(g) / rate(w))
    if len(g[0]) > 6 and sys.argv[1] == "mem":
        per = lambda rs: med([(float(r[7]) - float(r[6])) / int(n) for r in rs])
        line += " | RSS growth per conn: gotalk %.1f KiB, raw %.1f KiB" % (per(g), per(w))
    print(line)
PY
)
echo "$out" | python3 -c "$summary" "$layout"
