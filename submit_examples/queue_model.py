#!/usr/bin/env python3
"""A small queueing model: customers arrive at LOAD per second (Poisson) at one server
that serves 20 per second (exponential). Simulates 5,000 customers with the Lindley
recursion and prints, as its result, a JSON object: the mean wait in milliseconds and
the server's utilization."""

import json
import random
import sys

SERVICE_RATE = 20.0
CUSTOMERS = 5000

load, seed = max(float(sys.argv[1]), 0.1), int(sys.argv[2])
rng = random.Random(seed)
wait = total_wait = busy = 0.0
for _ in range(CUSTOMERS):
    service = rng.expovariate(SERVICE_RATE)
    gap = rng.expovariate(load)
    total_wait += wait
    busy += service
    wait = max(0.0, wait + service - gap)
print(f"load {load:.3f}/s, {CUSTOMERS} customers", file=sys.stderr)
print(json.dumps({"wait_ms": 1000 * total_wait / CUSTOMERS, "utilization": load / SERVICE_RATE}))
