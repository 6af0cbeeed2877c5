#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each. Needs cargo-fuzz; the stable
# toolchain works with RUSTC_BOOTSTRAP=1 (libFuzzer needs -Z sanitizer flags).
# A finding stops the run and prints the panic and the input saved under artifacts/.
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in receiver_rw1 receiver_rw2 wal_record exposition; do
  mkdir -p "corpus/$t"
  echo "== $t (${SECONDS_EACH}s)"
  log="$(mktemp)"
  if cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 >"$log" 2>&1; then
    grep -E "^Done [0-9]+ runs" "$log" || tail -2 "$log"
  else
    echo "FINDING in $t:"
    grep -E "panicked at|ERROR: |SUMMARY" "$log" | head -5
    grep -E "Test unit written to" "$log" | head -1
    exit 1
  fi
done
