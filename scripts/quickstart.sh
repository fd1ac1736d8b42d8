#!/usr/bin/env bash
# Builds moongate and runs it on the shipped conf/, with a sample backend answering the sample
# route: try `curl -i http://127.0.0.1:9080/hello` from another terminal. Ctrl-C stops both.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

. "$here/lib/deps.sh"

cargo build --release
bin=target/release/moongate
"$bin" check -p . >/dev/null
"$bin" echo --listen 127.0.0.1:1980 --name sample &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
echo "quickstart: sample backend on 127.0.0.1:1980; gateway on :9080 — try: curl -i http://127.0.0.1:9080/hello"
"$bin" run -p .
