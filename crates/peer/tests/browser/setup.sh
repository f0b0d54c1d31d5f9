#!/usr/bin/env bash
# Installs what the real-browser tests need (crates/peer/tests/browser.rs; transports.rs and
# hub_browser.rs in crates/cli/tests): Debian's Chromium and the npm packages of this folder
# (playwright-core, from package-lock.json).
# Idempotent: installs only what is missing. Run as root (CI) or with sudo.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  echo "browser setup: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  echo "browser setup: node is missing (Node.js >= 20 is needed)" >&2
  exit 1
fi

if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "browser setup: npm ci in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "browser setup: $(/usr/bin/chromium --version 2>/dev/null | head -n1), node $(node --version)" >&2
