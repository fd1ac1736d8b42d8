#!/usr/bin/env bash
# Runs APISIX's own test files through `moongate test` and prints one table row per file, the
# measurement behind docs/compatibility.md.
#
#   scripts/apisix-compat.sh APISIX_DIR [FILE.t ...]
#
# APISIX_DIR is a checkout of apache/apisix with its `t/toolkit` submodule filled in
# (`git clone --recursive`, or `git submodule update --init t/toolkit`). Its plugins are copied
# into a scratch Lua root outside this repository for the run (moongate ships none of APISIX's
# code); nothing under APISIX_DIR is changed. FILEs are paths relative to APISIX_DIR (default:
# the plugin files issue 6 names). Logs of each file go to $COMPAT_OUT (default a temporary
# directory, printed at the end). Uses $MOONGATE_BIN, else target/release/moongate (built when missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

apisix="${1:?usage: $0 APISIX_DIR [FILE.t ...]}"
apisix="$(cd "$apisix" && pwd)"
shift
[ -d "$apisix/apisix/plugins" ] || { echo "$apisix is not an APISIX checkout" >&2; exit 2; }
if [ ! -f "$apisix/t/toolkit/json.lua" ]; then
    echo "$apisix/t/toolkit is empty: run 'git submodule update --init t/toolkit' in the checkout" >&2
    exit 2
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    for name in key-auth basic-auth jwt-auth hmac-auth consumer-restriction proxy-rewrite \
        redirect response-rewrite cors ip-restriction uri-blocker request-id real-ip mocking \
        fault-injection traffic-split request-validation serverless echo gzip; do
        files+=("t/plugin/$name.t")
    done
fi

bin="${MOONGATE_BIN:-$repo/target/release/moongate}"
[ -x "$bin" ] || (cd "$repo" && cargo build --release)

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/lua"
cp -r "$apisix/apisix/plugins" "$scratch/lua/plugins"
out="${COMPAT_OUT:-$(mktemp -d)}"
mkdir -p "$out"

printf '| file | passed | failed | skipped | passed %% |\n|---|---|---|---|---|\n'
cd "$apisix"
for f in "${files[@]}"; do
    log="$out/$(echo "$f" | tr '/' '_').log"
    # The runner binds APISIX's fixed test ports: one file at a time on this machine.
    flock /tmp/moongate-test-ports.lock \
        "$bin" test --apisix-root . --lua-path "$repo/lua" --lua-path "$scratch/lua" "$f" \
        >"$log" 2>&1 || true
    summary="$(tail -n 1 "$log")"
    if [[ "$summary" =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed,\ ([0-9]+)\ skipped ]]; then
        p=${BASH_REMATCH[1]} x=${BASH_REMATCH[2]} s=${BASH_REMATCH[3]}
        total=$((p + x + s))
        pct=$([ "$total" -gt 0 ] && echo $((100 * p / total)) || echo -)
        printf '| %s | %s | %s | %s | %s |\n' "$f" "$p" "$x" "$s" "$pct"
    else
        printf '| %s | - | - | - | (no summary: see %s) |\n' "$f" "$log"
    fi
done
echo
echo "logs: $out"
