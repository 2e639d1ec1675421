#!/usr/bin/env python3
"""Statistics of the 'value' column of a CSV file (the file is the first argument)."""

import csv
import statistics
import sys

with open(sys.argv[1], newline="") as f:
    values = [float(row["value"]) for row in csv.DictReader(f)]
print(f"rows: {len(values)}")
print(f"mean: {statistics.mean(values):.3f}")
print(f"stdev: {statistics.stdev(values):.3f}")
print(f"min: {min(values):g}  median: {statistics.median(values):g}  max: {max(values):g}")
