#!/usr/bin/env bash
# Runs moongate's whole test suite: unit tests and integration tests against the real binary.
# Installs what the tests use when it is missing (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

. "$here/lib/deps.sh"

# Debug build: the integration tests start the real binary; speed is measured by bench/, not here.
cargo test --all-targets 2>&1
