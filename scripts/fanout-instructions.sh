#!/usr/bin/env bash
# User-space instructions per delivery of a hub fan-out server, counted by
# callgrind (a figure the machine's load does not change):
#
#   scripts/fanout-instructions.sh FANOUT_BENCH N1 N2
#
# FANOUT_BENCH is the executable `cargo bench -p gotalk-hub --bench fanout
# --no-run` prints. Runs its `server` role (one hub node, memory broker, one
# worker thread) under callgrind twice, with SUBS (100) WebSocket subscribers
# on 10 channels, publishes N1 and then N2 messages through its `publisher`
# role, and prints (total(N2) - total(N1)) / deliveries: start-up and
# shut-down cancel out. WD=ms sets the hub's write delay, RATE the
# publications per second (0: as fast as a window of 16 allows).
# Loopback only; stops by itself.
set -uo pipefail
bin=$1 n1=$2 n2=$3
subs=${SUBS:-100}
total() {
  local n=$1 out fifo holder vg url prefix line
  out=$(mktemp)
  fifo=$(mktemp -u)
  mkfifo "$fifo"
  # The server serves until its stdin closes: hold the fifo open meanwhile.
  (exec 3>"$fifo"; sleep 100000) &
  holder=$!
  env FANOUT_ROLE=server FANOUT_SERVER_THREADS=1 ${WD:+FANOUT_WRITE_DELAY=$WD} \
    GLIBC_TUNABLES=glibc.malloc.tcache_count=1 \
    valgrind --tool=callgrind --callgrind-out-file="$out.cg" "$bin" <"$fifo" >"$out" 2>/dev/null &
  vg=$!
  for _ in $(seq 1 600); do grep -q "^url" "$out" && break; sleep 0.1; done
  url=$(grep "^url" "$out" | cut -d' ' -f2)
  prefix="p$RANDOM-"
  coproc SUBP { env FANOUT_ROLE=subscribers FANOUT_TARGET=gotalk FANOUT_URLS="$url" \
    FANOUT_CHANNELS=10 FANOUT_MSGS="$n" FANOUT_PREFIX="$prefix" FANOUT_SUBS="$subs" "$bin"; }
  read -r line <&"${SUBP[0]}"   # ready
  env FANOUT_ROLE=publisher FANOUT_TARGET=gotalk FANOUT_URL="$url" FANOUT_MSGS="$n" \
    FANOUT_RATE="${RATE:-0}" FANOUT_WINDOW=16 FANOUT_CHANNELS=10 FANOUT_PREFIX="$prefix" \
    "$bin" >/dev/null
  echo drain >&"${SUBP[1]}"
  read -r line <&"${SUBP[0]}"   # result ...
  echo "$line" >&2
  kill "$SUBP_PID" 2>/dev/null
  wait "$SUBP_PID" 2>/dev/null
  kill "$holder"
  wait "$vg" 2>/dev/null
  grep -h "^summary:\|^totals:" "$out.cg" | head -1 | awk '{print $2}'
  rm -f "$out" "$out.cg" "$fifo"
}
a=$(total "$n1")
b=$(total "$n2")
echo "$bin WD=${WD:-none}: $(((b - a) / ((n2 - n1) * subs / 10))) instructions per delivery"
