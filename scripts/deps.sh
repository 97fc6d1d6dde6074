#!/bin/sh
# Installs the Debian packages given as arguments that are not installed yet.
# Nothing is installed when everything is present, so this is cheap to call on every build.
set -e
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "moongate: installing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# Packaged servers (nginx, apache2) must not start system services on install.
export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
