#!/bin/sh
# Reads the memcheck logs of `make valgrind`: every process must end with no error and no
# definitely lost block. Prints a summary line per log.
set -e
dir=$1
bad=0
n=0
for f in "$dir"/vg.*.log; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f" | tail -1)
  lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tail -1)
  if [ "${errors:-0}" != "0" ] || { [ -n "$lost" ] && [ "$lost" != "0" ]; }; then
    echo "valgrind: $f: $errors errors, ${lost:-0} bytes definitely lost"
    bad=1
  fi
done
echo "valgrind: $n process logs read"
[ "$n" -gt 0 ] || { echo "valgrind: no logs"; exit 1; }
exit $bad
