#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each. Needs cargo-fuzz; the stable
# toolchain works with RUSTC_BOOTSTRAP=1 (libFuzzer needs -Z sanitizer flags).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in receiver_rw1 receiver_rw2 wal_record exposition; do
  mkdir -p "corpus/$t"
  echo "== $t (${SECONDS_EACH}s)"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1 | tail -3
done
