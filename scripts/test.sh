#!/usr/bin/env bash
# Runs moongate's whole test suite: unit tests and integration tests against the real binary.
# Installs what the tests use when it is missing (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v make >/dev/null 2>&1 || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "scripts/test.sh: cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }

# Debug build: the integration tests start the real binary; speed is measured by bench/, not here.
cargo test --all-targets 2>&1
