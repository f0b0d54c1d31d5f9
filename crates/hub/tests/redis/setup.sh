#!/usr/bin/env bash
# Installs what the real-Redis tests of gotalk-hub need: Debian's
# redis-server (the tests start their own instances on loopback ports; no
# service is enabled or started here). Idempotent and non-interactive:
# installs only what is missing. Run as root (CI) or with sudo.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis setup: installing Debian's redis-server" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: the tests need the server binary only.
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

# The package's own service (if the package manager started one on 6379)
# is not used by the tests; they never touch the default port.
echo "redis setup: $(redis-server --version | head -n1)" >&2
