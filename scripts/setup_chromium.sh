#!/usr/bin/env bash
# Make sure headless Chromium exists for the browser tests (Debian's package; never `playwright install`).
set -euo pipefail
if [ -n "${ATELIER_CHROMIUM:-}" ] && [ -x "$ATELIER_CHROMIUM" ]; then exit 0; fi
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "[atelier] Chromium is missing and I am not root: run 'apt-get install -y chromium' as root, or set ATELIER_CHROMIUM=/path/to/chromium" >&2
    exit 1
  fi
fi
echo "[atelier] installing Debian's chromium for the browser tests"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
