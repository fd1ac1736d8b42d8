#!/usr/bin/env bash
# Builds moongate with profile-guided optimisation: an instrumented build, a training run
# (bench/pgo_train.py drives it through the request paths users run), then the release build
# optimised with that profile. The binary lands in target/pgo/moongate; target/release is left
# alone. Installs what it needs when missing (scripts/lib/deps.sh: wrk and nghttp2-client for the
# training among them; rustup's llvm-tools component for llvm-profdata). See docs/building.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

. "$here/lib/deps.sh"

# llvm-profdata must come from the LLVM rustc uses: rustup's llvm-tools component has it.
host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    command -v rustup >/dev/null 2>&1 ||
        { echo "build-pgo: llvm-profdata is missing and there is no rustup to add llvm-tools" >&2; exit 1; }
    rustup component add llvm-tools
fi

out="$PWD/target/pgo"
rm -rf "$out/raw"
mkdir -p "$out"
# --target: RUSTFLAGS then apply to moongate and its dependencies, not to build scripts and
# proc macros (which would write profiles of their own while the build runs them).
echo "build-pgo: 1/3 instrumented build"
CARGO_TARGET_DIR="$out/gen" RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$out/raw" \
    cargo build --release --target "$host"
echo "build-pgo: 2/3 training run"
python3 bench/pgo_train.py --moongate "$out/gen/$host/release/moongate" --seconds "${PGO_SECONDS:-3}"
"$profdata" merge -o "$out/merged.profdata" "$out/raw"
# Named by its content: cargo tracks RUSTFLAGS, not the file they name, so a new profile under
# the old name would leave crates built with the previous one.
sum="$(sha256sum "$out/merged.profdata" | cut -c1-16)"
rm -f "$out"/moongate-*.profdata
mv "$out/merged.profdata" "$out/moongate-$sum.profdata"
echo "build-pgo: 3/3 optimised build"
CARGO_TARGET_DIR="$out/use" RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$out/moongate-$sum.profdata" \
    cargo build --release --target "$host"
cp "$out/use/$host/release/moongate" "$out/moongate"
echo "build-pgo: $out/moongate"
