#!/bin/sh
# A job that fails: its stderr and exit code come back to the user.
echo "reading config.yaml" 
echo "error: config.yaml not found" >&2
exit 2
