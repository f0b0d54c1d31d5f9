#!/usr/bin/env bash
# Compares two `gotalk bench --self` command lines (client and server in one
# process), each run on CPU 1, rounds alternating which goes first: two
# builds with the same arguments, or one build over TCP and over WebSocket.
#
#   scripts/self-pair.sh "OLD_GOTALK bench --self -c 64" "NEW_GOTALK bench --self -c 64" [ROUNDS]
#   scripts/self-pair.sh "gotalk bench --self -c 64" "gotalk bench --self --ws -c 64" [ROUNDS]
#
# Each run lasts 2 s (add --duration to change it). Prints one line per
# round, then the medians and the median of the per-round ratios B/A
# (B is "new", A "old").
# Loopback only; stops by itself.
set -euo pipefail
a=$1 b=$2 rounds=${3:-8}
case "$a $b" in *--duration*) dur="" ;; *) dur="--duration 2s" ;; esac
run() {
  # shellcheck disable=SC2086
  taskset -c 1 $1 $dur --json |
    python3 -c "import json,sys; print(json.load(sys.stdin)['requests_per_sec'])"
}
out=$(for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 0 ]; then ra=$(run "$a"); rb=$(run "$b")
  else rb=$(run "$b"); ra=$(run "$a"); fi
  echo "$r old $ra new $rb"
done)
echo "$out"
echo "$out" | python3 "$(dirname "$0")/pair-medians.py" 2 4
