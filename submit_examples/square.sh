#!/bin/sh
# One point of a sweep: the square of the process number.
n=$1
echo "$n squared is $((n * n))"
