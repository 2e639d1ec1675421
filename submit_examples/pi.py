#!/usr/bin/env python3
"""Pi to N digits (default 5000) with Machin's formula in integer arithmetic."""

import sys

sys.set_int_max_str_digits(0)


def arctan_inverse(x: int, scale: int) -> int:
    total = term = scale // x
    n, sign, x2 = 1, -1, x * x
    while term:
        term //= x2
        n += 2
        total += sign * (term // n)
        sign = -sign
    return total


digits = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
scale = 10 ** (digits + 10)
pi = 4 * (4 * arctan_inverse(5, scale) - arctan_inverse(239, scale))
text = str(pi // 10**10)
print(text[0] + "." + text[1:])
with open("pi-digits.txt", "w") as out:
    out.write(text + "\n")
