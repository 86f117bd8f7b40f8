#!/usr/bin/env bash
# Chooses the engine's default chunk size: runs the issue's link scenarios in the simulator
# with fixed chunk sizes 4-64 KiB (chunk_size = max_chunk_size) and with the default (16 KiB
# growing to 64 KiB on fast links, "adaptive"), one row per (scenario, chunk size).
# Usage: bench/chunk-size.sh            (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p braid-cli
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for s in three-links eight-mixed fast-slow failover; do
  for c in 4KiB 8KiB 16KiB 32KiB 64KiB adaptive; do
    f="$tmp/$s-$c.toml"
    # Insert the chunk sizes into [engine] (adding the table if the scenario has none) and tag
    # the name.
    if [ "$c" = adaptive ]; then
      cp "scenarios/$s.toml" "$f"
    elif grep -q '^\[engine\]' "scenarios/$s.toml"; then
      sed "s/^\[engine\]/[engine]\nchunk_size = \"$c\"\nmax_chunk_size = \"$c\"/" "scenarios/$s.toml" > "$f"
    else
      { cat "scenarios/$s.toml"; printf '\n[engine]\nchunk_size = "%s"\nmax_chunk_size = "%s"\n' "$c" "$c"; } > "$f"
    fi
    sed -i "0,/^name = \"\([^\"]*\)\"/s//name = \"\1-$c\"/" "$f"
    ./target/release/braid sim "$f" | sed -n 2p
  done
done
