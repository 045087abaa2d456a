#!/usr/bin/env bash
# Debian packages the test suite drives as a user would: Chromium (the MLflow UI test, through Playwright) and
# PostgreSQL (team mode: infra/team.sh). Installed once; a no-op when present. Needs root or sudo.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
echo "==> installing ${need[*]} from Debian's packages"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
