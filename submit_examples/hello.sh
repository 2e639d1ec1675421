#!/bin/sh
# The smallest job: says where it ran.
echo "Hello from job $DFARM_JOB_ID on $(hostname), arguments: $*"
