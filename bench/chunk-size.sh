#!/usr/bin/env bash
# Chooses the engine's default chunk size: runs the issue's link scenarios in the simulator
# with chunk sizes 4-64 KiB and prints one row per (scenario, chunk size).
# Usage: bench/chunk-size.sh            (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p braid-cli
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for s in three-links eight-mixed fast-slow failover; do
  for c in 4KiB 8KiB 16KiB 32KiB 64KiB; do
    f="$tmp/$s-$c.toml"
    # Insert chunk_size into [engine] (adding the table if the scenario has none) and tag the name.
    if grep -q '^\[engine\]' "scenarios/$s.toml"; then
      sed "s/^\[engine\]/[engine]\nchunk_size = \"$c\"/" "scenarios/$s.toml" > "$f"
    else
      { cat "scenarios/$s.toml"; printf '\n[engine]\nchunk_size = "%s"\n' "$c"; } > "$f"
    fi
    sed -i "0,/^name = \"\([^\"]*\)\"/s//name = \"\1-$c\"/" "$f"
    ./target/release/braid sim "$f" | sed -n 2p
  done
done
