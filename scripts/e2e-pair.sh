#!/bin/sh
# The end-to-end suite on the release build and on the ASan+UBSan build at once, each pass with
# its own range of loopback ports (MG_PORTS, below the kernel's ephemeral range) and its own
# log. Most of the suite waits on sockets and timers, so two passes side by side take little
# longer than one. Prints each pass's summary, and the whole log of a pass that failed; exits
# non-zero if either did.
RELEASE=$1; ASAN=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
rlog="$ROOT/$RELEASE/e2e.log"; alog="$ROOT/$ASAN/e2e.log"
(cd "$ROOT" && MG_PORTS=11000-20999 MG_BUILD="$ROOT/$RELEASE" "$PYTHON" -m pytest -q -p no:cacheprovider tests/e2e >"$rlog" 2>&1; echo $? >"$rlog.rc") &
(cd "$ROOT" && MG_PORTS=21000-30999 MG_BUILD="$ROOT/$ASAN" MG_SANITIZED=1 "$PYTHON" -m pytest -q -p no:cacheprovider tests/e2e >"$alog" 2>&1; echo $? >"$alog.rc") &
wait
rc=0
for pass in "release:$rlog" "ASan+UBSan:$alog"; do
  name=${pass%%:*}; log=${pass#*:}
  code=$(cat "$log.rc" 2>/dev/null || echo 1)
  if [ "$code" = 0 ]; then
    echo "-- $name: $(tail -1 "$log")"
  else
    echo "-- $name FAILED (exit $code), its whole output:"
    cat "$log"
    rc=1
  fi
done
exit $rc
