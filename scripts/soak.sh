#!/bin/sh
# `make soak`: 10 minutes of mixed traffic with reloads (see scripts/soak.py).
# SOAK_SECONDS=60 make soak for a shorter run.
set -e
exec /usr/bin/python3 "$(dirname "$0")/soak.py" "${1:-build}" --seconds "${SOAK_SECONDS:-600}"
