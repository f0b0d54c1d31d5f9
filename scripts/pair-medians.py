#!/usr/bin/env python3
"""Medians of a pair of benchmarks run in alternating rounds.

    ... | scripts/pair-medians.py OLD_COLUMN NEW_COLUMN

Reads one line per round on stdin (whitespace-separated, columns counted
from 0) and prints the median requests per second of each side and the
median, min and max of the per-round ratios new/old. Used by
bench-pair.sh and self-pair.sh.
"""
import statistics
import sys

old_col, new_col = int(sys.argv[1]), int(sys.argv[2])
rows = [line.split() for line in sys.stdin if line.strip()]
old = [float(r[old_col]) for r in rows]
new = [float(r[new_col]) for r in rows]
ratios = [n / o for o, n in zip(old, new)]
print("median req/s: old %.0f new %.0f; median ratio new/old %.3f (min %.2f, max %.2f)"
      % (statistics.median(old), statistics.median(new), statistics.median(ratios),
         min(ratios), max(ratios)))
