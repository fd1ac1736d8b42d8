#!/usr/bin/env bash
# Builds moongate and runs it on the shipped conf/, with a sample backend answering the sample
# route: try `curl -i http://127.0.0.1:9080/hello` from another terminal. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v make >/dev/null 2>&1 || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
    echo "quickstart: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "quickstart: cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }

cargo build --release
bin=target/release/moongate
"$bin" check -p . >/dev/null
"$bin" echo --listen 127.0.0.1:1980 --name sample &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
echo "quickstart: sample backend on 127.0.0.1:1980; gateway on :9080 — try: curl -i http://127.0.0.1:9080/hello"
"$bin" run -p .
