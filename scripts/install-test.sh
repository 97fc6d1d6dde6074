#!/bin/sh
# Installs moongate as `make install PREFIX=/usr DESTDIR=...` would into a scratch DESTDIR, then
# checks what a packager or an admin would: every file in place, the man page renders without
# warnings and lists every option `moongate -h` prints, the systemd unit and the logrotate
# snippet point at the installed binary and config, and the installed binary checks the
# installed configuration and serves a request. Loopback only; cleans up after itself.
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=$(mktemp -d /tmp/moongate-install-XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$SCRATCH"' EXIT
cd "$ROOT"
make -s install PREFIX=/usr DESTDIR="$SCRATCH/root" INSTALL_BUILD="$SCRATCH/build" >/dev/null
fail() { echo "install-test: $*" >&2; exit 1; }
for f in usr/sbin/moongate usr/share/man/man8/moongate.8 usr/lib/systemd/system/moongate.service \
         etc/logrotate.d/moongate etc/moongate/init.lua usr/share/doc/moongate/reference.md \
         usr/share/doc/moongate/deploying.md usr/share/doc/moongate/examples/auth_request.lua; do
  [ -e "$SCRATCH/root/$f" ] || fail "missing $f"
done
BIN="$SCRATCH/root/usr/sbin/moongate"
"$BIN" -V | grep -q "moongate" || fail "the installed binary does not run"
# The man page renders cleanly and documents every option of -h.
MANWIDTH=80 man --warnings -l "$SCRATCH/root/usr/share/man/man8/moongate.8" >"$SCRATCH/man.txt" 2>"$SCRATCH/man.err" || fail "man page does not render"
[ -s "$SCRATCH/man.err" ] && fail "man page warnings: $(cat "$SCRATCH/man.err")"
for opt in $("$BIN" -h 2>&1 | grep -o -- ' -[a-zA-Z-]*' | sort -u); do
  grep -q -- "$opt" "$SCRATCH/man.txt" || fail "option $opt of -h is not in the man page"
done
for s in reload stop quit reopen; do grep -q "$s" "$SCRATCH/man.txt" || fail "-s $s is not in the man page"; done
# The unit and the snippet name the installed binary and config; reload is HUP.
U="$SCRATCH/root/usr/lib/systemd/system/moongate.service"
grep -q '^ExecStart=/usr/sbin/moongate -c /etc/moongate/init.lua' "$U" || fail "unit ExecStart"
grep -q '^ExecReload=/bin/kill -HUP $MAINPID' "$U" || fail "unit ExecReload"
grep -q '^Type=\(notify\|simple\)' "$U" || fail "unit Type"
grep -q '/usr/sbin/moongate -s reopen' "$SCRATCH/root/etc/logrotate.d/moongate" || fail "logrotate postrotate"
# The demo configuration and every example pass -t with the installed binary.
"$BIN" -t -c "$ROOT/init.lua" | grep -q "configuration ok" || fail "the demo init.lua does not pass -t with the installed binary"
# The installed configuration passes -t (www-data exists on Debian).
"$BIN" -t -c "$SCRATCH/root/etc/moongate/init.lua" | grep -q "configuration ok" || fail "installed init.lua does not pass -t"
# The installed binary serves: the installed config moved to a free port and a scratch log dir.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$SCRATCH/log"
sed -e "s/127.0.0.1:8080/127.0.0.1:$PORT/" -e "s#/var/log/moongate#$SCRATCH/log#" \
    "$SCRATCH/root/etc/moongate/init.lua" > "$SCRATCH/init.lua"
"$BIN" -c "$SCRATCH/init.lua" --pid "$SCRATCH/moongate.pid" 2>"$SCRATCH/stderr" &
PID=$!
i=0
until curl -sf "http://127.0.0.1:$PORT/healthz" >"$SCRATCH/out" 2>/dev/null; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "the installed binary does not answer: $(cat "$SCRATCH/stderr")"
  sleep 0.05
done
[ "$(cat "$SCRATCH/out")" = "ok" ] || fail "unexpected answer: $(cat "$SCRATCH/out")"
"$BIN" -s reopen --pid "$SCRATCH/moongate.pid" || fail "-s reopen"
"$BIN" -s stop --pid "$SCRATCH/moongate.pid" || fail "-s stop"
wait $PID || fail "the master did not stop cleanly"
PID=
grep -q "log files reopened" "$SCRATCH/log/error.log" || fail "no reopen in the installed error log"
echo "install-test: installed into a scratch DESTDIR; binary, man page, unit, logrotate and config checked; it served and stopped: ok"
