#!/usr/bin/env bash
# Installs what type-checking the JavaScript client needs: typescript, from package-lock.json
# (`npm ci`). The client and its tests need no packages; only `tsc` does.
# Idempotent: installs only when missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v npm >/dev/null 2>&1; then
  echo "js setup: npm is missing (Node.js >= 20 is needed)" >&2
  exit 1
fi
if [ ! -x "$here/node_modules/.bin/tsc" ]; then
  echo "js setup: npm ci in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "js setup: tsc $("$here/node_modules/.bin/tsc" --version)" >&2
