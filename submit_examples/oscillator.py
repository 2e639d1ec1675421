#!/usr/bin/env python3
"""A damped spring: x'' = -STIFFNESS x - DAMPING x', from x = 1 at rest.
Prints, as its result, the energy left after 10 seconds (semi-implicit Euler)."""

import sys

damping, stiffness = float(sys.argv[1]), float(sys.argv[2])
x, v, dt = 1.0, 0.0, 1e-4
for _ in range(100_000):
    v += (-stiffness * x - damping * v) * dt
    x += v * dt
print(f"damping {damping}, stiffness {stiffness}", file=sys.stderr)
print(0.5 * v * v + 0.5 * stiffness * x * x)
