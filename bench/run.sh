#!/bin/sh
# `make bench`: the side-by-side benchmark (see bench/bench.py). Extra arguments go to it,
# e.g. `make bench BENCH_ARGS=--quick`.
set -e
BUILD=${1:-build}
shift || true
ulimit -n 65536 2>/dev/null || true
/usr/bin/python3 "$(dirname "$0")/bench.py" "$BUILD" "$@"
/usr/bin/python3 "$(dirname "$0")/sendfile.py" "$BUILD"
/usr/bin/python3 "$(dirname "$0")/tls.py" "$BUILD"
/usr/bin/python3 "$(dirname "$0")/http2.py" "$BUILD"
/usr/bin/python3 "$(dirname "$0")/compress.py" "$BUILD"
