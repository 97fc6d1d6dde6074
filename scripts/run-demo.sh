#!/bin/sh
# `make run`: starts the demo SCGI app (two instances, for the demo balancer) and moongate
# on ./init.lua in the foreground. Ctrl-C stops all of them.
set -e
BUILD=${1:-build}
PORT=${2:-8080}
cd "$(dirname "$0")/.."
DEMO_NAME=a python3 examples/demo_app.py 127.0.0.1:4000 & APP1=$!
DEMO_NAME=b python3 examples/demo_app.py 127.0.0.1:4001 & APP2=$!
trap 'kill $APP1 $APP2 2>/dev/null; kill $MG 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
"$BUILD/moongate" -t -c init.lua
"$BUILD/moongate" -c init.lua & MG=$!
sleep 0.5
echo
echo "moongate is serving http://127.0.0.1:$PORT/"
echo "  try: curl http://127.0.0.1:$PORT/app/hello          (the demo app via a balancer)"
echo "       curl http://127.0.0.1:$PORT/health             (a Lua handler)"
echo "       curl http://127.0.0.1:$PORT/status             (balancer status, JSON)"
echo "Ctrl-C stops it."
wait $MG
